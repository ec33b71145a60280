package ratelimit_test

import (
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady/internal/headertest"
	"github.com/steady-go/steady/ratelimit"
)

// now is the client's clock in these tests.
var now = time.Date(2025, 8, 21, 12, 40, 0, 0, time.UTC)

// hdr builds a header from "Name: value" lines, keeping each name exactly
// as written (headertest.Lines).
var hdr = headertest.Lines

func httpDate(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

func win(u ratelimit.Unit, name string, limit, remaining int64, reset time.Duration, period time.Duration) ratelimit.Window {
	w := ratelimit.Window{Unit: u, Name: name, Limit: limit, Remaining: remaining, Period: period}
	if reset >= 0 {
		w.Reset = now.Add(reset)
	}
	return w
}

const noReset = -1

func TestParseDialects(t *testing.T) {
	req, tok := ratelimit.UnitRequests, ratelimit.UnitTokens
	in, out := ratelimit.UnitInputTokens, ratelimit.UnitOutputTokens
	epoch := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	epochMs := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).UnixMilli(), 10) }
	tests := []struct {
		name string
		h    http.Header
		want []ratelimit.Window
	}{
		{"openai", hdr(
			"X-Ratelimit-Limit-Requests: 60",
			"X-Ratelimit-Limit-Tokens: 150000",
			"X-Ratelimit-Remaining-Requests: 59",
			"X-Ratelimit-Remaining-Tokens: 149984",
			"X-Ratelimit-Reset-Requests: 1s",
			"X-Ratelimit-Reset-Tokens: 6m0s",
		), []ratelimit.Window{
			win(req, "", 60, 59, time.Second, 0),
			win(tok, "", 150000, 149984, 6*time.Minute, 0),
		}},
		{"openai small and fractional durations", hdr(
			"x-ratelimit-limit-requests: 5000",
			"x-ratelimit-remaining-requests: 4999",
			"x-ratelimit-reset-requests: 20ms",
			"x-ratelimit-limit-tokens: 800000",
			"x-ratelimit-remaining-tokens: 700000",
			"x-ratelimit-reset-tokens: 2m59.56s",
		), []ratelimit.Window{
			win(req, "", 5000, 4999, 20*time.Millisecond, 0),
			win(tok, "", 800000, 700000, 2*time.Minute+59560*time.Millisecond, 0),
		}},
		{"openai tokens_usage_based", hdr(
			"x-ratelimit-limit-tokens: 30000",
			"x-ratelimit-remaining-tokens: 29000",
			"x-ratelimit-reset-tokens: 7m12s",
			"x-ratelimit-limit-tokens_usage_based: 90000",
			"x-ratelimit-remaining-tokens_usage_based: 89000",
			"x-ratelimit-reset-tokens_usage_based: 1h2m3s",
		), []ratelimit.Window{
			win(tok, "", 30000, 29000, 7*time.Minute+12*time.Second, 0),
			win(tok, "usage_based", 90000, 89000, time.Hour+2*time.Minute+3*time.Second, 0),
		}},
		{"heroku unix timestamp", hdr(
			"X-Ratelimit-Limit-Requests: 60",
			"X-Ratelimit-Remaining-Requests: 0",
			"X-Ratelimit-Reset-Requests: "+epoch(42*time.Second),
			"Date: "+httpDate(now),
		), []ratelimit.Window{win(req, "", 60, 0, 42*time.Second, 0)}},
		{"heroku duration", hdr(
			"X-RateLimit-Limit-Requests: 60",
			"X-RateLimit-Remaining-Requests: 12",
			"X-RateLimit-Reset-Requests: 51s",
			"X-RateLimit-Limit-Tokens: 400000",
			"X-RateLimit-Remaining-Tokens: 1234",
			"X-RateLimit-Reset-Tokens: 51s",
		), []ratelimit.Window{
			win(req, "", 60, 12, 51*time.Second, 0),
			win(tok, "", 400000, 1234, 51*time.Second, 0),
		}},
		{"azure sentinels", hdr(
			"x-ratelimit-limit-requests: -1",
			"x-ratelimit-remaining-requests: 59",
			"x-ratelimit-reset-requests: 0",
			"x-ratelimit-remaining-tokens: 59000",
		), []ratelimit.Window{
			win(req, "", -1, 59, noReset, 0),
			win(tok, "", -1, 59000, noReset, 0),
		}},
		{"anthropic", hdr(
			"anthropic-ratelimit-requests-limit: 50",
			"anthropic-ratelimit-requests-remaining: 49",
			"anthropic-ratelimit-requests-reset: 2025-08-21T12:40:01Z",
			"anthropic-ratelimit-tokens-limit: 90000",
			"anthropic-ratelimit-tokens-remaining: 89000",
			"anthropic-ratelimit-tokens-reset: 2025-08-21T12:40:59Z",
			"anthropic-ratelimit-input-tokens-limit: 40000",
			"anthropic-ratelimit-input-tokens-remaining: 39000",
			"anthropic-ratelimit-input-tokens-reset: 2025-08-21T12:40:30.5Z",
			"anthropic-ratelimit-output-tokens-limit: 8000",
			"anthropic-ratelimit-output-tokens-remaining: 8000",
			"anthropic-ratelimit-output-tokens-reset: 2025-08-21T14:40:59+02:00",
			"request-id: req_011CV",
		), []ratelimit.Window{
			win(req, "", 50, 49, time.Second, 0),
			win(tok, "", 90000, 89000, 59*time.Second, 0),
			win(in, "", 40000, 39000, 30500*time.Millisecond, 0),
			win(out, "", 8000, 8000, 59*time.Second, 0),
		}},
		{"groq", hdr(
			"X-Ratelimit-Limit-Requests: 14400",
			"X-Ratelimit-Limit-Tokens: 18000",
			"X-Ratelimit-Remaining-Requests: 14370",
			"X-Ratelimit-Remaining-Tokens: 17997",
			"X-Ratelimit-Reset-Requests: 2m59.56s",
			"X-Ratelimit-Reset-Tokens: 7.66s",
			"Retry-After: 2",
		), []ratelimit.Window{
			win(req, "", 14400, 14370, 2*time.Minute+59560*time.Millisecond, 0),
			win(tok, "", 18000, 17997, 7660*time.Millisecond, 0),
		}},
		{"cerebras", hdr(
			"x-ratelimit-limit-requests-day: 14400",
			"x-ratelimit-limit-tokens-minute: 60000",
			"x-ratelimit-remaining-requests-day: 14399",
			"x-ratelimit-remaining-tokens-minute: 59000",
			"x-ratelimit-reset-requests-day: 33011.38",
			"x-ratelimit-reset-tokens-minute: 11.38",
		), []ratelimit.Window{
			win(req, "day", 14400, 14399, 33011380*time.Millisecond, 24*time.Hour),
			win(tok, "minute", 60000, 59000, 11380*time.Millisecond, time.Minute),
		}},
		{"together", hdr(
			"x-ratelimit-limit: 10",
			"x-ratelimit-remaining: 9",
			"x-ratelimit-reset: 1",
			"x-tokenlimit-limit: 2000",
			"x-tokenlimit-remaining: 1500",
		), []ratelimit.Window{
			win(req, "", 10, 9, time.Second, time.Second),
			win(tok, "", 2000, 1500, noReset, time.Second),
		}},
		{"openrouter epoch ms", hdr(
			"X-RateLimit-Limit: 20",
			"X-RateLimit-Remaining: 0",
			"X-RateLimit-Reset: "+epochMs(90*time.Second),
		), []ratelimit.Window{win(req, "", 20, 0, 90*time.Second, 0)}},
		{"github epoch seconds", hdr(
			"x-ratelimit-limit: 5000",
			"x-ratelimit-remaining: 4987",
			"x-ratelimit-reset: "+epoch(30*time.Minute),
			"x-ratelimit-used: 13",
			"x-ratelimit-resource: core",
		), []ratelimit.Window{win(req, "", 5000, 4987, 30*time.Minute, 0)}},
		{"ietf policies", hdr(
			`RateLimit-Policy: "burst";q=100;w=60, "daily";q=1000;w=86400`,
			`RateLimit: "burst";r=50;t=30`,
			`RateLimit: "daily";r=900;t=3600`,
		), []ratelimit.Window{
			win(req, "burst", 100, 50, 30*time.Second, time.Minute),
			win(req, "daily", 1000, 900, time.Hour, 24*time.Hour),
		}},
		{"ietf split lines, units, unknown policy", hdr(
			`ratelimit-policy: "tpm";q=90000;w=60;qu="tokens"`,
			`ratelimit-policy: "bytes";q=1000;qu="content-bytes", "rpm";q=60;w=60`,
			`ratelimit: "rpm";r=0;t=12, "tpm";r=45000, "other";r=3;t=1`,
		), []ratelimit.Window{
			win(tok, "tpm", 90000, 45000, noReset, time.Minute),
			win(req, "rpm", 60, 0, 12*time.Second, time.Minute),
			win(req, "other", -1, 3, time.Second, 0),
		}},
		{"ietf older draft", hdr(
			"RateLimit-Limit: 100, 100;w=60",
			"RateLimit-Remaining: 42",
			"RateLimit-Reset: 17",
		), []ratelimit.Window{win(req, "", 100, 42, 17*time.Second, time.Minute)}},
		{"ietf dictionary draft", hdr(
			"RateLimit: limit=100, remaining=50, reset=30",
		), []ratelimit.Window{win(req, "", 100, 50, 30*time.Second, 0)}},
		{"nothing", hdr("Content-Type: application/json", "X-Request-Id: abc"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ratelimit.Parse(tt.h, now)
			if !reflect.DeepEqual(got.Windows, tt.want) {
				t.Errorf("windows:\n got %+v\nwant %+v", got.Windows, tt.want)
			}
		})
	}
}

func TestParseCaseInsensitive(t *testing.T) {
	lines := []string{
		"x-ratelimit-limit-requests: 60",
		"x-ratelimit-remaining-requests: 7",
		"x-ratelimit-reset-requests: 10s",
		"anthropic-ratelimit-tokens-remaining: 100",
		`ratelimit-policy: "a";q=5`,
		"retry-after: 3",
	}
	canon := http.Header{}
	upper := http.Header{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ":")
		canon.Add(k, strings.TrimSpace(v))
		upper[strings.ToUpper(k)] = []string{strings.TrimSpace(v)}
	}
	lower := hdr(lines...)
	want := ratelimit.Parse(lower, now)
	if len(want.Windows) != 3 || !want.HasRetryAfter || want.RetryAfter != 3*time.Second {
		t.Fatalf("lower-case keys: %+v", want)
	}
	for name, h := range map[string]http.Header{"canonical": canon, "upper": upper} {
		if got := ratelimit.Parse(h, now); !reflect.DeepEqual(got, want) {
			t.Errorf("%s keys:\n got %+v\nwant %+v", name, got, want)
		}
	}
}

func TestParseDateSkew(t *testing.T) {
	// The server's clock is 5 minutes behind the client's. An absolute reset
	// 30 s after the server's Date is 30 s from the client's now.
	server := now.Add(-5 * time.Minute)
	for _, tt := range []struct{ name, key, val string }{
		{"epoch seconds", "X-Ratelimit-Reset-Requests", strconv.FormatInt(server.Add(30*time.Second).Unix(), 10)},
		{"epoch ms", "X-Ratelimit-Reset", strconv.FormatInt(server.Add(30*time.Second).UnixMilli(), 10)},
		{"rfc 3339", "Anthropic-Ratelimit-Requests-Reset", server.Add(30 * time.Second).Format(time.RFC3339)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := hdr(tt.key+": "+tt.val, "Date: "+httpDate(server))
			rl := ratelimit.Parse(h, now)
			if len(rl.Windows) != 1 || !rl.Windows[0].Reset.Equal(now.Add(30*time.Second)) {
				t.Fatalf("with Date: %+v", rl.Windows)
			}
			// Without Date the absolute value is read on the client's clock:
			// already past, so the reset is now.
			rl = ratelimit.Parse(hdr(tt.key+": "+tt.val), now)
			if len(rl.Windows) != 1 || !rl.Windows[0].Reset.Equal(now) {
				t.Fatalf("without Date: %+v", rl.Windows)
			}
			// An unreadable Date is as good as none.
			rl = ratelimit.Parse(hdr(tt.key+": "+tt.val, "Date: yesterday"), now)
			if len(rl.Windows) != 1 || !rl.Windows[0].Reset.Equal(now) {
				t.Fatalf("bad Date: %+v", rl.Windows)
			}
		})
	}
	// Relative resets do not depend on Date.
	h := hdr("X-Ratelimit-Reset-Requests: 6m0s", "Date: "+httpDate(server))
	if rl := ratelimit.Parse(h, now); !rl.Windows[0].Reset.Equal(now.Add(6 * time.Minute)) {
		t.Fatalf("duration with skewed Date: %+v", rl.Windows)
	}
}

func TestParseBounds(t *testing.T) {
	for _, v := range []string{
		"NaN", "Inf", "+Inf", "-1", "-5s", "1e400", "0x10", "", " ", "abc", "1..2", "1_000",
		"99999999999999999999999999999999999", "1s2", "5 s", "1µ", "2025-13-45T99:99:99Z",
	} {
		h := hdr("x-ratelimit-limit-requests: "+v, "x-ratelimit-remaining-requests: "+v, "x-ratelimit-reset-requests: "+v)
		rl := ratelimit.Parse(h, now)
		if len(rl.Windows) != 0 {
			t.Errorf("%q: read as %+v", v, rl.Windows)
		}
	}
	// Absurd but readable values are clamped, never overflow.
	for _, v := range []string{"999999999999h", "9223372036854775807", "99999999999999999999", "9999-12-31T23:59:59Z", "1e18"} {
		rl := ratelimit.Parse(hdr("x-ratelimit-reset-requests: "+v), now)
		for _, w := range rl.Windows {
			if w.Reset.Before(now) || w.Reset.After(now.Add((365 * 24 * time.Hour))) {
				t.Errorf("%q: reset %v out of bounds", v, w.Reset)
			}
		}
	}
	// Counts beyond 2^53 read as unknown.
	rl := ratelimit.Parse(hdr("x-ratelimit-limit-requests: 99999999999999999999", "x-ratelimit-remaining-requests: 5"), now)
	if len(rl.Windows) != 1 || rl.Windows[0].Limit != -1 || rl.Windows[0].Remaining != 5 {
		t.Errorf("huge limit: %+v", rl.Windows)
	}
	// Hostile IETF fields end the line at the error and never panic.
	rl = ratelimit.Parse(hdr(`RateLimit-Policy: "a";q=5, "b;q=6`, `RateLimit: "a";r=-1;t=NaN`), now)
	if len(rl.Windows) != 1 || rl.Windows[0].Name != "a" || rl.Windows[0].Limit != 5 || !rl.Windows[0].Reset.IsZero() {
		t.Errorf("hostile ietf: %+v", rl.Windows)
	}
	// Many windows are bounded.
	var lines []string
	for i := range 100 {
		lines = append(lines, fmt.Sprintf("x-ratelimit-limit-requests-w%d: 5", i))
		lines = append(lines, fmt.Sprintf(`RateLimit-Policy: "p%d";q=1`, i))
	}
	if rl := ratelimit.Parse(hdr(lines...), now); len(rl.Windows) > 24 {
		t.Errorf("%d windows", len(rl.Windows))
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{"integer seconds", hdr("Retry-After: 20"), 20 * time.Second, true},
		{"float seconds", hdr("retry-after: 1.5"), 1500 * time.Millisecond, true},
		{"retry-after-ms first", hdr("Retry-After: 20", "retry-after-ms: 250.5"), 250500 * time.Microsecond, true},
		{"x-ms-retry-after-ms", hdr("Retry-After: 20", "x-ms-retry-after-ms: 1200"), 1200 * time.Millisecond, true},
		{"retry-after-ms before x-ms", hdr("Retry-After-Ms: 10", "X-Ms-Retry-After-Ms: 1200"), 10 * time.Millisecond, true},
		{"unreadable ms falls back", hdr("retry-after-ms: soon", "Retry-After: 3"), 3 * time.Second, true},
		{"imf-fixdate", hdr("Retry-After: " + httpDate(now.Add(90*time.Second))), 90 * time.Second, true},
		{"rfc 850", hdr("Retry-After: " + now.Add(2*time.Minute).Format(time.RFC850)), 2 * time.Minute, true},
		{"asctime", hdr("Retry-After: " + now.Add(time.Hour).Format(time.ANSIC)), time.Hour, true},
		{"past date", hdr("Retry-After: " + httpDate(now.Add(-time.Hour))), 0, true},
		{"date against skewed Date", hdr("Retry-After: "+httpDate(now.Add(-time.Hour+10*time.Second)), "Date: "+httpDate(now.Add(-time.Hour))), 10 * time.Second, true},
		{"zero", hdr("Retry-After: 0"), 0, true},
		{"azure daily", hdr("retry-after: 86400"), 24 * time.Hour, true},
		{"huge clamped", hdr("Retry-After: 99999999999999999999"), (365 * 24 * time.Hour), true},
		{"huge ms clamped", hdr("retry-after-ms: 9999999999999999999999"), (365 * 24 * time.Hour), true},
		{"negative", hdr("Retry-After: -5"), 0, false},
		{"nan", hdr("Retry-After: NaN", "retry-after-ms: Inf"), 0, false},
		{"garbage", hdr("Retry-After: later"), 0, false},
		{"none", hdr("Content-Type: text/plain"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := ratelimit.ParseRetryAfter(tt.h, now)
			if d != tt.want || ok != tt.ok {
				t.Errorf("got %v, %v; want %v, %v", d, ok, tt.want, tt.ok)
			}
			rl := ratelimit.Parse(tt.h, now)
			if rl.RetryAfter != tt.want || rl.HasRetryAfter != tt.ok {
				t.Errorf("Parse: got %v, %v; want %v, %v", rl.RetryAfter, rl.HasRetryAfter, tt.want, tt.ok)
			}
		})
	}
}

func TestParseOrderStable(t *testing.T) {
	h := hdr(
		"x-ratelimit-limit-tokens: 1", "x-ratelimit-limit-requests: 2",
		"x-ratelimit-limit-requests-day: 3", "anthropic-ratelimit-requests-limit: 4",
		"x-ratelimit-limit: 5", "x-tokenlimit-limit: 6", "ratelimit-limit: 7",
		`ratelimit-policy: "z";q=8, "a";q=9`,
	)
	first := ratelimit.Parse(h, now)
	var limits []int64
	for _, w := range first.Windows {
		limits = append(limits, w.Limit)
	}
	if want := []int64{2, 3, 1, 4, 5, 6, 7, 8, 9}; !reflect.DeepEqual(limits, want) {
		t.Fatalf("order %v, want %v", limits, want)
	}
	for range 50 {
		if got := ratelimit.Parse(h, now); !reflect.DeepEqual(got, first) {
			t.Fatalf("unstable: %+v", got)
		}
	}
}

func ExampleParse() {
	h := http.Header{}
	h.Set("X-Ratelimit-Limit-Requests", "60")
	h.Set("X-Ratelimit-Remaining-Requests", "0")
	h.Set("X-Ratelimit-Reset-Requests", "6m0s")
	h.Set("X-Ratelimit-Limit-Tokens", "150000")
	h.Set("X-Ratelimit-Remaining-Tokens", "149984")
	h.Set("X-Ratelimit-Reset-Tokens", "20ms")
	h.Set("Retry-After", "2")

	now := time.Date(2025, 8, 21, 12, 40, 0, 0, time.UTC)
	rl := ratelimit.Parse(h, now)
	for _, w := range rl.Windows {
		fmt.Printf("%s: %d of %d left, full again in %v\n", w.Unit, w.Remaining, w.Limit, w.Reset.Sub(now))
	}
	fmt.Println("retry after", rl.RetryAfter)
	// Output:
	// requests: 0 of 60 left, full again in 6m0s
	// tokens: 149984 of 150000 left, full again in 20ms
	// retry after 2s
}

func BenchmarkParse(b *testing.B) {
	h := headertest.OpenAI()
	b.ReportAllocs()
	for b.Loop() {
		rl := ratelimit.Parse(h, now)
		if len(rl.Windows) != 2 {
			b.Fatal(rl)
		}
	}
}

// TestParseEpochNearClock reads Unix-timestamp resets against a
// clock below the fixed 1e9 threshold: a testing/synctest bubble starts in
// the year 2000, where a Heroku reset such as 946684830 must still read as
// thirty seconds ahead, not as thirty years.
func TestParseEpochNearClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := time.Now()
		if clock.Unix() >= 1e9 {
			t.Skipf("bubble clock %v is past the threshold this test is about", clock)
		}
		secs := strconv.FormatInt(clock.Unix()+30, 10)
		millis := strconv.FormatInt(clock.UnixMilli()+30_000, 10)
		for _, tc := range []struct{ name, value string }{
			{"epoch seconds", secs},
			{"epoch milliseconds", millis},
			{"delta seconds", "30"},
		} {
			rl := ratelimit.Parse(hdr(
				"X-RateLimit-Limit-Requests: 60",
				"X-RateLimit-Remaining-Requests: 10",
				"X-RateLimit-Reset-Requests: "+tc.value,
			), clock)
			if len(rl.Windows) != 1 {
				t.Fatalf("%s: got %d windows, want 1", tc.name, len(rl.Windows))
			}
			if got := rl.Windows[0].Reset.Sub(clock); got != 30*time.Second {
				t.Errorf("%s %s: reset in %v, want 30s", tc.name, tc.value, got)
			}
		}
	})
}
