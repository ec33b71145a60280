package steadytest

import (
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestProviderMemoryBounded runs many windows and checks that the admitted
// requests kept are only those of the last window.
func TestProviderMemoryBounded(t *testing.T) {
	for _, alg := range []Algorithm{SlidingWindow, TokenBucket} {
		t.Run(alg.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := NewProvider(ProviderConfig{RequestsPerWindow: 1000, TokensPerWindow: 1 << 30, Window: time.Second, Algorithm: alg})
				body := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hello"}]}`
				for i := range 5000 {
					req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(body))
					resp, err := p.RoundTrip(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Fatalf("request %d: %d", i, resp.StatusCode)
					}
					time.Sleep(10 * time.Millisecond) // 100 a window
				}
				p.mu.Lock()
				defer p.mu.Unlock()
				w := &p.lim.win
				if n := w.requests(); n != 100 {
					t.Errorf("%d requests in the last window, want 100", n)
				}
				if c := cap(w.ev); c > 512 {
					t.Errorf("the window's slice grew to %d for 100 requests a window", c)
				}
				if w.tokens != 100*12 || p.lim.maxTok != 100*12 || p.lim.maxReq != 100 {
					t.Errorf("tokens %d, max %d, max requests %d", w.tokens, p.lim.maxTok, p.lim.maxReq)
				}
			})
		})
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", time.Nanosecond: "1ms", 20 * time.Millisecond: "20ms",
		time.Second: "1s", 6 * time.Minute: "6m0s", 2*time.Minute + 59560*time.Millisecond: "2m59.56s",
	} {
		if got := durationString(d); got != want {
			t.Errorf("durationString(%v) = %q, want %q", d, got, want)
		}
	}
}
