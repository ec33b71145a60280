// Package ratelimit reads the rate-limit headers of LLM and other HTTP APIs,
// whatever dialect the provider speaks, into one value: the windows a
// response announces (what each counts, its limit, what remains, when it
// resets) and the server's retry hint.
//
// [Parse] knows OpenAI's and Groq's x-ratelimit-*, Anthropic's
// anthropic-ratelimit-*, Azure's, Cerebras's, Together's, OpenRouter's,
// Heroku's and GitHub's spellings, and the IETF RateLimit-Policy and
// RateLimit fields with their older drafts. [Append] is the same reading
// for a caller that keeps a buffer: on a typical response it does not
// allocate. [ParseRetryAfter] reads only the retry hint. [Scan] keeps one
// pass over the headers, for a caller that reads more of them (a request
// id, its own headers) in the same pass.
//
// The package needs nothing but the standard library (it shares steady's
// internal text helpers, which import only that); steady paces its calls
// with it, and any program may read these headers with it.
package ratelimit

import (
	"encoding/binary"
	"net/http"
	"strings"
	"time"

	"github.com/steady-go/steady/internal/ascii"
)

// Unit is what a rate-limit window counts.
type Unit uint8

const (
	// UnitRequests counts requests.
	UnitRequests Unit = iota + 1
	// UnitTokens counts tokens, input and output together.
	UnitTokens
	// UnitInputTokens counts prompt tokens.
	UnitInputTokens
	// UnitOutputTokens counts completion tokens.
	UnitOutputTokens
)

// String returns "requests", "tokens", "input-tokens" or "output-tokens".
func (u Unit) String() string {
	switch u {
	case UnitRequests:
		return "requests"
	case UnitTokens:
		return "tokens"
	case UnitInputTokens:
		return "input-tokens"
	case UnitOutputTokens:
		return "output-tokens"
	}
	return "unknown"
}

// Window is one rate-limit window announced by a response: what it counts,
// its limit, what remains, and when it resets.
type Window struct {
	// Unit is what the window counts: requests or tokens.
	Unit Unit
	// Name tells windows of one unit apart: "minute", "day", or an IETF
	// policy name. Empty when the dialect names none. OpenAI's
	// x-ratelimit-*-tokens_usage_based window is named "usage_based". An
	// IETF policy's name is the server's to choose: one longer than 64
	// bytes or not printable UTF-8 is bounded to its printable start, "~"
	// and 16 hex digits of its FNV-1a hash, 64 bytes in all.
	Name string
	// Limit is the window's quota; -1 when not announced.
	Limit int64
	// Remaining is what is left of the quota; -1 when not announced.
	Remaining int64
	// Reset is when the quota is fully replenished; zero when unknown.
	Reset time.Time
	// Period is the window's length when the dialect states it; zero when
	// unknown.
	Period time.Duration
}

// Limits is the normalized reading of a response's rate-limit headers,
// whatever dialect the provider speaks.
type Limits struct {
	// Windows lists every window the headers announce, in a stable order:
	// x-ratelimit-* windows, then anthropic-ratelimit-*, the unsuffixed
	// x-ratelimit-limit/-remaining/-reset window, x-tokenlimit-*, the
	// older IETF RateLimit-Limit/-Remaining/-Reset, and last the IETF
	// RateLimit-Policy / RateLimit policies in header order.
	Windows []Window
	// RetryAfter is the server's retry hint (retry-after-ms,
	// x-ms-retry-after-ms or Retry-After), valid when HasRetryAfter.
	RetryAfter time.Duration
	// HasRetryAfter says whether the headers gave a retry hint; a hint of
	// zero means "retry at once".
	HasRetryAfter bool
}

// MaxHint bounds every wait and reset read from a server. A longer
// Retry-After, or a reset further ahead, is clamped to MaxHint: it still
// reads as very long (so that a caller comparing it with its own cap gives
// up), but no arithmetic on it can overflow.
const MaxHint = 365 * 24 * time.Hour

// Parse reads every rate-limit dialect in h: OpenAI and Groq
// (x-ratelimit-{limit,remaining,reset}-{requests,tokens}, Go-style duration
// resets, the -tokens_usage_based variant), Heroku (the same names, reset as
// a duration or a Unix timestamp), Azure (-1 limits and 0 resets read as
// unknown), Anthropic (anthropic-ratelimit-*, RFC 3339 resets), Cerebras
// (-requests-day, -tokens-minute suffixes, float-second resets), Together
// (x-ratelimit-* and x-tokenlimit-*, per second), OpenRouter and GitHub
// (x-ratelimit-reset as epoch milliseconds or seconds), the IETF
// RateLimit-Policy and RateLimit structured fields (several policies,
// matched by name, split over several lines, units by qu) and the older
// drafts' RateLimit-Limit/-Remaining/-Reset and "RateLimit: limit=100,
// remaining=50, reset=30". IETF policies in units other than requests and
// tokens (content-bytes, concurrent-requests) are left out.
//
// A bare number in a reset header reads as epoch milliseconds from 1e12,
// epoch seconds from 1e9, and delta seconds below; a number within about
// four months of the server's clock (in seconds or milliseconds since the
// epoch) reads as an epoch time whatever its size. Relative resets are
// counted from now. Absolute resets are read against the server's clock:
// when the response has a readable Date header more than 2 s away from the
// local clock, a reset is now plus its distance from Date, so a skewed
// client clock does not shift it. A reset
// in the past reads as now; one beyond MaxHint (a year) is clamped.
//
// Header names are matched case-insensitively. A value that cannot be read
// (garbage, negative, NaN) is ignored; a window with no readable value is
// left out. Parse never panics.
func Parse(h http.Header, now time.Time) Limits {
	var s headerScan
	s.scan(h, nil)
	var rl Limits
	if n := s.maxWindows(); n > 0 {
		rl.Windows = make([]Window, 0, n)
	}
	rl.Windows = s.appendWindows(rl.Windows, now)
	rl.RetryAfter, rl.HasRetryAfter = s.retryAfterHint(now)
	if len(rl.Windows) == 0 {
		rl.Windows = nil
	}
	return rl
}

// Append is [Parse] appending the windows to dst, so that a caller that
// keeps a buffer parses without allocating. It appends at most 20 windows
// (maxSlots+maxIETF); the result's Windows is dst with them appended, empty
// rather than nil when there are none.
func Append(dst []Window, h http.Header, now time.Time) Limits {
	var s Scan
	s.s.scan(h, nil)
	return s.Append(dst, now)
}

// ParseRetryAfter reads the server's retry hint from h: retry-after-ms
// (float milliseconds), x-ms-retry-after-ms, then Retry-After as integer
// seconds, float seconds, or an HTTP-date in any of the three formats of
// RFC 9110. An HTTP-date is read against the response's Date header when it
// has one (else against now); a date in the past gives 0. A hint beyond
// MaxHint (a year) is clamped to it. A source that cannot be read is skipped; ok is
// false when no source is readable.
func ParseRetryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	var s headerScan
	s.scan(h, nil)
	return s.retryAfterHint(now)
}

// Scan is one pass over a header map, kept: what [Parse] reads of it, to
// be read as windows and a retry hint at any moment after, and the other
// headers handed to the caller in the same pass, so that a program that
// reads more of a response's headers reads them once. Its zero value has
// read nothing. A Scan holds the header map's strings, not copies.
type Scan struct {
	s headerScan
}

// Read scans h, forgetting what s read before. When other is not nil, it
// is called with every header of h that has a value, as h spells its
// name, in the same pass (in map order: a caller that reads a name under
// several spellings should keep one value whatever the order).
func (s *Scan) Read(h http.Header, other func(name string, vv []string)) {
	s.s = headerScan{}
	s.s.scan(h, other)
}

// Append is [Append] of what s read: the windows appended to dst, and
// the retry hint, against now.
func (s *Scan) Append(dst []Window, now time.Time) Limits {
	rl := Limits{Windows: s.s.appendWindows(dst, now)}
	rl.RetryAfter, rl.HasRetryAfter = s.s.retryAfterHint(now)
	return rl
}

// RetryAfter is [ParseRetryAfter] of what s read, against now.
func (s *Scan) RetryAfter(now time.Time) (d time.Duration, ok bool) {
	return s.s.retryAfterHint(now)
}

// Window families, in output order.
const (
	famXRL        uint8 = iota // x-ratelimit-<field>-<unit>[-<name>]
	famAnthropic               // anthropic-ratelimit-<unit>-<field>
	famBare                    // x-ratelimit-<field>
	famTokenLimit              // x-tokenlimit-<field>
	famIETFOld                 // RateLimit-Limit, -Remaining, -Reset
)

// Fields of a slot.
const (
	fLimit = iota
	fRemaining
	fReset
)

const (
	maxSlots  = 12 // windows read from per-window header names
	maxIETF   = 8  // IETF policies kept
	maxSFLine = 4  // header keys read for one IETF field (spellings)
)

// slot gathers the raw values of one window found by header name.
type slot struct {
	family uint8
	unit   Unit
	has    uint8 // bit i set when vals[i] is
	name   string
	period time.Duration
	vals   [3]string
}

// headerScan holds what one pass over a header map found. It is built on
// the stack; nothing in it is copied out of h.
type headerScan struct {
	slots     [maxSlots]slot
	n         int
	together  bool // x-tokenlimit-* seen: the bare window is per second
	date      string
	dateDone  bool
	dateOK    bool
	dateTime  time.Time
	raMs      string // retry-after-ms
	msRaMs    string // x-ms-retry-after-ms
	ra        string // retry-after
	policy    [maxSFLine][]string
	npolicy   int
	ratelimit [maxSFLine][]string
	nrl       int
}

// maxKey bounds the header names scan reads; no name it knows is longer.
const maxKey = 80

// The first eight bytes of the header names scan reads, lower case, as
// little-endian words (see ascii.Load64).
const (
	wXRatelimit  = 0x696c657461722d78 // "x-rateli"
	wXTokenlimit = 0x6c6e656b6f742d78 // "x-tokenl"
	wAnthropic   = 0x69706f7268746e61 // "anthropi"
	wRatelimit   = 0x696d696c65746172 // "ratelimi"
	wRetryAfter  = 0x66612d7972746572 // "retry-af"
	wXMsRetry    = 0x7465722d736d2d78 // "x-ms-ret"
)

// scan records every header of h that scan knows, in one pass, and hands
// every header with a value to other, when it is not nil. A name whose
// first eight bytes may start one scan knows is lower-cased into a buffer
// on the stack, eight bytes at a time, and then compared byte for byte.
func (s *headerScan) scan(h http.Header, other func(name string, vv []string)) {
	var buf [maxKey]byte
	for k, vv := range h {
		if len(vv) == 0 {
			continue
		}
		if other != nil {
			other(k, vv)
		}
		if len(k) < 4 || len(k) > maxKey {
			continue
		}
		if len(k) == 4 {
			if ascii.EqualFold(k, "date") {
				ascii.Keep(&s.date, vv[0])
			}
			continue
		}
		if len(k) < 8 {
			continue
		}
		// Fast path: OpenAI's names, as net/http or HTTP/2 spell them.
		switch k {
		case "X-Ratelimit-Limit-Requests", "x-ratelimit-limit-requests":
			s.set(famXRL, UnitRequests, "", 0, fLimit, vv[0])
			continue
		case "X-Ratelimit-Remaining-Requests", "x-ratelimit-remaining-requests":
			s.set(famXRL, UnitRequests, "", 0, fRemaining, vv[0])
			continue
		case "X-Ratelimit-Reset-Requests", "x-ratelimit-reset-requests":
			s.set(famXRL, UnitRequests, "", 0, fReset, vv[0])
			continue
		case "X-Ratelimit-Limit-Tokens", "x-ratelimit-limit-tokens":
			s.set(famXRL, UnitTokens, "", 0, fLimit, vv[0])
			continue
		case "X-Ratelimit-Remaining-Tokens", "x-ratelimit-remaining-tokens":
			s.set(famXRL, UnitTokens, "", 0, fRemaining, vv[0])
			continue
		case "X-Ratelimit-Reset-Tokens", "x-ratelimit-reset-tokens":
			s.set(famXRL, UnitTokens, "", 0, fReset, vv[0])
			continue
		}
		switch ascii.Lower8(ascii.Load64(k, 0)) {
		case wXRatelimit, wAnthropic, wXTokenlimit, wRatelimit, wRetryAfter, wXMsRetry:
		default:
			continue // most headers stop here
		}
		lk := lowerInto(&buf, k)
		switch {
		case hasPrefixB(lk, "x-ratelimit-"):
			s.xratelimit(lk[len("x-ratelimit-"):], vv[0])
		case hasPrefixB(lk, "anthropic-ratelimit-"):
			s.anthropic(lk[len("anthropic-ratelimit-"):], vv[0])
		case hasPrefixB(lk, "x-tokenlimit-"):
			if f := fieldOf(lk[len("x-tokenlimit-"):]); f >= 0 {
				s.together = true
				s.set(famTokenLimit, UnitTokens, "", time.Second, f, vv[0])
			}
		case hasPrefixB(lk, "ratelimit"):
			s.ietf(lk[len("ratelimit"):], vv)
		case string(lk) == "retry-after":
			ascii.Keep(&s.ra, vv[0])
		case string(lk) == "retry-after-ms":
			ascii.Keep(&s.raMs, vv[0])
		case string(lk) == "x-ms-retry-after-ms":
			ascii.Keep(&s.msRaMs, vv[0])
		}
	}
}

// lowerInto writes k lower-cased (ASCII) into buf and returns that part of
// it; len(k) <= maxKey.
func lowerInto(buf *[maxKey]byte, k string) []byte {
	b := buf[:len(k)]
	if len(k) < 8 {
		for i := 0; i < len(k); i++ {
			c := k[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b[i] = c
		}
		return b
	}
	for i := 0; i+8 <= len(k); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], ascii.Lower8(ascii.Load64(k, i)))
	}
	// The last word overlaps the one before it: no byte-wise tail.
	binary.LittleEndian.PutUint64(b[len(k)-8:], ascii.Lower8(ascii.Load64(k, len(k)-8)))
	return b
}

// hasPrefixB reports whether b begins with p.
func hasPrefixB(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == p
}

// xratelimit reads the lower-cased part of an x-ratelimit-* name after the
// prefix: <field>[-<unit>[-<name>]].
func (s *headerScan) xratelimit(rest []byte, v string) {
	var f int
	switch {
	case hasPrefixB(rest, "limit"):
		f, rest = fLimit, rest[len("limit"):]
	case hasPrefixB(rest, "remaining"):
		f, rest = fRemaining, rest[len("remaining"):]
	case hasPrefixB(rest, "reset"):
		f, rest = fReset, rest[len("reset"):]
	default:
		return
	}
	if len(rest) == 0 {
		s.set(famBare, UnitRequests, "", 0, f, v)
		return
	}
	if rest[0] != '-' {
		return
	}
	rest = rest[1:]
	var u Unit
	name := ""
	switch {
	case hasPrefixB(rest, "requests"):
		u, rest = UnitRequests, rest[len("requests"):]
	case string(rest) == "tokens_usage_based":
		u, name, rest = UnitTokens, "usage_based", nil
	case hasPrefixB(rest, "tokens"):
		u, rest = UnitTokens, rest[len("tokens"):]
	case hasPrefixB(rest, "input-tokens"):
		u, rest = UnitInputTokens, rest[len("input-tokens"):]
	case hasPrefixB(rest, "output-tokens"):
		u, rest = UnitOutputTokens, rest[len("output-tokens"):]
	default:
		return
	}
	var period time.Duration
	if len(rest) > 0 {
		if rest[0] != '-' {
			return
		}
		var ok bool
		if name, period, ok = windowName(rest[1:]); !ok {
			return
		}
	}
	s.set(famXRL, u, name, period, f, v)
}

// anthropic reads the lower-cased part of an anthropic-ratelimit-* name
// after the prefix: <unit>-<field>.
func (s *headerScan) anthropic(rest []byte, v string) {
	var u Unit
	switch {
	case hasPrefixB(rest, "requests-"):
		u, rest = UnitRequests, rest[len("requests-"):]
	case hasPrefixB(rest, "tokens-"):
		u, rest = UnitTokens, rest[len("tokens-"):]
	case hasPrefixB(rest, "input-tokens-"):
		u, rest = UnitInputTokens, rest[len("input-tokens-"):]
	case hasPrefixB(rest, "output-tokens-"):
		u, rest = UnitOutputTokens, rest[len("output-tokens-"):]
	default:
		return
	}
	if f := fieldOf(rest); f >= 0 {
		s.set(famAnthropic, u, "", 0, f, v)
	}
}

// ietf reads RateLimit, RateLimit-Policy and the older draft's
// RateLimit-Limit, -Remaining and -Reset; rest is the lower-cased part of
// the name after "ratelimit".
func (s *headerScan) ietf(rest []byte, vv []string) {
	switch {
	case len(rest) == 0:
		if s.nrl < maxSFLine {
			s.nrl = insertLines(&s.ratelimit, s.nrl, vv)
		}
	case string(rest) == "-policy":
		if s.npolicy < maxSFLine {
			s.npolicy = insertLines(&s.policy, s.npolicy, vv)
		}
	case len(rest) > 1 && rest[0] == '-':
		if f := fieldOf(rest[1:]); f >= 0 {
			v := vv[0]
			var period time.Duration
			if f == fLimit {
				// The older draft allows "100, 100;w=60": the window's
				// length is the w parameter.
				if i := strings.Index(v, "w="); i >= 0 {
					if w, ok := parseCount(ascii.LeadingNumber(v[i+2:])); ok {
						period = ascii.SecondsDuration(float64(w))
					}
				}
				v = ascii.LeadingNumber(v)
			}
			s.set(famIETFOld, UnitRequests, "", period, f, v)
		}
	}
}

// fieldOf maps "limit", "remaining" and "reset" to their field; -1 else.
func fieldOf(b []byte) int {
	switch string(b) {
	case "limit":
		return fLimit
	case "remaining":
		return fRemaining
	case "reset":
		return fReset
	}
	return -1
}

// windowName names a lower-cased window suffix such as Cerebras's "day"
// and gives its period when known. Other names of letters, digits, '-' and
// '_' (at most 32 bytes) are kept as they are, with no period.
func windowName(b []byte) (string, time.Duration, bool) {
	switch string(b) {
	case "second":
		return "second", time.Second, true
	case "minute":
		return "minute", time.Minute, true
	case "hour":
		return "hour", time.Hour, true
	case "day":
		return "day", 24 * time.Hour, true
	case "week":
		return "week", 7 * 24 * time.Hour, true
	case "month":
		return "month", 0, true
	}
	if len(b) == 0 || len(b) > 32 {
		return "", 0, false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", 0, false
		}
	}
	return string(b), 0, true
}

// insertLines adds the lines of one spelling of an IETF field to lines,
// ordered by their first line so that map order does not matter; it
// returns the new count.
func insertLines(lines *[maxSFLine][]string, n int, vv []string) int {
	i := n
	for i > 0 && vv[0] < lines[i-1][0] {
		lines[i] = lines[i-1]
		i--
	}
	lines[i] = vv
	return n + 1
}

// set records value v of field f of the window (fam, u, name). When one
// name comes in several spellings, keep decides; windows beyond maxSlots
// are dropped (which ones then depends on map order).
func (s *headerScan) set(fam uint8, u Unit, name string, period time.Duration, f int, v string) {
	for i := 0; i < s.n; i++ {
		sl := &s.slots[i]
		if sl.family == fam && sl.unit == u && sl.name == name {
			if sl.has&(1<<f) == 0 {
				sl.vals[f] = v
				sl.has |= 1 << f
			} else {
				ascii.Keep(&sl.vals[f], v)
			}
			if period > 0 {
				sl.period = period
			}
			return
		}
	}
	if s.n == maxSlots {
		return
	}
	s.slots[s.n] = slot{family: fam, unit: u, name: name, period: period, has: 1 << f}
	s.slots[s.n].vals[f] = v
	s.n++
}

// maxWindows bounds how many windows appendWindows can produce.
func (s *headerScan) maxWindows() int {
	n := s.n
	if s.npolicy+s.nrl > 0 {
		n += maxIETF
	}
	return n
}

// slotLess orders slots by family, unit and name.
func slotLess(a, b *slot) bool {
	if a.family != b.family {
		return a.family < b.family
	}
	if a.unit != b.unit {
		return a.unit < b.unit
	}
	return a.name < b.name
}

// appendWindows turns what scan found into windows appended to dst.
func (s *headerScan) appendWindows(dst []Window, now time.Time) []Window {
	// Insertion sort: map order is random, the output must not be.
	for i := 1; i < s.n; i++ {
		for j := i; j > 0 && slotLess(&s.slots[j], &s.slots[j-1]); j-- {
			s.slots[j], s.slots[j-1] = s.slots[j-1], s.slots[j]
		}
	}
	for i := 0; i < s.n; i++ {
		sl := &s.slots[i]
		w := Window{Unit: sl.unit, Name: sl.name, Limit: -1, Remaining: -1, Period: sl.period}
		if sl.family == famBare && s.together {
			w.Period = time.Second
		}
		ok := false
		if sl.has&(1<<fLimit) != 0 {
			if v, good := parseCount(sl.vals[fLimit]); good {
				w.Limit, ok = v, true
			}
		}
		if sl.has&(1<<fRemaining) != 0 {
			if v, good := parseCount(sl.vals[fRemaining]); good {
				w.Remaining, ok = v, true
			}
		}
		if sl.has&(1<<fReset) != 0 {
			if t, good := s.resetAt(sl.vals[fReset], now); good {
				w.Reset, ok = t, true
			}
		}
		if ok {
			dst = append(dst, w)
		}
	}
	if s.npolicy+s.nrl > 0 {
		dst = s.appendIETF(dst, now)
	}
	return dst
}

// serverNow is the server's clock at the response: its Date header when
// readable and more than maxSkew away from now, else now.
func (s *headerScan) serverNow(now time.Time) time.Time {
	if !s.dateDone {
		s.dateDone = true
		if s.date != "" {
			if t, err := http.ParseTime(ascii.TrimOWS(s.date)); err == nil {
				s.dateTime, s.dateOK = t, true
			}
		}
	}
	if s.dateOK && (s.dateTime.Sub(now) > maxSkew || now.Sub(s.dateTime) > maxSkew) {
		return s.dateTime
	}
	return now
}

// maxSkew is the clock skew a Date header must show before absolute resets
// are read against it rather than the local clock: Date has whole seconds,
// and reading against it would shift every reset by up to a second.
const maxSkew = 2 * time.Second

// untilAbs gives how long from the server's now the absolute time t is,
// clamped to [0, MaxHint].
func (s *headerScan) untilAbs(t time.Time, now time.Time) time.Duration {
	return ascii.ClampHint(t.Sub(s.serverNow(now)))
}

// untilEpoch is untilAbs for sec seconds since the Unix epoch.
func (s *headerScan) untilEpoch(sec float64, now time.Time) time.Duration {
	ref := s.serverNow(now)
	refSec := float64(ref.Unix()) + float64(ref.Nanosecond())/1e9
	return ascii.SecondsDuration(sec - refSec)
}

// nearEpoch reports whether sec, read as seconds since the Unix epoch,
// lies within about four months of the server's clock. It lets an epoch
// reset be recognized when the clock itself is below the fixed thresholds,
// as in a testing/synctest bubble, whose clock starts in the year 2000.
func (s *headerScan) nearEpoch(sec float64, now time.Time) bool {
	ref := float64(s.serverNow(now).Unix())
	return sec > ref-1e7 && sec < ref+1e7
}

// resetAt reads a reset value: a bare number (epoch ms, epoch s or delta
// seconds, by size), a Go-style duration, an RFC 3339 time or an HTTP-date.
// A bare 0 is Azure's "unknown".
func (s *headerScan) resetAt(v string, now time.Time) (time.Time, bool) {
	v = ascii.TrimOWS(v)
	if v == "" {
		return time.Time{}, false
	}
	if f, ok := ascii.ParseDecimal(v); ok {
		switch {
		case f == 0:
			return time.Time{}, false
		case f >= 1e12 || s.nearEpoch(f/1000, now):
			return now.Add(s.untilEpoch(f/1000, now)), true
		case f >= 1e9 || s.nearEpoch(f, now):
			return now.Add(s.untilEpoch(f, now)), true
		}
		return now.Add(ascii.SecondsDuration(f)), true
	}
	if d, ok := ascii.ParseGoDuration(v); ok {
		return now.Add(d), true
	}
	if t, ok := parseAbsTime(v); ok {
		return now.Add(s.untilAbs(t, now)), true
	}
	return time.Time{}, false
}

// retryAfterHint reads the retry hints scan found, in order of preference.
func (s *headerScan) retryAfterHint(now time.Time) (time.Duration, bool) {
	for _, v := range [2]string{s.raMs, s.msRaMs} {
		if v == "" {
			continue
		}
		if f, ok := ascii.ParseDecimal(ascii.TrimOWS(v)); ok {
			return ascii.SecondsDuration(f / 1000), true
		}
	}
	v := ascii.TrimOWS(s.ra)
	if v == "" {
		return 0, false
	}
	if f, ok := ascii.ParseDecimal(v); ok {
		return ascii.SecondsDuration(f), true
	}
	if len(v) >= 20 && v[0] > '9' { // an HTTP-date starts with a day name
		if t, err := http.ParseTime(v); err == nil {
			return s.untilAbs(t, now), true
		}
	}
	return 0, false
}

// ietfPolicy is one window of the IETF structured fields.
type ietfPolicy struct {
	name      string
	unit      Unit
	limit     int64
	remaining int64
	reset     time.Duration
	hasReset  bool
	period    time.Duration
}

// appendIETF reads RateLimit-Policy, then matches RateLimit items to the
// policies by name.
func (s *headerScan) appendIETF(dst []Window, now time.Time) []Window {
	var pol [maxIETF]ietfPolicy
	n := 0
	var it sfItem
	for i := 0; i < s.npolicy; i++ {
		for _, line := range s.policy[i] {
			l := sfList{s: line}
			for n < maxIETF && l.next(&it) {
				if !it.named {
					continue
				}
				u := unitOfIETF(it.qu)
				if u == 0 || (it.q < 0 && it.w < 0) {
					continue
				}
				p := ietfPolicy{name: it.name, unit: u, limit: clampCount(it.q), remaining: -1}
				if it.w >= 0 {
					p.period = ascii.SecondsDuration(it.w)
				}
				pol[n] = p
				n++
			}
		}
	}
	// find returns the policy named name, adding it when there is room.
	find := func(name string) *ietfPolicy {
		for j := 0; j < n; j++ {
			if pol[j].name == name {
				return &pol[j]
			}
		}
		if n == maxIETF {
			return nil
		}
		pol[n] = ietfPolicy{name: name, unit: UnitRequests, limit: -1, remaining: -1}
		n++
		return &pol[n-1]
	}
	for i := 0; i < s.nrl; i++ {
		for _, line := range s.ratelimit[i] {
			l := sfList{s: line}
			for l.next(&it) {
				if it.member {
					known := ascii.EqualFold(it.name, "limit") || ascii.EqualFold(it.name, "remaining") || ascii.EqualFold(it.name, "reset")
					var p *ietfPolicy
					if known && it.value >= 0 {
						p = find("")
					}
					switch {
					case p == nil:
					case ascii.EqualFold(it.name, "limit") && p.limit < 0:
						p.limit = clampCount(it.value)
					case ascii.EqualFold(it.name, "remaining") && p.remaining < 0:
						p.remaining = clampCount(it.value)
					case ascii.EqualFold(it.name, "reset") && !p.hasReset:
						p.reset, p.hasReset = ascii.SecondsDuration(it.value), true
					}
					continue
				}
				if !it.named || (it.r < 0 && it.t < 0) {
					continue
				}
				p := find(it.name)
				if p == nil {
					continue
				}
				if it.r >= 0 && p.remaining < 0 {
					p.remaining = clampCount(it.r)
				}
				if it.t >= 0 && !p.hasReset {
					p.reset, p.hasReset = ascii.SecondsDuration(it.t), true
				}
			}
		}
	}
	for i := 0; i < n; i++ {
		p := &pol[i]
		// A policy's name is the server's to choose: bounded as model
		// names are, so that no string kept from a response is long.
		w := Window{Unit: p.unit, Name: ascii.BoundName(p.name), Limit: p.limit, Remaining: p.remaining, Period: p.period}
		if p.hasReset {
			w.Reset = now.Add(p.reset)
		}
		dst = append(dst, w)
	}
	return dst
}

// unitOfIETF maps a policy's qu parameter to a Unit; 0 for units this
// package does not read (content-bytes, concurrent-requests).
func unitOfIETF(qu string) Unit {
	switch {
	case qu == "" || ascii.EqualFold(qu, "requests"):
		return UnitRequests
	case ascii.EqualFold(qu, "tokens"):
		return UnitTokens
	case ascii.EqualFold(qu, "input-tokens"):
		return UnitInputTokens
	case ascii.EqualFold(qu, "output-tokens"):
		return UnitOutputTokens
	}
	return 0
}

// sfItem is one item of an IETF structured-field list with the parameters
// this package reads; a parameter absent or unreadable is -1.
type sfItem struct {
	name       string
	named      bool
	q, w, r, t float64
	qu         string
	// member and value: a dictionary member name=value; value is -1
	// when not a non-negative number.
	member bool
	value  float64
}

// sfList walks a structured-field list (RFC 9651) leniently: a parse error
// ends the line, keeping the items read before it.
type sfList struct {
	s   string
	pos int
	bad bool
}

func (l *sfList) ows() {
	for l.pos < len(l.s) && (l.s[l.pos] == ' ' || l.s[l.pos] == '\t') {
		l.pos++
	}
}

// next reads the next item into it.
func (l *sfList) next(it *sfItem) bool {
	if l.bad {
		return false
	}
	l.ows()
	if l.pos >= len(l.s) {
		return false
	}
	*it = sfItem{q: -1, w: -1, r: -1, t: -1, value: -1}
	// The item: a string or a token names a policy; other bare items
	// (numbers of older drafts) are read and left unnamed.
	switch c := l.s[l.pos]; {
	case c == '"':
		name, ok := l.str()
		if !ok {
			l.bad = true
			return false
		}
		it.name, it.named = name, true
	case isAlpha(c) || c == '*':
		it.name, it.named = l.token(), true
		if l.pos < len(l.s) && l.s[l.pos] == '=' {
			// A dictionary member, as in an earlier draft's
			// "RateLimit: limit=100, remaining=50, reset=30".
			l.pos++
			v, ok := l.bareItem()
			if !ok {
				l.bad = true
				return false
			}
			it.named, it.member = false, true
			if f, ok := ascii.ParseDecimal(v); ok {
				it.value = f
			}
		}
	default:
		if _, ok := l.bareItem(); !ok {
			l.bad = true
			return false
		}
	}
	for l.pos < len(l.s) && l.s[l.pos] == ';' {
		l.pos++
		for l.pos < len(l.s) && l.s[l.pos] == ' ' {
			l.pos++
		}
		start := l.pos
		for l.pos < len(l.s) && isKeyChar(l.s[l.pos]) {
			l.pos++
		}
		key := l.s[start:l.pos]
		if key == "" {
			l.bad = true
			return false
		}
		if l.pos >= len(l.s) || l.s[l.pos] != '=' {
			continue // boolean true parameter
		}
		l.pos++
		val, ok := l.bareItem()
		if !ok {
			l.bad = true
			return false
		}
		var dst *float64
		switch {
		case ascii.EqualFold(key, "q"):
			dst = &it.q
		case ascii.EqualFold(key, "w"):
			dst = &it.w
		case ascii.EqualFold(key, "r"):
			dst = &it.r
		case ascii.EqualFold(key, "t"):
			dst = &it.t
		case ascii.EqualFold(key, "qu"):
			it.qu = val
		}
		if dst != nil {
			if f, ok := ascii.ParseDecimal(val); ok {
				*dst = f
			}
		}
	}
	l.ows()
	if l.pos < len(l.s) {
		if l.s[l.pos] != ',' {
			l.bad = true
		}
		l.pos++
	}
	return true
}

// bareItem reads a string, token, number, boolean or byte sequence and
// returns its text (a string's content, unescaped).
func (l *sfList) bareItem() (string, bool) {
	if l.pos >= len(l.s) {
		return "", false
	}
	switch c := l.s[l.pos]; {
	case c == '"':
		return l.str()
	case isAlpha(c) || c == '*':
		return l.token(), true
	case c == '-' || c >= '0' && c <= '9':
		start := l.pos
		l.pos++
		for l.pos < len(l.s) && (l.s[l.pos] >= '0' && l.s[l.pos] <= '9' || l.s[l.pos] == '.') {
			l.pos++
		}
		return l.s[start:l.pos], true
	case c == '?':
		if l.pos+1 < len(l.s) && (l.s[l.pos+1] == '0' || l.s[l.pos+1] == '1') {
			l.pos += 2
			return l.s[l.pos-1 : l.pos], true
		}
	case c == ':':
		end := strings.IndexByte(l.s[l.pos+1:], ':')
		if end >= 0 {
			start := l.pos + 1
			l.pos = start + end + 1
			return l.s[start : start+end], true
		}
	}
	return "", false
}

// str reads a quoted string at l.pos.
func (l *sfList) str() (string, bool) {
	l.pos++ // opening quote
	start := l.pos
	escaped := false
	for l.pos < len(l.s) {
		switch c := l.s[l.pos]; c {
		case '"':
			v := l.s[start:l.pos]
			l.pos++
			if escaped {
				v = unescapeSF(v)
			}
			return v, true
		case '\\':
			if l.pos+1 >= len(l.s) || (l.s[l.pos+1] != '"' && l.s[l.pos+1] != '\\') {
				return "", false
			}
			escaped = true
			l.pos += 2
		default:
			if c < 0x20 || c >= 0x7f {
				return "", false
			}
			l.pos++
		}
	}
	return "", false
}

func unescapeSF(v string) string {
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// token reads a structured-field token at l.pos.
func (l *sfList) token() string {
	start := l.pos
	l.pos++
	for l.pos < len(l.s) && isTokenChar(l.s[l.pos]) {
		l.pos++
	}
	return l.s[start:l.pos]
}

func isAlpha(c byte) bool { c |= 0x20; return c >= 'a' && c <= 'z' }

func isKeyChar(c byte) bool {
	return isAlpha(c) || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*'
}

func isTokenChar(c byte) bool {
	if isAlpha(c) || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~:/", c) >= 0
}

// maxCount bounds a limit or remaining count.
const maxCount = 1 << 53

// parseCount reads a limit or remaining count: a non-negative integer,
// optionally with a fraction that is dropped. Negative values (Azure's -1)
// and values beyond 2^53 read as unknown.
func parseCount(s string) (int64, bool) {
	f, ok := ascii.ParseDecimal(ascii.TrimOWS(s))
	if !ok || f > maxCount {
		return 0, false
	}
	return int64(f), true
}

// clampCount turns a float count from a structured field into an int64.
func clampCount(f float64) int64 {
	if !(f >= 0) {
		return -1
	}
	if f > maxCount {
		return -1
	}
	return int64(f)
}

// parseAbsTime reads an RFC 3339 time or an HTTP-date.
func parseAbsTime(v string) (time.Time, bool) {
	if len(v) >= 20 && v[4] == '-' {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t, true
		}
		return time.Time{}, false
	}
	if len(v) >= 20 && v[0] > '9' {
		if t, err := http.ParseTime(v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
