package ratelimit

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/steady-go/steady/internal/ascii"
	"github.com/steady-go/steady/internal/headertest"
)

// fuzzNow and fuzzHeader are the fuzz targets' clock and header reader,
// shared with steady's (headertest).
var (
	fuzzNow    = headertest.Now
	fuzzHeader = headertest.Fuzz
)

// headerSeeds are the reference's examples, one header set per seed.
var headerSeeds = []string{
	"X-Ratelimit-Limit-Requests: 60\nX-Ratelimit-Limit-Tokens: 150000\nX-Ratelimit-Remaining-Requests: 59\nX-Ratelimit-Remaining-Tokens: 149984\nX-Ratelimit-Reset-Requests: 1s\nX-Ratelimit-Reset-Tokens: 6m0s",
	"x-ratelimit-reset-requests: 20ms\nx-ratelimit-reset-tokens: 2m59.56s\nretry-after-ms: 250.5\nx-should-retry: true",
	"~x-ratelimit-limit-tokens_usage_based: 90000\n~x-ratelimit-remaining-tokens_usage_based: 1\n~x-ratelimit-reset-tokens_usage_based: 7m12s",
	"X-RateLimit-Limit-Requests: 60\nX-RateLimit-Remaining-Requests: 0\nX-RateLimit-Reset-Requests: 1755780042\nDate: Thu, 21 Aug 2025 12:40:00 GMT\nRetry-After: 42",
	"X-RateLimit-Reset-Requests: 51s\nX-RateLimit-Reset-Tokens: 51s",
	"x-ratelimit-limit-requests: -1\nx-ratelimit-remaining-requests: 59\nx-ratelimit-reset-requests: 0\nretry-after: 6\nx-ms-retry-after-ms: 6000",
	"anthropic-ratelimit-requests-limit: 50\nanthropic-ratelimit-requests-remaining: 49\nanthropic-ratelimit-requests-reset: 2025-08-21T12:40:59Z\nanthropic-ratelimit-input-tokens-reset: 2025-08-21T12:40:30.5+02:00",
	"X-Ratelimit-Reset-Requests: 2m59.56s\nX-Ratelimit-Reset-Tokens: 7.66s\nRetry-After: 2",
	"x-ratelimit-limit-requests-day: 14400\nx-ratelimit-limit-tokens-minute: 60000\nx-ratelimit-reset-requests-day: 33011.38\nx-ratelimit-reset-tokens-minute: 11.38",
	"x-ratelimit-limit: 10\nx-ratelimit-remaining: 9\nx-ratelimit-reset: 1\nx-tokenlimit-limit: 2000\nx-tokenlimit-remaining: 1500",
	"X-RateLimit-Limit: 20\nX-RateLimit-Remaining: 0\nX-RateLimit-Reset: 1768348800000\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT",
	"x-ratelimit-limit: 5000\nx-ratelimit-remaining: 4987\nx-ratelimit-reset: 1755781800",
	"RateLimit-Policy: \"burst\";q=100;w=60, \"daily\";q=1000;w=86400\nRateLimit: \"burst\";r=50;t=30\nRateLimit: \"daily\";r=900;t=3600",
	"~ratelimit-policy: \"tpm\";q=90000;w=60;qu=\"tokens\";pk=:cHJvamVjdDEyMw==:\nRateLimit: tpm;r=0;t=12, \"a\\\"b\";r=1",
	"RateLimit-Limit: 100, 100;w=60\nRateLimit-Remaining: 42\nRateLimit-Reset: 17",
	"RateLimit: limit=100, remaining=50, reset=30\nRateLimit-Policy: 100;w=60",
	"Retry-After: Sunday, 06-Nov-94 08:49:37 GMT\nDate: Sun Nov  6 08:49:37 1994",
	"X-Ratelimit-Reset-Requests: NaN\nX-Ratelimit-Limit-Requests: 1e400\nRetry-After: -5\nretry-after-ms: Inf",
}

func FuzzParse(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		h := fuzzHeader(data)
		rl := Parse(h, fuzzNow)
		checkRateLimits(t, rl)
		// A Scan reads the same, and hands over every header with a value.
		var sc Scan
		others, want := 0, 0
		for _, vv := range h {
			if len(vv) > 0 {
				want++
			}
		}
		sc.Read(h, func(name string, vv []string) {
			if len(vv) == 0 || len(h[name]) != len(vv) {
				t.Fatalf("other(%q, %q)", name, vv)
			}
			others++
		})
		if others != want {
			t.Fatalf("other called %d times for %d headers with values", others, want)
		}
		if d, ok := sc.RetryAfter(fuzzNow); d != rl.RetryAfter || ok != rl.HasRetryAfter {
			t.Fatalf("Scan.RetryAfter %v %v, Parse %v %v", d, ok, rl.RetryAfter, rl.HasRetryAfter)
		}
		if len(h) > maxSlots {
			return // which windows beyond maxSlots are kept depends on map order
		}
		if got := sc.Append(make([]Window, 0, 32), fuzzNow); !reflect.DeepEqual(got.Windows, Append(make([]Window, 0, 32), h, fuzzNow).Windows) {
			t.Fatalf("Scan.Append differs:\n%+v\n%+v", got, rl)
		}
		// The same again into a caller's buffer, and in any map order.
		buf := make([]Window, 0, 32)
		again := Append(buf, h, fuzzNow)
		if len(rl.Windows) == 0 {
			rl.Windows = again.Windows[:0]
		}
		if !reflect.DeepEqual(rl, again) {
			t.Fatalf("Append differs:\n%+v\n%+v", rl, again)
		}
	})
}

func checkRateLimits(t *testing.T, rl Limits) {
	t.Helper()
	if rl.RetryAfter < 0 || rl.RetryAfter > MaxHint || (!rl.HasRetryAfter && rl.RetryAfter != 0) {
		t.Fatalf("retry after %v (%v)", rl.RetryAfter, rl.HasRetryAfter)
	}
	if len(rl.Windows) > maxSlots+maxIETF {
		t.Fatalf("%d windows", len(rl.Windows))
	}
	for _, w := range rl.Windows {
		if w.Unit < UnitRequests || w.Unit > UnitOutputTokens {
			t.Fatalf("unit %d", w.Unit)
		}
		if w.Limit < -1 || w.Remaining < -1 || w.Limit > maxCount || w.Remaining > maxCount {
			t.Fatalf("counts %+v", w)
		}
		if !w.Reset.IsZero() && (w.Reset.Before(fuzzNow) || w.Reset.After(fuzzNow.Add(MaxHint))) {
			t.Fatalf("reset %v", w.Reset)
		}
		if w.Period < 0 || w.Period > MaxHint {
			t.Fatalf("period %v", w.Period)
		}
		if strings.ContainsFunc(w.Name, func(r rune) bool { return r < 0x20 || r >= 0x7f }) {
			t.Fatalf("name %q", w.Name)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{
		"20", "1.5", "0", "86400", "-5", "NaN", "Inf", "1e9", "99999999999999999999",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"Thu, 21 Aug 2025 12:41:30 GMT", "later", " 7 ",
	} {
		f.Add(uint8(0), s, "")
		f.Add(uint8(1), s, "Thu, 21 Aug 2025 12:35:00 GMT")
		f.Add(uint8(2), s, "")
	}
	names := []string{"Retry-After", "retry-after-ms", "X-Ms-Retry-After-Ms", "retry-after"}
	f.Fuzz(func(t *testing.T, which uint8, value, date string) {
		h := http.Header{names[int(which)%len(names)]: {value}}
		if date != "" {
			h["Date"] = []string{date}
		}
		d, ok := ParseRetryAfter(h, fuzzNow)
		if d < 0 || d > MaxHint || (!ok && d != 0) {
			t.Fatalf("%q: %v, %v", value, d, ok)
		}
		if rl := Parse(h, fuzzNow); rl.RetryAfter != d || rl.HasRetryAfter != ok {
			t.Fatalf("Parse disagrees: %v, %v", rl.RetryAfter, rl.HasRetryAfter)
		}
	})
}

// TestAppendNoAlloc pins that a caller with a buffer parses the
// success path's headers without allocating.
func TestAppendNoAlloc(t *testing.T) {
	h := http.Header{}
	for _, l := range strings.Split(headerSeeds[0], "\n") {
		k, v, _ := strings.Cut(l, ":")
		h.Set(k, strings.TrimSpace(v))
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Request-Id", "req_1")
	buf := make([]Window, 0, 8)
	allocs := testing.AllocsPerRun(100, func() {
		rl := Append(buf[:0], h, fuzzNow)
		if len(rl.Windows) != 2 {
			t.Fatal(rl)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
}

func TestHeaderWords(t *testing.T) {
	for want, name := range map[uint64]string{
		wXRatelimit: "x-ratelimit-", wXTokenlimit: "x-tokenlimit-", wAnthropic: "anthropic-ratelimit-",
		wRatelimit: "ratelimit", wRetryAfter: "retry-after", wXMsRetry: "x-ms-retry-after-ms",
	} {
		if got := ascii.Load64(name, 0); got != want {
			t.Errorf("%s: %#x, want %#x", name, got, want)
		}
	}
}

// BenchmarkAppend is the pacer's form: windows appended into a
// buffer it keeps.
func BenchmarkAppend(b *testing.B) {
	h := headertest.OpenAI()
	buf := make([]Window, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		if rl := Append(buf[:0], h, fuzzNow); len(rl.Windows) != 2 {
			b.Fatal(rl)
		}
	}
}

func FuzzLowerInto(f *testing.F) {
	f.Add("X-Ratelimit-Remaining-Tokens")
	f.Add("Date")
	f.Fuzz(func(t *testing.T, k string) {
		if len(k) > maxKey {
			return
		}
		var buf [maxKey]byte
		want := make([]byte, len(k))
		for i := 0; i < len(k); i++ {
			c := k[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			want[i] = c
		}
		if got := lowerInto(&buf, k); string(got) != string(want) {
			t.Fatalf("%q: %q, want %q", k, got, want)
		}
	})
}
