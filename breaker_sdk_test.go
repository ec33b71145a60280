package steady_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// timeline records upstream attempts and breaker changes in the order they
// happened, so that a test can tell which attempts left after the circuit
// opened.
type timeline struct {
	mu    sync.Mutex
	marks []mark
}

type mark struct {
	what string // "attempt", or the breaker's new state
	at   time.Time
}

func (tl *timeline) add(what string) {
	tl.mu.Lock()
	tl.marks = append(tl.marks, mark{what, time.Now()})
	tl.mu.Unlock()
}

// event records breaker changes.
func (tl *timeline) event(ev steady.Event) {
	if ev.Kind == steady.EventBreakerState {
		tl.add(ev.To.String())
	}
}

// count returns how many marks of what lie in [from, to).
func (tl *timeline) count(what string, from, to time.Time) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	n := 0
	for _, m := range tl.marks {
		if m.what == what && !m.at.Before(from) && m.at.Before(to) {
			n++
		}
	}
	return n
}

// afterFirst returns the marks after the first one of what, and whether
// there is one. Marks at the same instant are concurrent with it, not
// after it (an attempt admitted as another's failure trips the circuit),
// and are left out.
func (tl *timeline) afterFirst(what string) ([]mark, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i, m := range tl.marks {
		if m.what == what {
			var after []mark
			for _, n := range tl.marks[i+1:] {
				if n.at.After(m.at) {
					after = append(after, n)
				}
			}
			return after, true
		}
	}
	return nil, false
}

// first returns the time of the first mark of what at or after from.
func (tl *timeline) first(what string, from time.Time) (time.Time, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, m := range tl.marks {
		if m.what == what && !m.at.Before(from) {
			return m.at, true
		}
	}
	return time.Time{}, false
}

// latestState returns the breaker's latest state in the timeline, or "".
func (tl *timeline) latestState() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := len(tl.marks) - 1; i >= 0; i-- {
		if tl.marks[i].what != "attempt" {
			return tl.marks[i].what
		}
	}
	return ""
}

// outageFake is a fake upstream that answers 503 until up, then succeeds.
func outageFake(t *testing.T, tl *timeline, up time.Time) *steadytest.Fake {
	fake := steadytest.NewFakeT(t)
	fake.OnFunc(nil, func(*steadytest.Request) steadytest.Response {
		tl.add("attempt")
		if time.Now().Before(up) {
			return steadytest.ServerError(503)
		}
		return steadytest.ChatCompletion("back")
	})
	return fake
}

// TestQueuedDuringOutageDecidedAtOnce: requests waiting in pacing when the
// circuit opens are woken and fail at once; no attempt leaves after the
// circuit opened but the probes.
func TestQueuedDuringOutageDecidedAtOnce(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			var tl timeline
			fake := outageFake(t, &tl, time.Now().Add(time.Hour))
			c := client(steady.Config{
				OnEvent: tl.event,
				Pacing:  steady.PacingConfig{RequestsPerMinute: 60},
			}, fake)
			start := time.Now()
			var wg sync.WaitGroup
			errs := make([]error, 40)
			for i := range errs {
				wg.Go(func() {
					_, errs[i] = c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0))
				})
			}
			wg.Wait()
			open := 0
			for _, err := range errs {
				if errors.Is(err, steady.ErrCircuitOpen) {
					open++
				}
			}
			after, ok := tl.afterFirst("open")
			if !ok {
				t.Fatal("the circuit never opened")
			}
			attempts, probes := 0, 0
			for _, m := range after {
				switch m.what {
				case "attempt":
					attempts++
				case "half-open":
					probes++
				}
			}
			if attempts > probes {
				t.Fatalf("%d attempts left after the circuit opened, %d probe periods: queued requests were sent", attempts, probes)
			}
			if before := fake.Calls() - attempts; open < len(errs)-before {
				t.Fatalf("%d calls failed with ErrCircuitOpen, want all but the %d sent before the circuit opened", open, before)
			}
			if el := time.Since(start); el > 15*time.Second {
				t.Fatalf("queued calls took %v to fail: they waited out their pacing turn", el)
			}
		})
	})
}

// TestProbeAheadOfPacing: a half-open probe does not wait behind the
// pacing queue.
func TestProbeAheadOfPacing(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			var tl timeline
			up := time.Now().Add(500 * time.Millisecond)
			fake := outageFake(t, &tl, up)
			var ev eventLog
			c := client(steady.Config{
				OnEvent: ev.add,
				Retry:   steady.RetryConfig{MaxRetries: -1},
				Breaker: steady.BreakerConfig{ConsecutiveFailures: 1, HalfOpenProbes: 1},
				Pacing:  steady.PacingConfig{RequestsPerMinute: 6}, // one every 10s
			}, fake)
			if _, err := c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0)); err == nil {
				t.Fatal("the first call succeeded during the outage")
			}
			// Fill the pacing queue behind the probe-to-be.
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
					defer cancel()
					c.Chat.Completions.New(ctx, chatParams(), option.WithMaxRetries(0))
				})
			}
			time.Sleep(2 * time.Second) // past the first open period
			start := time.Now()
			if _, err := c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0)); err != nil {
				t.Fatalf("probe: %v", err)
			}
			if el := time.Since(start); el > time.Second {
				t.Fatalf("the probe waited %v behind the pacing queue", el)
			}
			var probes int
			for _, e := range ev.of(steady.EventAttempt) {
				if e.Reason == "half-open probe" {
					probes++
				}
			}
			if probes != 1 {
				t.Fatalf("%d probe attempts, want 1", probes)
			}
			wg.Wait()
		})
	})
}

// TestHalfOpenWaitersFollowTheVerdict: calls beyond the probe wait for its
// verdict, then are sent (success) or fail at once (failure).
func TestHalfOpenWaitersFollowTheVerdict(t *testing.T) {
	for _, recovered := range []bool{true, false} {
		name := "probe fails"
		if recovered {
			name = "probe succeeds"
		}
		t.Run(name, func(t *testing.T) {
			forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
				synctest.Test(t, func(t *testing.T) {
					fake := steadytest.NewFakeT(t, steadytest.ServerError(503))
					probe := steadytest.ServerError(503).WithDelay(5 * time.Second)
					// The provider announces its limits: the waiters then go
					// together (one that announces nothing would pace them as
					// its rate is discovered).
					limits := []string{"x-ratelimit-limit-requests", "10000", "x-ratelimit-remaining-requests", "9990"}
					if recovered {
						probe = steadytest.ChatCompletion("probe").WithDelay(5 * time.Second).WithHeader(limits...)
					}
					fake.Add(probe)
					c := client(steady.Config{
						Retry:   steady.RetryConfig{MaxRetries: -1},
						Breaker: steady.BreakerConfig{ConsecutiveFailures: 1, HalfOpenProbes: 1},
					}, fake)
					c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0))
					time.Sleep(2 * time.Second)
					probeDone := make(chan error, 1)
					go func() {
						_, err := c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0))
						probeDone <- err
					}()
					synctest.Wait() // the probe is out
					var wg sync.WaitGroup
					errs := make([]error, 5)
					ended := make([]time.Time, 5)
					if recovered {
						for range errs {
							fake.Add(steadytest.ChatCompletion("after").WithHeader(limits...))
						}
					}
					start := time.Now()
					for i := range errs {
						wg.Go(func() {
							_, errs[i] = c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0))
							ended[i] = time.Now()
						})
					}
					wg.Wait()
					if err := <-probeDone; (err == nil) != recovered {
						t.Fatalf("probe: %v", err)
					}
					for i, err := range errs {
						if ended[i].Sub(start) != 5*time.Second {
							t.Fatalf("waiter %d ended after %v, want the probe's verdict at 5s", i, ended[i].Sub(start))
						}
						if recovered && err != nil {
							t.Fatalf("waiter %d: %v after the probe succeeded", i, err)
						}
						if !recovered && !errors.Is(err, steady.ErrCircuitOpen) {
							t.Fatalf("waiter %d: %v, want ErrCircuitOpen after the probe failed", i, err)
						}
					}
					if want := 2 + map[bool]int{true: 5, false: 0}[recovered]; fake.Calls() != want {
						t.Fatalf("%d attempts, want %d", fake.Calls(), want)
					}
				})
			})
		})
	}
}

// TestHoldRidesOutAnOutage: with Hold, every call whose deadline lies past
// a 2-minute outage succeeds, only probes reach the upstream during it (at
// most one per open period), a call whose deadline comes first fails at
// once, and the circuit closes soon after the upstream is back.
func TestHoldRidesOutAnOutage(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			var tl timeline
			start := time.Now()
			up := start.Add(2 * time.Minute)
			fake := outageFake(t, &tl, up)
			c := client(steady.Config{OnEvent: tl.event, Breaker: steady.BreakerConfig{Hold: true}}, fake)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failed []error
			call := func(delay time.Duration) {
				wg.Go(func() {
					time.Sleep(delay)
					ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
					defer cancel()
					if _, err := c.Chat.Completions.New(ctx, chatParams()); err != nil {
						mu.Lock()
						failed = append(failed, err)
						mu.Unlock()
					}
				})
			}
			for range 20 { // a burst that trips the circuit
				call(0)
			}
			for i := range 30 { // and calls arriving all through the outage
				call(time.Duration(i) * 4 * time.Second)
			}
			// A call whose deadline comes before the next probe fails at
			// once. Open periods are jittered: a probe may be in flight a
			// minute in, and the call would wait for its verdict.
			time.Sleep(time.Minute)
			for tl.latestState() == "half-open" {
				time.Sleep(time.Millisecond)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			t0 := time.Now()
			_, err := c.Chat.Completions.New(ctx, chatParams(), option.WithMaxRetries(0))
			cancel()
			if !errors.Is(err, steady.ErrCircuitOpen) || time.Since(t0) != 0 {
				t.Fatalf("short deadline: %v after %v, want ErrCircuitOpen at once", err, time.Since(t0))
			}
			wg.Wait()
			if len(failed) > 0 {
				t.Fatalf("%d calls failed, first: %v", len(failed), failed[0])
			}
			opened, ok := tl.first("open", start)
			if !ok {
				t.Fatal("the circuit never opened")
			}
			attempts := tl.count("attempt", opened.Add(time.Nanosecond), up)
			periods := tl.count("half-open", opened, up)
			if attempts > periods {
				t.Fatalf("%d attempts during the outage after the circuit opened, %d open periods", attempts, periods)
			}
			if periods > 20 {
				t.Fatalf("%d probes during a 2-minute outage", periods)
			}
			closed, ok := tl.first("closed", up)
			if !ok || closed.Sub(up) > 10*time.Second {
				t.Fatalf("circuit closed %v after recovery (found %v), want within 10s", closed.Sub(up), ok)
			}
			t.Logf("%d attempts before the circuit opened, %d probes during the outage, closed %v after recovery",
				tl.count("attempt", start, opened.Add(time.Nanosecond)), periods, closed.Sub(up))
		})
	})
}

// TestPanickingBaseLeavesStateIntact: a base that panics releases the
// breaker's probe slot and the partition's in-flight count; the panic
// reaches the caller and healthy calls then succeed.
func TestPanickingBaseLeavesStateIntact(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFakeT(t, steadytest.ServerError(503))
			var mu sync.Mutex
			panics := 0
			fake.OnFunc(func(*steadytest.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				if panics > 0 {
					panics--
					return true
				}
				return false
			}, func(*steadytest.Request) steadytest.Response { panic("base exploded") })
			c := client(steady.Config{
				Retry:   steady.RetryConfig{MaxRetries: -1},
				Breaker: steady.BreakerConfig{ConsecutiveFailures: 1, HalfOpenProbes: 1},
			}, fake)
			c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0)) // opens
			time.Sleep(2 * time.Second)
			mu.Lock()
			panics = 4
			mu.Unlock()
			for i := range 4 {
				func() {
					defer func() {
						if r := recover(); r != "base exploded" {
							t.Fatalf("panic %d: recovered %v, want the base's panic", i, r)
						}
					}()
					c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0))
				}()
			}
			fake.Add(steadytest.ChatCompletion("healthy"), steadytest.ChatCompletion("again"))
			start := time.Now()
			for i := range 2 {
				if _, err := c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0)); err != nil {
					t.Fatalf("healthy call %d after panics: %v", i, err)
				}
			}
			if el := time.Since(start); el != 0 {
				t.Fatalf("healthy calls after panics took %v", el)
			}
		})
	})
}

// TestBaseRefusedWithMiddleware: a Base set in Config is refused through
// Middleware with an error saying so, and nothing is sent anywhere.
func TestBaseRefusedWithMiddleware(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := steadytest.NewFakeT(t, steadytest.ChatCompletion("base"))
		sdk := steadytest.NewFakeT(t, steadytest.ChatCompletion("sdk"))
		st := steady.New(steady.Config{Base: base})
		c := viaMiddleware(st, sdk)
		_, err := c.Chat.Completions.New(t.Context(), chatParams())
		if err == nil || !containsAll(err.Error(), "Config.Base", "Middleware") {
			t.Fatalf("err = %v, want the Base refusal", err)
		}
		if base.Calls()+sdk.Calls() != 0 {
			t.Fatalf("%d attempts through Base, %d through the SDK's client; want none", base.Calls(), sdk.Calls())
		}
	})
}

// TestRetryAfter429SpendsNoBudget: a 429's retry does not need the retry
// budget; a 503's does.
func TestRetryAfter429SpendsNoBudget(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFakeT(t,
				steadytest.RateLimited(time.Second), steadytest.RateLimited(time.Second), steadytest.ChatCompletion("ok"),
				steadytest.ServerError(503), steadytest.ChatCompletion("unused"))
			c := client(steady.Config{Retry: steady.RetryConfig{BudgetRatio: 0.01, BudgetMinPerSecond: -1}}, fake)
			if _, err := c.Chat.Completions.New(t.Context(), chatParams()); err != nil {
				t.Fatalf("429s then 200: %v", err)
			}
			_, err := c.Chat.Completions.New(t.Context(), chatParams())
			if apiError(t, err).StatusCode != 503 || fake.Calls() != 4 {
				t.Fatalf("503 with the budget spent: %v after %d attempts, want it handed back after 4", err, fake.Calls())
			}
			if got := apiError(t, err).Response.Header.Get("X-Steady-Give-Up"); got != "retry budget exhausted" {
				t.Fatalf("X-Steady-Give-Up = %q", got)
			}
		})
	})
}

// TestGiveUpMarked: a failure handed back and the middleware's synthetic
// response both say that steady gave up, and why.
func TestGiveUpMarked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := steady.New(steady.Config{Retry: steady.RetryConfig{MaxRetries: -1}, Breaker: steady.BreakerConfig{ConsecutiveFailures: 1}})
		req, _ := http.NewRequestWithContext(t.Context(), "POST", testBaseURL+"/chat/completions", nil)
		resp, err := st.Middleware(req, steadytest.NewFakeT(t, steadytest.ServerError(503)).RoundTrip)
		if err != nil || resp.Header.Get("X-Should-Retry") != "false" || resp.Header.Get("X-Steady-Give-Up") != "retries exhausted" {
			t.Fatalf("handed back %v %v, headers %v", resp.StatusCode, err, resp.Header)
		}
		resp, err = st.Middleware(req, steadytest.NewFakeT(t).RoundTrip)
		if !errors.Is(err, steady.ErrCircuitOpen) || resp.Header.Get("X-Should-Retry") != "false" || resp.Header.Get("X-Steady-Give-Up") != "circuit open" {
			t.Fatalf("synthetic response: %v, headers %v", err, resp.Header)
		}
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
