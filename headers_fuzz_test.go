package steady

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

var fuzzNow = time.Date(2025, 8, 21, 12, 40, 0, 0, time.UTC)

// fuzzHeader reads "Name: value" lines. A line starting with "~" keeps its
// name as written; others are canonicalized, as net/http does.
func fuzzHeader(data string) http.Header {
	h := http.Header{}
	for i, line := range strings.Split(data, "\n") {
		if i == 64 {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if raw, ok := strings.CutPrefix(k, "~"); ok {
			h[raw] = append(h[raw], v)
		} else {
			h.Add(k, v)
		}
	}
	return h
}

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

func FuzzParseRateLimits(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		h := fuzzHeader(data)
		rl := ParseRateLimits(h, fuzzNow)
		checkRateLimits(t, rl)
		if len(h) > maxSlots {
			return // which windows beyond maxSlots are kept depends on map order
		}
		// The same again into a caller's buffer, and in any map order.
		buf := make([]Window, 0, 32)
		again := appendRateLimits(buf, h, fuzzNow)
		if len(rl.Windows) == 0 {
			rl.Windows = again.Windows[:0]
		}
		if !reflect.DeepEqual(rl, again) {
			t.Fatalf("appendRateLimits differs:\n%+v\n%+v", rl, again)
		}
	})
}

func checkRateLimits(t *testing.T, rl RateLimits) {
	t.Helper()
	if rl.RetryAfter < 0 || rl.RetryAfter > maxHint || (!rl.HasRetryAfter && rl.RetryAfter != 0) {
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
		if !w.Reset.IsZero() && (w.Reset.Before(fuzzNow) || w.Reset.After(fuzzNow.Add(maxHint))) {
			t.Fatalf("reset %v", w.Reset)
		}
		if w.Period < 0 || w.Period > maxHint {
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
		if d < 0 || d > maxHint || (!ok && d != 0) {
			t.Fatalf("%q: %v, %v", value, d, ok)
		}
		if rl := ParseRateLimits(h, fuzzNow); rl.RetryAfter != d || rl.HasRetryAfter != ok {
			t.Fatalf("ParseRateLimits disagrees: %v, %v", rl.RetryAfter, rl.HasRetryAfter)
		}
	})
}

func FuzzClassifyBody(f *testing.F) {
	for _, s := range []struct {
		status int
		h      string
		body   string
	}{
		{429, "Retry-After: 12", `{"code": 429, "message": "Rate limit exceeded", "type": "rate_limit_error"}`},
		{400, "", `{"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}}`},
		{400, "", `{"error": {"code": "400", "message": "bad", "type": "invalid_request_error"}}`},
		{429, "x-request-id: req_1", `{"error": {"message": "quota", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}`},
		{429, "apim-request-id: a", `{"error": {"code": "429", "message": "Please retry after 6 seconds."}}`},
		{429, "request-id: r", `{"type": "error", "error": {"type": "rate_limit_error", "message": "slow", "details": {"error_code": "enforced_spend_limit_reached"}}, "request_id": "req_1"}`},
		{529, "", `{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`},
		{402, "", `{"type": "error", "error": {"type": "billing_error", "message": "pay"}}`},
		{429, "", `[{"error": {"code": 429, "message": "exhausted", "status": "RESOURCE_EXHAUSTED", "details": [{"retryDelay": "38s"}]}}]`},
		{429, "", `{"error": {"code": 429, "message": "x", "metadata": {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1768348800000"}}}}`},
		{502, "", "<html><head><title>502 Bad Gateway</title></head></html>"},
		{503, "x-should-retry: false", ""},
		{500, "", "\x00\xff{\"error\":"},
		{429, "", `{"error": {"message": "Please try again in 1m30.5s."}}`},
	} {
		f.Add(s.status, s.h, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, headers string, body []byte) {
		h := fuzzHeader(headers)
		fl := ClassifyBody(status, h, body)
		if fl.Status != status || fl.Reason == "" {
			t.Fatalf("%+v", fl)
		}
		if status < 400 && (fl.Retryable || fl.Reason != "ok") {
			t.Fatalf("%d: %+v", status, fl)
		}
		for _, s := range []string{fl.Message, fl.Type, fl.Code, fl.RequestID} {
			if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("not printable: %q", s)
			}
		}
		if len(fl.Message) > maxMessage || len(fl.RequestID) > maxRequestID || len(fl.Type) > maxRequestID || len(fl.Code) > maxRequestID {
			t.Fatalf("too long: %+v", fl)
		}
		if fl.RetryAfter < 0 || fl.RetryAfter > maxHint {
			t.Fatalf("retry after %v", fl.RetryAfter)
		}
		_ = fl.String()
	})
}

// TestAppendRateLimitsNoAlloc pins that a caller with a buffer parses the
// success path's headers without allocating.
func TestAppendRateLimitsNoAlloc(t *testing.T) {
	h := http.Header{}
	for _, l := range strings.Split(headerSeeds[0], "\n") {
		k, v, _ := strings.Cut(l, ":")
		h.Set(k, strings.TrimSpace(v))
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Request-Id", "req_1")
	buf := make([]Window, 0, 8)
	allocs := testing.AllocsPerRun(100, func() {
		rl := appendRateLimits(buf[:0], h, fuzzNow)
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
		if got := load64(name, 0); got != want {
			t.Errorf("%s: %#x, want %#x", name, got, want)
		}
	}
}

// BenchmarkAppendRateLimits is the pacer's form: windows appended into a
// buffer it keeps.
func BenchmarkAppendRateLimits(b *testing.B) {
	h := http.Header{}
	for _, kv := range [][2]string{
		{"Date", "Thu, 21 Aug 2025 12:40:00 GMT"}, {"Content-Type", "application/json"},
		{"Transfer-Encoding", "chunked"}, {"Connection", "keep-alive"},
		{"Openai-Organization", "user-abc"}, {"Openai-Processing-Ms", "312"},
		{"Openai-Version", "2020-10-01"}, {"X-Request-Id", "req_0123456789abcdef"},
		{"Strict-Transport-Security", "max-age=31536000"}, {"Cf-Ray", "8b1d2e3f4a5b6c7d-AMS"},
		{"X-Ratelimit-Limit-Requests", "5000"}, {"X-Ratelimit-Limit-Tokens", "800000"},
		{"X-Ratelimit-Remaining-Requests", "4999"}, {"X-Ratelimit-Remaining-Tokens", "799985"},
		{"X-Ratelimit-Reset-Requests", "12ms"}, {"X-Ratelimit-Reset-Tokens", "1ms"},
	} {
		h.Set(kv[0], kv[1])
	}
	buf := make([]Window, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		if rl := appendRateLimits(buf[:0], h, fuzzNow); len(rl.Windows) != 2 {
			b.Fatal(rl)
		}
	}
}

func FuzzLower8(f *testing.F) {
	f.Add("X-RateLi")
	f.Add("@[`{\xc1\xdaAZ")
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) < 8 {
			return
		}
		want := []byte(s[:8])
		for i, c := range want {
			if 'A' <= c && c <= 'Z' {
				want[i] = c + 'a' - 'A'
			}
		}
		if got := lower8(load64(s, 0)); got != load64(string(want), 0) {
			t.Fatalf("%q: %#x, want %q", s, got, want)
		}
	})
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

// refErrorFields reads type, code and message the way encoding/json does,
// for comparison with parseErrorBody's own JSON reader.
func refErrorFields(body []byte) (typ, code, msg string, ok bool) {
	type obj struct {
		Type, Code, Message, Status, Error json.RawMessage
	}
	text := func(raw json.RawMessage) string {
		raw = trimSpaceBytes(raw)
		if len(raw) == 0 {
			return ""
		}
		if raw[0] == '"' {
			var s string
			json.Unmarshal(raw, &s)
			return s
		}
		if raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' {
			return string(raw)
		}
		return ""
	}
	var top obj
	if json.Unmarshal(body, &top) != nil {
		return "", "", "", false
	}
	o := &top
	var inner obj
	if e := trimSpaceBytes(top.Error); len(e) > 0 && e[0] == '{' && json.Unmarshal(e, &inner) == nil {
		o = &inner
	} else if len(e) > 0 && e[0] == '"' {
		msg = text(e)
	}
	typ, code = text(o.Type), text(o.Code)
	if m := text(o.Message); m != "" {
		msg = m
	}
	if typ == "" {
		typ = text(o.Status)
	}
	return typ, code, msg, true
}

func FuzzErrorBodyJSON(f *testing.F) {
	for _, s := range []string{
		`{"error": {"message": "m", "type": "t", "param": null, "code": "c"}}`,
		`{"code": 429, "message": "x", "type": "rate_limit_error"}`,
		`{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "r"}`,
		`{"error": "plain", "code": 1.5e3}`,
		`{"ERROR": {"Message": "a\"b\u00e9", "type": [1, {"x": []}], "code": -0}}`,
		`{"error": {"message": "a", "message": "b"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, c := range body {
			if c >= 0x80 {
				return // encoding/json folds some non-ASCII names; compare ASCII only
			}
		}
		if bytes.Contains(body, []byte(`\\u`)) {
			return // nor escaped ones (\u017f folds to s)
		}
		b := trimSpaceBytes(body)
		if len(b) == 0 || b[0] != '{' {
			return
		}
		typ, code, msg, ok := refErrorFields(b)
		if got := gjson.ValidBytes(b); got != ok {
			t.Fatalf("valid: gjson %v, encoding/json %v", got, ok)
		}
		if !ok {
			return
		}
		ef := parseErrorBody(body, fuzzNow)
		if msg == "" && typ == "" && code == "" {
			return // an unknown shape: the message is an excerpt
		}
		if ef.typ != typ || ef.code != code || ef.message != msg {
			t.Fatalf("got %q %q %q, encoding/json %q %q %q", ef.typ, ef.code, ef.message, typ, code, msg)
		}
	})
}
