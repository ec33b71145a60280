package steady

import (
	"math"
	"time"

	"github.com/steady-go/steady/ratelimit"
)

// The ASCII text helpers classification reads headers, error bodies and
// messages with. They are copies of package ratelimit's own, which imports
// nothing but the standard library and so shares none of its internals;
// FuzzClassifyBody and FuzzEqualFold hold these to the same contract.

// maxHint bounds every wait read from a server, as ratelimit.MaxHint bounds
// the waits and resets of rate-limit headers.
const maxHint = ratelimit.MaxHint

// keep stores v in *dst unless *dst holds a value already that sorts
// first. A header map built by hand may hold one name under several
// spellings; whichever order the map yields them in, the same value wins.
func keep(dst *string, v string) {
	if v == "" {
		return
	}
	if *dst == "" || v < *dst {
		*dst = v
	}
}

// hasPrefixFold reports whether s begins with prefix, ignoring ASCII case;
// prefix is lower case. It compares eight bytes at a time.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	i := 0
	for ; i+8 <= len(prefix); i += 8 {
		if lower8(load64(s, i)) != load64(prefix, i) {
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

// load64 reads s[i:i+8] as a little-endian word.
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// lower8 lower-cases the ASCII capital letters among the eight bytes of x.
func lower8(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	h := x &^ highs
	ge := h + (0x80-'A')*ones // high bit set where the byte is >= 'A'
	gt := h + (0x80-'Z'-1)*ones
	upper := ge &^ gt &^ x & highs
	return x | upper>>2
}

// equalFold reports whether s equals lower, ignoring ASCII case; lower is
// lower case.
func equalFold(s, lower string) bool {
	return len(s) == len(lower) && hasPrefixFold(s, lower)
}

// trimOWS removes the spaces and tabs around v.
func trimOWS(v string) string {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// leadingNumber returns the digits and dots that v begins with, after
// spaces.
func leadingNumber(v string) string {
	v = trimOWS(v)
	i := 0
	for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] == '.') {
		i++
	}
	return v[:i]
}

// parseDecimal reads a non-negative decimal number: digits, optionally a
// dot and more digits. No sign, exponent, NaN or Inf; at most 32 bytes.
func parseDecimal(s string) (float64, bool) {
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

// secondsDuration converts seconds to a Duration clamped to [0, maxHint];
// NaN reads as 0.
func secondsDuration(sec float64) time.Duration {
	if !(sec > 0) {
		return 0
	}
	if sec >= maxHint.Seconds() {
		return maxHint
	}
	return time.Duration(sec*1e9 + 0.5)
}

// clampHint clamps d to [0, maxHint].
func clampHint(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	if d > maxHint {
		return maxHint
	}
	return d
}

// parseGoDuration reads a duration the way Go prints them ("1s", "6m0s",
// "20ms", "2m59.56s", "1h2m3.5s"), without a sign. It is clamped to
// maxHint.
func parseGoDuration(s string) (time.Duration, bool) {
	if s == "" || len(s) > 64 {
		return 0, false
	}
	var total float64 // seconds
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
			i++
		}
		n, ok := parseDecimal(s[:i])
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
	return secondsDuration(total), true
}
