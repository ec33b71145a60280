package steady_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// attemptLog is an http.RoundTripper in front of a provider that records
// when each attempt reached it and how it was answered.
type attemptLog struct {
	next http.RoundTripper
	mu   sync.Mutex
	all  []loggedAttempt // guarded by mu
}

type loggedAttempt struct {
	at     time.Time
	status int // 0: a transport error
}

func (l *attemptLog) RoundTrip(req *http.Request) (*http.Response, error) {
	at := time.Now()
	resp, err := l.next.RoundTrip(req)
	a := loggedAttempt{at: at}
	if err == nil {
		a.status = resp.StatusCode
	}
	l.mu.Lock()
	l.all = append(l.all, a)
	l.mu.Unlock()
	return resp, err
}

// TestOutageCost is issue 20's outage cost, both of its targets measured
// side by side in one run: a service loop under load (32 callers offering
// three times a sliding window of 600 a minute, 200 ms a response, each
// call with a 2-minute deadline), a 2-minute outage (every request
// answered 503), then recovery; in both forms. The outage may cost at most
// 15 upstream attempts, and the first success comes at most 5 s after the
// upstream heals. The largest gap between the attempts that reached the
// dead upstream after the circuit opened is logged beside them: it is how
// late a healing at the worst moment would be seen.
func TestOutageCost(t *testing.T) {
	const (
		overload = time.Minute
		outage   = 2 * time.Minute
		recovery = 30 * time.Second
		callers  = 32
	)
	providerForms(t, func(t *testing.T, client clientFunc) {
		synctest.Test(t, func(t *testing.T) {
			prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 600, Window: time.Minute, Algorithm: steadytest.SlidingWindow, Latency: 200 * time.Millisecond})
			// Seeded, and the attempts that reach the provider at one instant
			// taken in the order of their callers (inOrder): the row is the
			// same on every run.
			steady.SeedRandom(20)
			log := &attemptLog{next: inOrder{prov}}
			start := time.Now()
			down, healed := start.Add(overload), start.Add(overload+outage)
			var opened time.Time // when the circuit first opened in the outage; guarded by log.mu
			onEvent := func(ev steady.Event) {
				if ev.Kind == steady.EventBreakerState && ev.To == steady.BreakerOpen && !ev.Time.Before(down) {
					log.mu.Lock()
					if opened.IsZero() {
						opened = ev.Time
					}
					log.mu.Unlock()
				}
			}
			c, _ := client(steady.Config{Random: rand.NewPCG(20, 0), OnEvent: onEvent}, log)
			time.AfterFunc(overload, func() { prov.SetFaults(steadytest.Faults{Outage: true}) })
			time.AfterFunc(overload+outage, func() { prov.SetFaults(steadytest.Faults{}) })
			end := healed.Add(recovery)
			ctx, cancel := context.WithDeadline(context.Background(), end)
			defer cancel()
			// Three times the limit (30 a second): a call every 1.07 s per caller.
			interval := callers * time.Second / 30
			var wg sync.WaitGroup
			for w := range callers {
				next := start.Add(interval * time.Duration(w) / callers)
				wg.Go(func() {
					for {
						if d := time.Until(next); d > 0 {
							select {
							case <-time.After(d):
							case <-ctx.Done():
							}
						}
						if ctx.Err() != nil {
							return
						}
						cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
						_, _ = c.Chat.Completions.New(cctx, chatParams(), callNumber(w))
						ccancel()
						if next = next.Add(interval); next.Before(time.Now()) {
							next = time.Now()
						}
					}
				})
			}
			wg.Wait()

			log.mu.Lock()
			defer log.mu.Unlock()
			var attempts, tripped int // tripped: sent before the circuit opened
			var last time.Time
			var gap time.Duration // the largest, once the circuit opened
			first := time.Duration(-1)
			for _, a := range log.all {
				switch {
				case a.at.Before(down):
				case a.at.Before(healed):
					attempts++
					if !a.at.After(opened) {
						tripped++
						break
					}
					if !last.IsZero() {
						gap = max(gap, a.at.Sub(last))
					}
					last = a.at
				case a.status == http.StatusOK && first < 0:
					first = a.at.Sub(healed)
				}
			}
			t.Logf("%d upstream attempts during the %v outage (%d sent before the circuit opened, %v into it; %d probes, the largest gap between two %v), first success %v after the healing", attempts, outage, tripped, opened.Sub(down).Round(10*time.Millisecond), attempts-tripped, gap.Round(10*time.Millisecond), first.Round(time.Millisecond))
			if first < 0 {
				t.Fatal("no success after the healing")
			}
			atMost(t, "attempts", "%.0f", float64(attempts), 15)
			atMost(t, "first success", "%.2fs", first.Seconds(), 5)
		})
	})
}
