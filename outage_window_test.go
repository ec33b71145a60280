package steady_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestOutageWindowSpent is issue 20's "after an outage the announced
// remaining is spent": a service loop on a per-minute fixed window of 60,
// whose provider goes down from 10 s to 70 s, so that its window is whole
// again when it heals, 50 s before the next reset. What it holds may be
// sent at once: between the healing and that reset, steady serves as many
// calls as the window holds less its headroom (the bare SDK, for scale,
// bursts into it with its retries), in both forms: the first success
// within 5 s of the healing, and at least half of the window in the second
// after it.
func TestOutageWindowSpent(t *testing.T) {
	const limit = 60
	for _, form := range []string{"middleware", "roundtripper", "bare"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				steady.SeedRandom(20)
				// inOrder: no two attempts reach the provider at one
				// instant, so that the bare SDK's retries, whose jitter
				// SeedRandom seeds, draw it in the same order on every run.
				prov := inOrder{steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: limit, Window: time.Minute, Algorithm: steadytest.FixedWindow, Latency: 50 * time.Millisecond})}
				var c openai.Client
				if form == "bare" {
					c = openai.NewClient(option.WithBaseURL(testBaseURL), option.WithAPIKey(testAPIKey), option.WithHTTPClient(&http.Client{Transport: prov}))
				} else {
					c, _ = clientForms[form](steady.Config{}, prov)
				}
				start := time.Now()
				time.AfterFunc(10*time.Second, func() { prov.SetFaults(steadytest.Faults{Outage: true}) })
				var mu sync.Mutex // guards healed, before and acc, set by timers
				var healed, before int64
				// Accepted requests every 100 ms from the healing on.
				var acc [200]int64
				time.AfterFunc(70*time.Second, func() {
					mu.Lock()
					healed = prov.Stats().Accepted
					mu.Unlock()
					prov.SetFaults(steadytest.Faults{})
				})
				for i := range acc {
					time.AfterFunc(70*time.Second+time.Duration(i+1)*100*time.Millisecond, func() {
						mu.Lock()
						acc[i] = prov.Stats().Accepted
						mu.Unlock()
					})
				}
				// The provider's window began with the first request, at
				// start: its next reset after the healing is at 120 s.
				time.AfterFunc(120*time.Second-time.Millisecond, func() {
					mu.Lock()
					before = prov.Stats().Accepted
					mu.Unlock()
				})
				var wg sync.WaitGroup
				for w := range 16 {
					wg.Go(func() {
						for time.Since(start) < 125*time.Second {
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							_, err := c.Chat.Completions.New(ctx, chatParams(), callNumber(1+w))
							cancel()
							if err != nil {
								time.Sleep(time.Second)
							}
						}
					})
				}
				wg.Wait()
				mu.Lock()
				defer mu.Unlock()
				served := before - healed
				// The first success after the healing, and what was
				// accepted in the second after it.
				first := len(acc)
				for i, a := range acc {
					if a > healed {
						first = i
						break
					}
				}
				var burst int64
				if first < len(acc) {
					burst = acc[min(first+10, len(acc)-1)] - healed
				}
				firstAfter := time.Duration(first+1) * 100 * time.Millisecond
				st := prov.Stats()
				t.Logf("%s: first success %v after the healing (70 s), %d accepted in the second after it, %d before the next reset (120 s), of %d the window held; %d attempts in all, %d 429s", form, firstAfter, burst, served, limit, st.Requests, st.RateLimited)
				if form == "bare" {
					return
				}
				atLeast(t, "spent after the outage", "%.0f", float64(served), limit-float64(limit)*0.02)
				// Spent at once, not paced over what is left of the window:
				// at least half of it in the second after the first
				// success, which comes within 5 s of the healing.
				atLeast(t, "spent in a second", "%.0f", float64(burst), limit/2)
				atMost(t, "first success", "%.1fs", firstAfter.Seconds(), 5)
			})
		})
	}
}
