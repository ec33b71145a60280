package steady_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestOpenPeriodAsAnnounced: an attempt still in flight when the circuit
// opens reports after the trip; that late failure must not end the open
// period the event announced. Nothing but the probe reaches the upstream
// before the announced end, in both forms.
func TestOpenPeriodAsAnnounced(t *testing.T) {
	providerForms(t, func(t *testing.T, client clientFunc) {
		synctest.Test(t, func(t *testing.T) {
			var tl timeline
			fake := steadytest.NewFakeT(t)
			var slow sync.Once
			fake.OnFunc(nil, func(*steadytest.Request) steadytest.Response {
				tl.add("attempt")
				d := time.Duration(0)
				slow.Do(func() { d = 300 * time.Millisecond }) // in flight at the trip
				return steadytest.ServerError(503).WithDelay(d)
			})
			var mu sync.Mutex
			var until time.Time
			cfg := steady.Config{
				Pacing:  steady.PacingConfig{Disabled: true},
				Retry:   steady.RetryConfig{MaxRetries: -1},
				Breaker: steady.BreakerConfig{ConsecutiveFailures: 3},
				OnEvent: func(ev steady.Event) {
					tl.event(ev)
					if ev.Kind == steady.EventBreakerState && ev.To == steady.BreakerOpen {
						mu.Lock()
						until = ev.Until
						mu.Unlock()
					}
				},
			}
			c, _ := client(cfg, fake)
			call := func() error {
				_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
					Model:    openai.ChatModelGPT5_4Mini,
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
				})
				return err
			}
			var wg sync.WaitGroup
			wg.Go(func() { call() }) // the slow one
			synctest.Wait()
			for range 3 {
				call()
			}
			mu.Lock()
			tripped, end := time.Now(), until
			mu.Unlock()
			if end.IsZero() {
				t.Fatal("the circuit did not open")
			}
			wg.Wait() // the slow attempt reports its failure late
			time.Sleep(time.Until(end) / 2)
			if err := call(); !errors.Is(err, steady.ErrCircuitOpen) {
				t.Errorf("a call %v after the trip, before the announced end %v: %v, want ErrCircuitOpen",
					time.Since(tripped), end.Sub(tripped), err)
			}
			if n := tl.count("attempt", tripped.Add(time.Nanosecond), end); n != 0 {
				t.Errorf("%d attempts reached the upstream inside the announced open period", n)
			}
			if s := tl.latestState(); s != "open" {
				t.Errorf("the circuit is %s inside its open period", s)
			}
		})
	})
}

// TestHoldKeepsItsReason: with Hold, in a service loop through an outage
// (every call with a deadline of a few seconds, the upstream slow to
// answer), a call that fails for the circuit fails before its deadline
// with an error matching ErrCircuitOpen and context.DeadlineExceeded, so
// that the SDK's own check of the context does not replace it with a bare
// context.DeadlineExceeded. No call fails with a bare deadline.
//
// Its counts still vary by a few calls from run to run: the held calls
// released at one instant (the end of an open period, a probe's verdict)
// take the probe and their pacing turns in the scheduler's order, and
// their deadlines differ. Its verdicts do not vary.
func TestHoldKeepsItsReason(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			// The open periods' jitter from a source of this test's own:
			// the shared one's draws would depend on the tests run before.
			steady.SeedRandom(5)
			start := time.Now()
			up := start.Add(40 * time.Second)
			fake := steadytest.NewFakeT(t)
			var lastMu sync.Mutex
			lastAttempt := map[string]time.Time{} // by call
			fake.OnFunc(nil, func(r *steadytest.Request) steadytest.Response {
				lastMu.Lock()
				lastAttempt[r.Header.Get("X-Call")] = r.Time
				lastMu.Unlock()
				if time.Now().Before(up) {
					return steadytest.ServerError(503).WithDelay(300 * time.Millisecond)
				}
				return steadytest.ChatCompletion("back").WithDelay(300 * time.Millisecond)
			})
			// A stated limit, above the calls' rate: the held calls
			// released together at the recovery wait certain turns.
			c := client(steady.Config{Breaker: steady.BreakerConfig{Hold: true}, Pacing: steady.PacingConfig{RequestsPerMinute: 600}}, fake)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var bare, circuit, late, other, waits, cut, ok int
			var first error
			for i := range 400 {
				wg.Go(func() {
					time.Sleep(time.Duration(i) * 150 * time.Millisecond)
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1500+i%7*500)*time.Millisecond)
					defer cancel()
					dl, _ := ctx.Deadline()
					id := strconv.Itoa(i)
					_, err := c.Chat.Completions.New(ctx, chatParams(), option.WithHeader("X-Call", id), option.WithMaxRetries(0)) // as the README says for the RoundTripper form
					lastMu.Lock()
					sent := lastAttempt[id]
					lastMu.Unlock()
					mu.Lock()
					defer mu.Unlock()
					var apiErr *openai.Error
					var we *steady.WaitError
					switch {
					case err == nil:
						ok++
					case errors.As(err, &we):
						waits++
					case errors.Is(err, context.DeadlineExceeded) && !sent.IsZero() && !sent.Add(300*time.Millisecond).Before(dl):
						cut++ // its own attempt was in flight at its deadline
					case errors.Is(err, steady.ErrCircuitOpen):
						circuit++
						if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
							break
						}
						if !time.Now().Before(dl) {
							late++
						}
					case errors.As(err, &apiErr):
						other++
					default:
						bare++
						t.Logf("bare at %v, deadline %v, last attempt %v: %v", time.Since(start), dl.Sub(start), sent.Sub(start), err)
						if first == nil {
							first = err
						}
					}
				})
			}
			wg.Wait()
			t.Logf("%d ok, %d circuit open (%d at their deadline), %d upstream errors, %d pacing refusals, %d attempts cut by their deadline, %d bare", ok, circuit, late, other, waits, cut, bare)
			if bare > 0 {
				t.Errorf("%d calls failed without their reason, first: %v", bare, first)
			}
			if late > 0 {
				t.Errorf("%d held calls failed at their deadline rather than before it", late)
			}
			if circuit == 0 {
				t.Error("no call met the open circuit: the test shows nothing")
			}
		})
	})
}
