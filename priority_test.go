package steady_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// prioClient is one process: a Transport on the provider, and the SDK
// client through it in one of its two forms.
type prioClient struct {
	tr  *steady.Transport
	sdk openai.Client
}

func newPrioClient(rt http.RoundTripper, form string, cfg steady.Config, onEvent func(steady.Event)) prioClient {
	cfg.OnEvent = onEvent
	base := []option.RequestOption{option.WithBaseURL("https://llm.example.test/v1/"), option.WithAPIKey("sk-prio")}
	if form == "middleware" {
		tr := steady.New(cfg)
		return prioClient{tr, openai.NewClient(append(base, option.WithMiddleware(tr.Middleware), option.WithHTTPClient(&http.Client{Transport: rt}))...)}
	}
	cfg.Base = rt
	tr := steady.New(cfg)
	return prioClient{tr, openai.NewClient(append(base, option.WithHTTPClient(&http.Client{Transport: tr}))...)}
}

func chat(ctx context.Context, c openai.Client, opts ...option.RequestOption) error {
	_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
	}, opts...)
	return err
}

// p99 returns the 99th percentile of ds (the largest for fewer than 100).
func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*99 + 99) / 100
	return s[min(i, len(s))-1]
}

// laneResult is what a lanes row measured.
type laneResult struct {
	interactive, interactiveFailed int
	interactiveP99                 time.Duration
	batch                          int64   // batch calls the provider accepted in the run
	batchUse                       float64 // batch / (the quota in the run less the interactive calls)
	batchFailed                    int64
}

// runLanes saturates a provider of limit requests a minute with a batch
// (64 workers, each calling in a loop, no deadline) for d, while
// interactive calls (deadline 30 s) arrive at random at 5% of the limit.
// With prio false, nobody sets a priority: today's single queue.
func runLanes(t *testing.T, limit int, d time.Duration, form string, prio bool, seed uint64) laneResult {
	// The SDK's retries in the RoundTripper form (of the calls steady
	// refuses) draw their jitter from the source SeedRandom seeds.
	steady.SeedRandom(seed)
	prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: limit, Window: time.Minute, Latency: matrixLat})
	var mu sync.Mutex
	var waits []time.Duration
	c := newPrioClient(prov, form, steady.Config{}, nil)
	start := time.Now()
	end := start.Add(d)
	var res laneResult
	var batchOK, batchFailed, interOK atomic.Int64
	var wg sync.WaitGroup
	bctx := context.Background()
	if prio {
		bctx = steady.WithPriority(bctx, steady.PriorityBatch)
	}
	for range 64 {
		wg.Go(func() {
			for time.Now().Before(end) {
				if err := chat(bctx, c.sdk); err != nil {
					batchFailed.Add(1)
				} else {
					batchOK.Add(1)
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(seed, 21))
	rate := float64(limit) * 0.05 / time.Minute.Seconds() // a second
	var accepted, interAt int64
	wg.Go(func() {
		time.Sleep(time.Until(end))
		accepted, interAt = prov.Stats().Accepted, interOK.Load()
	})
	for {
		gap := time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if !time.Now().Add(gap).Before(end) {
			break
		}
		time.Sleep(gap)
		res.interactive++
		wg.Go(func() {
			ctx := context.Background()
			if prio {
				ctx = steady.WithPriority(ctx, steady.PriorityInteractive)
			}
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			began := time.Now()
			err := chat(ctx, c.sdk)
			// The provider answers after matrixLat: the rest is the wait.
			wait := time.Since(began) - matrixLat
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.interactiveFailed++
				t.Logf("interactive call failed: %v", err)
				return
			}
			interOK.Add(1)
			waits = append(waits, wait)
		})
	}
	wg.Wait()
	res.interactiveP99 = p99(waits)
	res.batch = accepted - interAt
	minutes := int64(d / time.Minute)
	// What the quota leaves: the whole limit less the interactive calls.
	res.batchUse = float64(res.batch) / float64(int64(limit)*minutes-interAt)
	res.batchFailed = batchFailed.Load()
	return res
}

// TestPriorityLanes: a batch saturating 60 and 600 requests a minute for
// ten minutes, interactive calls at 5% of the limit. Targets: interactive
// p99 pacing wait at most one request interval of the limit, no
// interactive call failed, the batch uses at least 97% of what the
// interactive calls leave of the quota. The same run without priorities
// (today's single queue) is logged beside it.
func TestPriorityLanes(t *testing.T) {
	for i, limit := range []int{60, 600} {
		form := []string{"roundtripper", "middleware"}[i%2]
		t.Run(fmt.Sprintf("%d-per-minute/%s", limit, form), func(t *testing.T) {
			var with, single laneResult
			synctest.Test(t, func(t *testing.T) { with = runLanes(t, limit, 10*time.Minute, form, true, 7) })
			synctest.Test(t, func(t *testing.T) { single = runLanes(t, limit, 10*time.Minute, form, false, 7) })
			interval := time.Minute / time.Duration(limit)
			row := fmt.Sprintf("lanes %d/min %-12s | priorities: interactive %d p99 wait %v failed %d, batch %d (%.1f%% of what is left) | single queue: interactive p99 wait %v failed %d, batch %d (%.1f%%)",
				limit, form, with.interactive, with.interactiveP99, with.interactiveFailed, with.batch, 100*with.batchUse,
				single.interactiveP99, single.interactiveFailed, single.batch, 100*single.batchUse)
			t.Log(row)
			if os.Getenv("STEADY_PRIORITY") != "" {
				fmt.Println(row)
			}
			atMost(t, "interactive p99 wait", "%.3f s", with.interactiveP99.Seconds(), interval.Seconds())
			if with.interactiveFailed != 0 || with.batchFailed != 0 {
				t.Errorf("%d interactive and %d batch calls failed, want 0", with.interactiveFailed, with.batchFailed)
			}
			atLeast(t, "batch use", "%.4f", with.batchUse, 0.97)
			if with.interactive == 0 {
				t.Fatal("no interactive call")
			}
		})
	}
}

// tenantResult is what a tenants row measured: each tenant's admissions
// while all three were backlogged, and the third's alone after.
type tenantResult struct {
	shares [3]float64
	alone  int64 // the third tenant's calls served in the minute after the others went idle
	limit  int
	during [3]int64
	failed int64
}

// runTenants backlogs three tenants with 10k, k and k workers (demand
// 10:1:1, k half the limit: each has more waiting than its share) on a provider of limit requests a minute for d, then stops the
// first two and lets the third run one more minute alone. The tenant is
// a header read by PacingConfig.Tenant in the middleware form, and set
// with steady.WithTenant in the other.
func runTenants(t *testing.T, limit int, d time.Duration, form string, tenants bool) tenantResult {
	prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: limit, Window: time.Minute, Latency: matrixLat})
	cfg := steady.Config{}
	if form == "middleware" && tenants {
		cfg.Pacing.Tenant = func(r *http.Request) (string, float64) { return r.Header.Get("X-Tenant"), 1 }
	}
	var counts [3]atomic.Int64
	c := newPrioClient(prov, form, cfg, nil)
	start := time.Now()
	stop1, stop2 := start.Add(d), start.Add(d+time.Minute)
	var res tenantResult
	var failed atomic.Int64
	var wg sync.WaitGroup
	var snap [3]int64
	warm := start.Add(time.Minute) // from the second minute on, all three are backlogged
	var warmSnap [3]int64
	for i, workers := range []int{5 * limit, limit / 2, limit / 2} {
		ctx := steady.WithTenant(context.Background(), fmt.Sprint("tenant", i))
		opts := []option.RequestOption{option.WithHeader("X-Tenant", fmt.Sprint("tenant", i)),
			option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
				resp, err := next(r)
				if err == nil && resp.StatusCode == http.StatusOK {
					counts[i].Add(1)
				}
				return resp, err
			})}
		if form == "middleware" || !tenants {
			ctx = context.Background()
		}
		until := stop1
		if i == 2 {
			until = stop2
		} else {
			// Going idle: their waiting calls end too.
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, stop1)
			defer cancel()
		}
		for range workers {
			wg.Go(func() {
				for time.Now().Before(until) {
					err := chat(ctx, c.sdk, opts...)
					var we *steady.WaitError
					switch {
					case errors.As(err, &we) && i < 2:
						// Its turn is past the tenant's end: idle.
						time.Sleep(time.Until(until))
					case err != nil && ctx.Err() == nil:
						failed.Add(1)
					}
				}
			})
			synctest.Wait() // the workers queue in order, on every run
		}
	}
	wg.Go(func() {
		time.Sleep(time.Until(warm))
		for i := range warmSnap {
			warmSnap[i] = counts[i].Load()
		}
		time.Sleep(time.Until(stop1))
		for i := range snap {
			snap[i] = counts[i].Load()
		}
		time.Sleep(time.Until(stop2))
		res.alone = counts[2].Load() - snap[2]
	})
	wg.Wait()
	var total int64
	for i := range snap {
		res.during[i] = snap[i] - warmSnap[i]
		total += res.during[i]
	}
	for i := range res.shares {
		res.shares[i] = float64(res.during[i]) / float64(total)
	}
	res.limit, res.failed = limit, failed.Load()
	return res
}

// TestTenantFairShares: three tenants with demand 10:1:1, all
// backlogged, each get 1/3 ± 5% of the quota; when two go idle, the third
// gets all of it at once. Beside it, the single queue (no tenants).
func TestTenantFairShares(t *testing.T) {
	for i, limit := range []int{60, 600} {
		form := []string{"middleware", "roundtripper"}[i%2]
		t.Run(fmt.Sprintf("%d-per-minute/%s", limit, form), func(t *testing.T) {
			var r, single tenantResult
			synctest.Test(t, func(t *testing.T) { r = runTenants(t, limit, 6*time.Minute, form, true) })
			synctest.Test(t, func(t *testing.T) { single = runTenants(t, limit, 6*time.Minute, form, false) })
			row := fmt.Sprintf("tenants %d/min %-12s | shares while backlogged %.3f %.3f %.3f | third alone: %d in the next minute (limit %d) | failed %d | single queue: shares %.3f %.3f %.3f, third alone %d",
				limit, form, r.shares[0], r.shares[1], r.shares[2], r.alone, limit, r.failed, single.shares[0], single.shares[1], single.shares[2], single.alone)
			t.Log(row)
			if os.Getenv("STEADY_PRIORITY") != "" {
				fmt.Println(row)
			}
			for i, s := range r.shares {
				if s < 1.0/3-0.05 || s > 1.0/3+0.05 {
					t.Errorf("tenant %d got %.3f of the quota while backlogged, want 1/3 ± 0.05", i, s)
				}
			}
			// Alone, the third gets the whole quota less the headroom.
			if float64(r.alone) < 0.95*float64(limit) {
				t.Errorf("the third tenant alone got %d in a minute, want >= 95%% of %d", r.alone, limit)
			}
			if r.failed != 0 {
				t.Errorf("%d calls failed", r.failed)
			}
		})
	}
}

// TestPriorityNoStarvation: interactive load at 100% of the limit for a
// minute (more than the quota: a backlog of interactive calls) over a
// backlogged batch. The batch's minimum share, one admission in twenty,
// is met: no priority starves.
func TestPriorityNoStarvation(t *testing.T) {
	for i, limit := range []int{60, 600} {
		form := []string{"middleware", "roundtripper"}[i%2]
		t.Run(fmt.Sprintf("%d-per-minute/%s", limit, form), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: limit, Window: time.Minute, Latency: matrixLat})
				c := newPrioClient(prov, form, steady.Config{}, nil)
				var batch, inter atomic.Int64
				var failed atomic.Int64
				count := func(n *atomic.Int64) option.RequestOption {
					return option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
						resp, err := next(r)
						if err == nil && resp.StatusCode == http.StatusOK {
							n.Add(1)
						}
						return resp, err
					})
				}
				// The first minute fills the window: measure the next two.
				start := time.Now()
				from, end := start.Add(time.Minute), start.Add(3*time.Minute)
				bctx := steady.WithPriority(context.Background(), steady.PriorityBatch)
				ictx := steady.WithPriority(context.Background(), steady.PriorityInteractive)
				var wg sync.WaitGroup
				for range 32 {
					wg.Go(func() {
						for time.Now().Before(end) {
							if err := chat(bctx, c.sdk, count(&batch)); err != nil {
								failed.Add(1)
							}
						}
					})
				}
				// Interactive calls at the limit's rate, evenly: with the
				// batch's share taken, a backlog of them builds up.
				wg.Go(func() {
					gap := time.Minute / time.Duration(limit)
					for time.Now().Before(end) {
						wg.Go(func() {
							if err := chat(ictx, c.sdk, count(&inter)); err != nil {
								failed.Add(1)
							}
						})
						time.Sleep(gap)
					}
				})
				var b0, i0, b1, i1 int64
				wg.Go(func() {
					time.Sleep(time.Until(from))
					b0, i0 = batch.Load(), inter.Load()
					time.Sleep(time.Until(end))
					b1, i1 = batch.Load(), inter.Load()
				})
				wg.Wait()
				b, n := b1-b0, (b1-b0)+(i1-i0)
				share := float64(b) / float64(n)
				row := fmt.Sprintf("starvation %d/min %-12s | interactive at 100%% of the limit: batch got %d of %d admissions (%.1f%%, minimum 5%%) | failed %d",
					limit, form, b, n, 100*share, failed.Load())
				t.Log(row)
				if os.Getenv("STEADY_PRIORITY") != "" {
					fmt.Println(row)
				}
				// One admission in twenty, less one for the rounding at
				// the edges of the span.
				if float64(b) < 0.05*float64(n)-1 {
					t.Errorf("batch got %d of %d admissions (%.2f%%), want >= 5%%", b, n, 100*share)
				}
				if failed.Load() != 0 {
					t.Errorf("%d calls failed", failed.Load())
				}
			})
		})
	}
}

// TestPriorityBumpedPastDeadline: a batch call waits with a deadline its
// turn would meet; interactive calls arrive and go first, moving its turn
// past its deadline. It fails at that moment, not at its deadline, with a
// *WaitError that says why.
func TestPriorityBumpedPastDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 60, Window: time.Minute, Latency: matrixLat})
		var events eventLog
		c := newPrioClient(prov, "roundtripper", steady.Config{Pacing: steady.PacingConfig{RequestsPerMinute: 60}}, events.add)
		// Use the window: 59 sent (2% headroom keeps one).
		var wg sync.WaitGroup
		for range 59 {
			wg.Go(func() { chat(context.Background(), c.sdk) })
		}
		wg.Wait()
		// Sent at once, the window comes back in a minute: a batch call
		// with a deadline 70 s away goes then.
		bctx, cancel := context.WithTimeout(steady.WithPriority(context.Background(), steady.PriorityBatch), 70*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		var failedAt time.Time
		go func() {
			// No SDK retry: the first answer is the one asserted.
			err := chat(bctx, c.sdk, option.WithMaxRetries(0))
			failedAt = time.Now()
			errc <- err
		}()
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("the batch call ended before any interactive call: %v", err)
		default:
		}
		// Sixty interactive calls take the whole next window before it.
		ictx := steady.WithPriority(context.Background(), steady.PriorityInteractive)
		arrived := time.Now()
		if s := c.tr.Snapshot()[0]; s.WaitingByPriority[steady.PriorityBatch] != 1 {
			t.Errorf("snapshot: waiting by priority %v, want one batch call", s.WaitingByPriority)
		}
		for range 60 {
			wg.Go(func() { chat(ictx, c.sdk) })
		}
		err := <-errc
		var we *steady.WaitError
		if !errors.As(err, &we) {
			t.Fatalf("batch call: %v, want a *steady.WaitError", err)
		}
		if !failedAt.Equal(arrived) {
			t.Errorf("failed %v after the interactive calls arrived, want at once", failedAt.Sub(arrived))
		}
		if we.Reason != "higher-priority requests arrived" || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitError %q (Reason %q), want Reason %q matching context.DeadlineExceeded", we, we.Reason, "higher-priority requests arrived")
		}
		wg.Wait()
		rejected := events.of(steady.EventRejected)
		if len(rejected) != 1 || rejected[0].Priority != steady.PriorityBatch || rejected[0].Reason != "pacing wait past the deadline: higher-priority requests arrived" {
			t.Errorf("rejections %+v, want one of the batch call saying why", rejected)
		}
	})
}
