package steady_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestUpstreamsMoveEvent: a request waiting in one upstream's queue that
// moves to another's, which sends it sooner, is reported by an
// EventUpstream from the upstream it leaves, naming the one it moves to
// and when it is planned there; its next attempt (or its next move) is
// on that one. Calls launched at once are split evenly over keys of 37
// and 23 requests per 10 s, so calls move from key-b to key-a. A move is
// logged at Debug level, not at Warn, and no event holds a credential.
func TestUpstreamsMoveEvent(t *testing.T) {
	const calls = 150
	for _, form := range routeForms {
		for _, row := range []struct {
			name     string
			deadline time.Duration
		}{{"no-deadline", 0}, {"deadline-25s", 25 * time.Second}} {
			t.Run(row.name+"/"+form, func(t *testing.T) {
				steady.SeedRandom(22)
				synctest.Test(t, func(t *testing.T) {
					var net upstreamNet
					provider := func(n int) *account {
						return newAccount(steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: n, Window: 10 * time.Second, Latency: routeLat}))
					}
					a := net.add("api.openai.com", "Bearer sk-a", provider(37))
					b := net.add("api.openai.com", "Bearer sk-b", provider(23))
					var events eventLog
					var warn syncBuffer
					logger := slog.New(slog.NewTextHandler(&warn, &slog.HandlerOptions{Level: slog.LevelWarn}))
					client, _ := routedClient(form, steady.Config{Upstreams: twoKeys(), OnEvent: events.add, Logger: logger}, &net)
					ctxFor := noDeadline
					if row.deadline > 0 {
						ctxFor = func(int) (context.Context, context.CancelFunc) {
							return context.WithTimeout(context.Background(), row.deadline)
						}
					}
					res := runBatch(client, calls, ctxFor)

					other := map[string]string{"key-a": "key-b", "key-b": "key-a"}
					byDir := map[string]int{}
					reasons := map[string]int{}
					var bad []string
					// next[ctx] is where a moved request must go next.
					next := map[context.Context]string{}
					events.mu.Lock()
					all := append([]steady.Event(nil), events.all...)
					events.mu.Unlock()
					for _, ev := range all {
						if s := fmt.Sprint(ev); strings.Contains(s, "sk-") {
							bad = append(bad, "a credential in "+s)
						}
						switch {
						case ev.Kind == steady.EventUpstream && strings.HasPrefix(ev.Reason, "moved to "):
							to, why, _ := strings.Cut(strings.TrimPrefix(ev.Reason, "moved to "), ": ")
							if want, ok := next[ev.Context]; ok && ev.Upstream != want {
								bad = append(bad, fmt.Sprintf("moved from %s, but its last move was to %s", ev.Upstream, want))
							}
							if other[ev.Upstream] != to || ev.Until.IsZero() || ev.Context == nil {
								bad = append(bad, fmt.Sprintf("move from %q: %q until %v", ev.Upstream, ev.Reason, ev.Until))
							}
							next[ev.Context] = to
							byDir[ev.Upstream+"→"+to]++
							reasons[why]++
						case ev.Kind == steady.EventAttempt:
							if want, ok := next[ev.Context]; ok {
								if ev.Upstream != want {
									bad = append(bad, fmt.Sprintf("moved to %s, attempted on %s", want, ev.Upstream))
								}
								delete(next, ev.Context)
							}
						}
					}
					t.Logf("%s %s: ok %d failed %d; attempts key-a %d key-b %d; moves %v, reasons %v", row.name, form, res.ok, res.failed, a.attempts, b.attempts, byDir, reasons)
					for i, s := range bad {
						if i < 5 {
							t.Errorf("%s", s)
						}
					}
					if byDir["key-b→key-a"] == 0 || byDir["key-b→key-a"] <= byDir["key-a→key-b"] {
						t.Errorf("moves %v: want calls to move from key-b (23 per 10 s) to key-a (37)", byDir)
					}
					if strings.Contains(warn.String(), "moved to") {
						t.Errorf("a move logged at Warn level: %.300s", warn.String())
					}
					if row.deadline == 0 && res.failed != 0 {
						t.Errorf("%d calls failed: %v", res.failed, res.errs)
					}
				})
			})
		}
	}
}

// TestUpstreamsLateHeadMoves: a routed request at its queue's head whose
// turn there, as planned to go, is past its deadline, while the plan for
// refusing keeps it, looks for an upstream that serves it in time, and
// moves there at once rather than wait in its queue (alone, it would go
// there at the soonest the window may allow: TestWaitUnknownBucket).
// The primary, a token bucket of 60 a minute that others drained, answers
// the first call with nothing remaining and the bucket full in a minute:
// one sample does not tell a bucket from a window that refills at its
// reset, so the plan to go waits for that reset, while the plan for
// refusing lets the bucket refill (about a second). The second call, with
// a 5 s deadline, is routed to the primary (its better tier, whose plan
// for refusing serves it in time), heads its queue there, and moves at
// once to the overflow, which serves it.
func TestUpstreamsLateHeadMoves(t *testing.T) {
	for _, form := range routeForms {
		t.Run(form, func(t *testing.T) {
			steady.SeedRandom(22)
			synctest.Test(t, func(t *testing.T) {
				var net upstreamNet
				p := net.add("api.openai.com", "Bearer sk-ptu", newAccount(steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 60, Window: time.Minute, Algorithm: steadytest.TokenBucket, Latency: routeLat})))
				o := net.add("api.openai.com", "Bearer sk-payg", limitedAccount(600))
				// Others drain the primary's bucket but for one request, at
				// one instant.
				var wg sync.WaitGroup
				for range 59 {
					wg.Go(func() {
						req, _ := http.NewRequest(http.MethodPost, routeBaseURL+"/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
						req.Header.Set("Authorization", "Bearer sk-ptu")
						if resp, err := p.rt.RoundTrip(req); err == nil {
							resp.Body.Close()
						}
					})
				}
				wg.Wait()
				var events eventLog
				client, _ := routedClient(form, steady.Config{OnEvent: events.add, Upstreams: []steady.Upstream{
					{Name: "primary", BaseURL: routeBaseURL, Key: "sk-ptu"},
					{Name: "overflow", BaseURL: routeBaseURL, Key: "sk-payg", Tier: 1},
				}}, &net)
				call := func(d time.Duration) (time.Duration, error) {
					ctx, cancel := context.WithTimeout(context.Background(), d)
					defer cancel()
					t0 := time.Now()
					_, err := client.Chat.Completions.New(ctx, chatParams())
					return time.Since(t0), err
				}
				if _, err := call(time.Minute); err != nil {
					t.Fatalf("first call: %v", err)
				}
				if got := p.count(200); got != 1 {
					t.Fatalf("the primary served the first call %d times, want once", got)
				}
				took, err := call(5 * time.Second)
				moves := 0
				for _, ev := range events.of(steady.EventUpstream) {
					if strings.HasPrefix(ev.Reason, "moved to ") {
						moves++
					}
				}
				t.Logf("%s: the second call took %v (err %v); the overflow served %d, the primary %d (429s %d); %d move events", form, took, err, o.count(200), p.count(200), p.count(429), moves)
				if err != nil {
					t.Fatalf("the second call failed after %v: %v", took, err)
				}
				if o.count(200) != 1 || p.count(200) != 1 {
					t.Errorf("the overflow served %d, the primary %d: want the second call on the overflow", o.count(200), p.count(200))
				}
				if took > time.Second || moves != 1 {
					t.Errorf("the second call took %v, %d moves: want one move, at once", took, moves)
				}
			})
		})
	}
}
