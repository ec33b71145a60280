package steadytest

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestFixedWindow: a fixed window admits its limit in each window aligned
// to the epoch, refuses the rest until the window ends, and announces the
// window's end as the reset, in whole seconds where the dialect says so.
func TestFixedWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewProvider(ProviderConfig{RequestsPerWindow: 10, Window: 10 * time.Second, Algorithm: FixedWindow, Dialect: DialectHerokuSeed})
		call := func() *http.Response {
			t.Helper()
			req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
			resp, err := p.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		time.Sleep(3 * time.Second) // into the first window
		end := time.Unix(0, 0).Add(time.Since(time.Unix(0, 0)).Truncate(10 * time.Second)).Add(10 * time.Second)
		for i := range 10 {
			resp := call()
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
			if got, want := resp.Header.Get("X-Ratelimit-Remaining-Requests"), strconv.Itoa(9-i); got != want {
				t.Errorf("request %d: remaining %s, want %s", i, got, want)
			}
			if got, want := resp.Header.Get("X-Ratelimit-Reset-Requests"), strconv.FormatInt(end.Unix(), 10); got != want {
				t.Errorf("request %d: reset %s, want %s", i, got, want)
			}
		}
		resp := call()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
			t.Fatalf("11th: %d, Retry-After %q; want 429 and 7", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		time.Sleep(time.Until(end))
		if resp := call(); resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining-Requests") != "9" {
			t.Fatalf("in the next window: %d, remaining %s", resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining-Requests"))
		}
		if s := p.Stats(); s.Accepted != 11 || s.RateLimited != 1 {
			t.Errorf("stats %+v", s)
		}
		if a := FixedWindow.String(); a != "fixed-window" {
			t.Errorf("FixedWindow.String() = %q", a)
		}
	})
}
