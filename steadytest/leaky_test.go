package steadytest

import (
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

var limitEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// admitAt asks l about requests at the given offsets and returns which
// were admitted, as a string of '+' and '-'.
func admitAt(l Limiter, offsets ...time.Duration) string {
	var b strings.Builder
	for _, o := range offsets {
		if ok, _ := l.Admit(limitEpoch.Add(o)); ok {
			b.WriteByte('+')
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

func ms(v ...int) []time.Duration {
	d := make([]time.Duration, len(v))
	for i, x := range v {
		d[i] = time.Duration(x) * time.Millisecond
	}
	return d
}

func TestLimitAlgorithms(t *testing.T) {
	tests := []struct {
		name string
		l    *Limit
		at   []time.Duration
		want string
	}{
		// 20/s without burst: 50 ms apart at least.
		{"leaky no burst", LeakyBucket(20, 0), ms(0, 10, 50, 99, 100, 150), "+-+-++"},
		// Burst 2: three at once, then one every 50 ms.
		{"leaky burst", LeakyBucket(20, 2), ms(0, 0, 0, 0, 50, 60, 100), "+++-+-+"},
		// 3 per second, full at the start, one back every 333 ms.
		{"token bucket", NewLimit(TokenBucket, 3, time.Second), ms(0, 0, 0, 0, 340, 350, 700), "+++-+-+"},
		// 2 per aligned second.
		{"fixed window", NewLimit(FixedWindow, 2, time.Second), ms(0, 900, 950, 1000, 1001, 1002), "++-++-"},
		// 2 in any second.
		{"sliding window", NewLimit(SlidingWindow, 2, time.Second), ms(0, 900, 950, 1000, 1001, 1900), "++-+-+"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := admitAt(tt.l, tt.at...); got != tt.want {
				t.Errorf("%v: got %s, want %s", tt.l, got, tt.want)
			}
		})
	}
}

func TestLimitRetryInAndScale(t *testing.T) {
	l := NewLimit(SlidingWindow, 2, time.Second)
	admitAt(l, ms(0, 300)...)
	ok, wait := l.Admit(limitEpoch.Add(500 * time.Millisecond))
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("third in the window: ok %v wait %v, want refused for 500ms", ok, wait)
	}
	l.Scale(2)
	if ok, _ := l.Admit(limitEpoch.Add(500 * time.Millisecond)); !ok {
		t.Fatal("refused after the limit doubled")
	}
	if r := l.Rate(); r != 4 {
		t.Fatalf("Rate after doubling = %v, want 4", r)
	}

	g := LeakyBucket(10, 0)
	g.Scale(0.5)
	if got := admitAt(g, ms(1000, 1150, 1200)...); got != "+-+" {
		t.Fatalf("halved leaky bucket: %s, want +-+", got)
	}

	bare := LeakyBucket(1, 0).WithoutRetryAfter()
	bare.Admit(limitEpoch)
	if ok, wait := bare.Admit(limitEpoch); ok || wait != 0 {
		t.Fatalf("bare refusal: ok %v wait %v, want refused without a wait", ok, wait)
	}
}

// TestProviderLimiter checks the provider's answers under a Limiter: no
// rate-limit headers, 429 with Retry-After in whole seconds, or bare.
func TestProviderLimiter(t *testing.T) {
	for _, bare := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			l := LeakyBucket(2, 0)
			if bare {
				l.WithoutRetryAfter()
			}
			p := NewProvider(ProviderConfig{Limiter: l})
			body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
			var statuses []int
			var last http.Header
			for range 3 {
				req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(body))
				resp, err := p.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				statuses = append(statuses, resp.StatusCode)
				last = resp.Header
				for k := range resp.Header {
					if strings.Contains(strings.ToLower(k), "ratelimit") {
						t.Errorf("header %s sent under a Limiter", k)
					}
				}
			}
			if statuses[0] != 200 || statuses[1] != 429 || statuses[2] != 429 {
				t.Fatalf("statuses %v, want 200 429 429", statuses)
			}
			if got, want := last.Get("Retry-After"), map[bool]string{false: "1", true: ""}[bare]; got != want {
				t.Errorf("bare %v: Retry-After %q, want %q", bare, got, want)
			}
			if st := p.Stats(); st.Accepted != 1 || st.RateLimited != 2 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestLimiterMaxRequestsInWindow: with a Limiter, Stats.MaxRequestsInWindow
// counts what the limiter admitted in any span of its window, so that "the
// provider never admitted more than its limit" can fail: a fixed window
// admits its limit at the end of one window and again at the start of the
// next, twice its limit within one window-long span.
func TestLimiterMaxRequestsInWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Align to 0.9 s into a whole second.
		now := time.Now()
		time.Sleep(time.Duration(int64(time.Second)-now.UnixNano()%int64(time.Second)) + 900*time.Millisecond)
		p := NewProvider(ProviderConfig{Limiter: NewLimit(FixedWindow, 5, time.Second)})
		send := func(n int) {
			for range n {
				req, _ := http.NewRequest(http.MethodPost, "https://llm.example.test/v1/chat/completions",
					strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
				resp, err := p.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
		}
		send(5)
		if got := p.Stats().MaxRequestsInWindow; got != 5 {
			t.Fatalf("after 5 admitted: MaxRequestsInWindow = %d, want 5", got)
		}
		time.Sleep(200 * time.Millisecond) // into the next window, 0.2 s later
		send(7)
		st := p.Stats()
		if st.Accepted != 10 || st.RateLimited != 2 {
			t.Fatalf("accepted %d, refused %d; want 10 and 2", st.Accepted, st.RateLimited)
		}
		if st.MaxRequestsInWindow != 10 {
			t.Errorf("MaxRequestsInWindow = %d, want 10: both windows' admissions within one second", st.MaxRequestsInWindow)
		}
		// A second later, the count starts over.
		time.Sleep(2 * time.Second)
		send(1)
		if got := p.Stats().MaxRequestsInWindow; got != 10 {
			t.Errorf("MaxRequestsInWindow = %d, want it to stay the most seen, 10", got)
		}
	})
}
