// Package ascii holds the text helpers that steady and package ratelimit
// read headers, error bodies and messages with: ASCII case folding eight
// bytes at a time, trimming, the decimal numbers and durations servers
// write, and names bounded for labels. It imports nothing but the
// standard library, so that ratelimit stays a leaf any program may import.
package ascii

import (
	"hash/fnv"
	"math"
	"time"
	"unicode/utf8"
)

// MaxHint bounds every wait read from a server: SecondsDuration,
// ClampHint and ParseGoDuration clamp to it. It is ratelimit.MaxHint.
const MaxHint = 365 * 24 * time.Hour

// Keep stores v in *dst unless *dst holds a value already that sorts
// first. A header map built by hand may hold one name under several
// spellings; whichever order the map yields them in, the same value wins.
func Keep(dst *string, v string) {
	if v == "" {
		return
	}
	if *dst == "" || v < *dst {
		*dst = v
	}
}

// HasPrefixFold reports whether s begins with prefix, ignoring ASCII case;
// prefix is lower case. It compares eight bytes at a time.
func HasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	i := 0
	for ; i+8 <= len(prefix); i += 8 {
		if Lower8(Load64(s, i)) != Load64(prefix, i) {
			return false
		}
	}
	for ; i < len(prefix); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// Load64 reads s[i:i+8] as a little-endian word.
func Load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// Lower8 lower-cases the ASCII capital letters among the eight bytes of x.
func Lower8(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	h := x &^ highs
	ge := h + (0x80-'A')*ones // high bit set where the byte is >= 'A'
	gt := h + (0x80-'Z'-1)*ones
	upper := ge &^ gt &^ x & highs
	return x | upper>>2
}

// EqualFold reports whether s equals lower, ignoring ASCII case; lower is
// lower case.
func EqualFold(s, lower string) bool {
	return len(s) == len(lower) && HasPrefixFold(s, lower)
}

// TrimOWS removes the spaces and tabs around v.
func TrimOWS(v string) string {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// LeadingNumber returns the digits and dots that v begins with, after
// spaces.
func LeadingNumber(v string) string {
	v = TrimOWS(v)
	i := 0
	for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] == '.') {
		i++
	}
	return v[:i]
}

// ParseDecimal reads a non-negative decimal number: digits, optionally a
// dot and more digits. No sign, exponent, NaN or Inf; at most 32 bytes.
func ParseDecimal(s string) (float64, bool) {
	if s == "" || len(s) > 32 {
		return 0, false
	}
	var mant uint64
	exp := 0
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if mant < 1e18 {
			mant = mant*10 + uint64(s[i]-'0')
		} else {
			exp++
		}
	}
	if i == 0 {
		return 0, false
	}
	if i < len(s) {
		if s[i] != '.' {
			return 0, false
		}
		for i++; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return 0, false
			}
			if mant < 1e18 {
				mant = mant*10 + uint64(s[i]-'0')
				exp--
			}
		}
	}
	v := float64(mant)
	if exp < 0 {
		return v / math.Pow10(-exp), true
	}
	return v * math.Pow10(exp), true
}

// SecondsDuration converts seconds to a Duration clamped to [0, MaxHint];
// NaN reads as 0.
func SecondsDuration(sec float64) time.Duration {
	if !(sec > 0) {
		return 0
	}
	if sec >= MaxHint.Seconds() {
		return MaxHint
	}
	return time.Duration(sec*1e9 + 0.5)
}

// ClampHint clamps d to [0, MaxHint].
func ClampHint(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	if d > MaxHint {
		return MaxHint
	}
	return d
}

// ParseGoDuration reads a duration the way Go prints them ("1s", "6m0s",
// "20ms", "2m59.56s", "1h2m3.5s"), without a sign. It is clamped to
// MaxHint.
func ParseGoDuration(s string) (time.Duration, bool) {
	if s == "" || len(s) > 64 {
		return 0, false
	}
	var total float64 // seconds
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
			i++
		}
		n, ok := ParseDecimal(s[:i])
		if !ok {
			return 0, false
		}
		s = s[i:]
		j := 0
		for j < len(s) && !(s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
			j++
		}
		var unit float64
		switch s[:j] {
		case "ns":
			unit = 1e-9
		case "us", "µs", "μs":
			unit = 1e-6
		case "ms":
			unit = 1e-3
		case "s":
			unit = 1
		case "m":
			unit = 60
		case "h":
			unit = 3600
		default:
			return 0, false
		}
		s = s[j:]
		total += n * unit
	}
	return SecondsDuration(total), true
}

// MaxName bounds a name that becomes a label: a model, a partition key, a
// rate-limit window's name.
const MaxName = 64

// Printable reports whether s is valid UTF-8 with no control bytes.
func Printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return utf8.ValidString(s)
}

// BoundName returns name when it is at most MaxName bytes of printable
// UTF-8, else its printable start, "~" and 16 hex digits of its FNV-1a
// hash, MaxName bytes at most in all.
func BoundName(name string) string {
	if len(name) <= MaxName && Printable(name) {
		return name
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return BoundHashed(name[:min(len(name), MaxName)], len(name), h.Sum64())
}

// BoundHashed is BoundName for a name read in a stream, of which only its
// first bytes (at most MaxName), its length total and its FNV-1a hash
// were kept. The name as it is, first itself, is returned when it is at
// most MaxName bytes of printable UTF-8.
func BoundHashed(first string, total int, hash uint64) string {
	if total <= MaxName && Printable(first) {
		return first
	}
	const suffix = 1 + 16
	var out [MaxName]byte
	k := 0
	for _, r := range first {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			continue
		}
		if k+utf8.RuneLen(r) > MaxName-suffix {
			break
		}
		k += utf8.EncodeRune(out[k:], r)
	}
	out[k] = '~'
	k++
	const hex = "0123456789abcdef"
	for i := range 16 {
		out[k+i] = hex[hash>>(60-4*i)&0xf]
	}
	return string(out[:k+16])
}
