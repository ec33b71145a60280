package steady

import (
	"testing"

	"github.com/steady-go/steady/internal/ascii"
	"github.com/steady-go/steady/ratelimit"
)

// FuzzRespHeaders holds the one pass over a response's headers to what
// separate reads find: the rate-limit windows and retry hint
// (ratelimit.Append, ParseRetryAfter), the request id, x-should-retry and
// steady's give-up header, each read on its own.
func FuzzRespHeaders(f *testing.F) {
	f.Add("X-Request-Id: req_1\nx-should-retry: false\nRetry-After: 12\nX-Ratelimit-Remaining-Requests: 0\nX-Ratelimit-Reset-Requests: 1s")
	f.Add("~x-request-id: b\n~X-REQUEST-ID: a\napim-request-id: z\nx-steady-give-up: retries exhausted\n~x-should-retry: true")
	f.Add("request-id: \x01\nx-ms-client-request-id: c\nretry-after-ms: 250.5\nDate: Thu, 21 Aug 2025 12:40:00 GMT")
	f.Fuzz(func(t *testing.T, data string) {
		h := fuzzHeader(data)
		var ids [4]string
		var shouldRetry, giveUp string
		for k, vv := range h {
			if len(vv) == 0 {
				continue
			}
			for i, name := range []string{"x-request-id", "request-id", "apim-request-id", "x-ms-client-request-id"} {
				if ascii.EqualFold(k, name) {
					ascii.Keep(&ids[i], vv[0])
				}
			}
			if ascii.EqualFold(k, "x-should-retry") {
				ascii.Keep(&shouldRetry, vv[0])
			}
			if ascii.EqualFold(k, "x-steady-give-up") {
				ascii.Keep(&giveUp, vv[0])
			}
		}
		var hr respHeaders
		hr.read(h, true)
		if hr.ids != ids || hr.shouldRetry != shouldRetry || hr.giveUp != giveUp {
			t.Fatalf("read %q %q %q, want %q %q %q", hr.ids, hr.shouldRetry, hr.giveUp, ids, shouldRetry, giveUp)
		}
		d, ok := hr.rl.RetryAfter(fuzzNow)
		if wd, wok := ratelimit.ParseRetryAfter(h, fuzzNow); d != wd || ok != wok {
			t.Fatalf("retry hint %v %v, want %v %v", d, ok, wd, wok)
		}
		if len(h) <= 12 {
			got := hr.rl.Append(nil, fuzzNow)
			want := ratelimit.Append(nil, h, fuzzNow)
			if len(got.Windows) != len(want.Windows) || got.RetryAfter != want.RetryAfter {
				t.Fatalf("windows %+v, want %+v", got, want)
			}
			for i := range got.Windows {
				if got.Windows[i] != want.Windows[i] {
					t.Fatalf("windows %+v, want %+v", got, want)
				}
			}
		}
	})
}
