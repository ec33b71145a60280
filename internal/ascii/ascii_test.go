package ascii

import (
	"hash/fnv"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// FuzzEqualFold holds HasPrefixFold and EqualFold to their contract: case
// folded for ASCII letters only.
func FuzzEqualFold(f *testing.F) {
	f.Add("X-Request-Id", "x-request-id")
	f.Add("X-REQUEST\u017fID", "x-requestsid")
	f.Add("Retry After 6 Seconds", "retry after ")
	f.Fuzz(func(t *testing.T, s, prefix string) {
		prefix = lower(prefix)
		if got, want := HasPrefixFold(s, prefix), strings.HasPrefix(lower(s), prefix); got != want {
			t.Fatalf("HasPrefixFold(%q, %q) = %v, want %v", s, prefix, got, want)
		}
		if got, want := EqualFold(s, prefix), lower(s) == prefix; got != want {
			t.Fatalf("EqualFold(%q, %q) = %v, want %v", s, prefix, got, want)
		}
	})
}

func FuzzLower8(f *testing.F) {
	f.Add("X-RateLi")
	f.Add("@[`{\xc1\xdaAZ")
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) < 8 {
			return
		}
		want := lower(s[:8])
		if got := Lower8(Load64(s, 0)); got != Load64(want, 0) {
			t.Fatalf("%q: %#x, want %q", s, got, want)
		}
	})
}

func TestLoad64(t *testing.T) {
	if got := Load64("..abcdefgh", 2); got != 0x6867666564636261 {
		t.Errorf("%#x", got)
	}
}

func TestKeep(t *testing.T) {
	var v string
	for _, s := range []string{"", "b", "", "c", "a", "b"} {
		Keep(&v, s)
	}
	if v != "a" {
		t.Errorf("kept %q, want the first in order, a", v)
	}
}

func TestTrim(t *testing.T) {
	for in, want := range map[string]string{"": "", " \t x y\t ": "x y", "\n1\n": "\n1\n"} {
		if got := TrimOWS(in); got != want {
			t.Errorf("TrimOWS(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{" 6 seconds": "6", "1.5s": "1.5", "x1": "", "\t12.": "12."} {
		if got := LeadingNumber(in); got != want {
			t.Errorf("LeadingNumber(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseDecimal(t *testing.T) {
	for _, c := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"0", 0, true}, {"42", 42, true}, {"1.25", 1.25, true}, {"12.", 12, true},
		{"123456789012345678901234", 1.2345678901234568e23, true},
		{"0.0000000000000000000000001", 1e-25, true},
		{"", 0, false}, {".5", 0, false}, {"-1", 0, false}, {"1e3", 0, false},
		{"1.2.3", 0, false}, {"NaN", 0, false}, {"Inf", 0, false}, {" 1", 0, false},
		{strings.Repeat("1", 33), 0, false},
	} {
		got, ok := ParseDecimal(c.in)
		if ok != c.ok || ok && math.Abs(got-c.want) > 1e-9*c.want {
			t.Errorf("ParseDecimal(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestDurations(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1s", time.Second, true}, {"6m0s", 6 * time.Minute, true}, {"20ms", 20 * time.Millisecond, true},
		{"2m59.56s", 2*time.Minute + 59560*time.Millisecond, true},
		{"1h2m3.5s", time.Hour + 2*time.Minute + 3500*time.Millisecond, true},
		{"7us", 7 * time.Microsecond, true}, {"7µs", 7 * time.Microsecond, true}, {"3ns", 3, true},
		{"100000h", MaxHint, true},
		{"", 0, false}, {"-1s", 0, false}, {"1", 0, false}, {"1d", 0, false}, {"s", 0, false},
		{strings.Repeat("1s", 33), 0, false},
	} {
		got, ok := ParseGoDuration(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseGoDuration(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	for sec, want := range map[float64]time.Duration{-1: 0, math.NaN(): 0, 0: 0, 1.5: 1500 * time.Millisecond, 1e-9: 1, math.Inf(1): MaxHint, 1e12: MaxHint} {
		if got := SecondsDuration(sec); got != want {
			t.Errorf("SecondsDuration(%v) = %v, want %v", sec, got, want)
		}
	}
	for d, want := range map[time.Duration]time.Duration{-1: 0, 5: 5, MaxHint + 1: MaxHint} {
		if got := ClampHint(d); got != want {
			t.Errorf("ClampHint(%v) = %v, want %v", d, got, want)
		}
	}
}

func fnv64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func TestBoundName(t *testing.T) {
	for _, name := range []string{"", "gpt-4o-mini", strings.Repeat("m", MaxName), "modèle"} {
		if got := BoundName(name); got != name {
			t.Errorf("BoundName(%q) = %q, want it unchanged", name, got)
		}
	}
	long := strings.Repeat("a", 100)
	a, b := BoundName(long), BoundName(long+"b")
	if len(a) != MaxName || a == b || !strings.HasPrefix(a, strings.Repeat("a", 47)+"~") {
		t.Errorf("long names bounded as %q and %q", a, b)
	}
	for _, name := range []string{long, "a\x00b", "a\xffb", strings.Repeat("é", 40), "x\x7f"} {
		got := BoundName(name)
		if len(got) > MaxName || !Printable(got) || len(got) < 17 || got[len(got)-17] != '~' {
			t.Errorf("BoundName(%q) = %q", name, got)
		}
		if want := BoundHashed(name[:min(len(name), MaxName)], len(name), fnv64(name)); got != want {
			t.Errorf("BoundName(%q) = %q, BoundHashed %q", name, got, want)
		}
	}
	if got := BoundName(strings.Repeat("é", 40)); !utf8.ValidString(got) || !strings.HasPrefix(got, strings.Repeat("é", 23)+"~") {
		t.Errorf("a long name of two-byte runes bounded as %q", got)
	}
}

func FuzzBoundName(f *testing.F) {
	f.Add("gpt-4o-mini")
	f.Add(strings.Repeat("é", 40) + "\x00")
	f.Fuzz(func(t *testing.T, name string) {
		got := BoundName(name)
		if len(got) > MaxName || !Printable(got) {
			t.Fatalf("BoundName(%q) = %q", name, got)
		}
		if (got == name) != (len(name) <= MaxName && Printable(name)) {
			t.Fatalf("BoundName(%q) = %q", name, got)
		}
	})
}
