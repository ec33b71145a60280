package steadyredis

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// fakeLanesConfig is one TestFakeFleetPriorities row.
type fakeLanesConfig struct {
	n       int // processes
	callers int // batch callers per process, each calling in a loop
	algo    steadytest.Algorithm
	form    string // "middleware" or the RoundTripper
	seed    uint64 // of the interactive calls' arrivals
}

// fakeLanes runs TestFleetPriorities' row in fake time: c.n processes,
// each with a store of its own on the real Redis (the script on the
// bubble's clock), a PriorityBatch batch saturating 60 requests a 2 s
// window for 20 s, and PriorityInteractive calls (deadline 5 s) arriving
// at random at 5% of the limit, each in a process taken in turn. It
// returns what was measured and the interactive calls' errors.
func fakeLanes(t *testing.T, prefix string, c fakeLanesConfig) (fleetLanes, []string) {
	const (
		limit  = 60
		window = 2 * time.Second
		run    = 20 * time.Second
		lat    = 20 * time.Millisecond
	)
	var res fleetLanes
	var fails []string
	synctest.Test(t, func(t *testing.T) {
		prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: limit, Window: window, Latency: lat, Algorithm: c.algo})
		time.Sleep(700 * time.Millisecond) // the bubble's clock starts at a whole minute
		var sdks []openai.Client
		for i := range c.n {
			sdks = append(sdks, fleetClient(t, i, c.n, prefix, prov, c.form, steady.Config{Base: prov}, nil))
		}
		// The run ends by cancellation, not a deadline.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		bctx := steady.WithPriority(ctx, steady.PriorityBatch)
		ictx := steady.WithPriority(context.Background(), steady.PriorityInteractive)
		params := openai.ChatCompletionNewParams{Model: "steady-test-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
		var batchFailed, interOK atomic.Int64
		var mu sync.Mutex
		var waits []time.Duration
		var wg sync.WaitGroup
		start := time.Now()
		for _, sdk := range sdks {
			for range c.callers {
				wg.Go(func() {
					for bctx.Err() == nil {
						if _, err := sdk.Chat.Completions.New(bctx, params); err != nil && bctx.Err() == nil {
							batchFailed.Add(1)
							time.Sleep(20 * time.Millisecond)
						}
					}
				})
			}
		}
		var accepted, interAt int64
		wg.Go(func() {
			time.Sleep(run)
			accepted, interAt = prov.Stats().Accepted, interOK.Load()
			cancel()
		})
		rng := rand.New(rand.NewPCG(c.seed, 21))
		rate := float64(limit) * 0.05 / window.Seconds()
		for i := 0; ; i++ {
			gap := time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
			if !time.Now().Add(gap).Before(start.Add(run)) {
				break
			}
			time.Sleep(gap)
			res.interactive++
			sdk := sdks[i%c.n]
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(ictx, 5*time.Second)
				defer cancel()
				began := time.Now()
				_, err := sdk.Chat.Completions.New(ctx, params)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					res.interactiveFailed++
					fails = append(fails, "arrived at "+began.Sub(start).String()+" in p"+strconv.Itoa(i%c.n)+", failed after "+time.Since(began).String()+": "+err.Error())
					return
				}
				interOK.Add(1)
				waits = append(waits, time.Since(began)-lat)
			})
		}
		wg.Wait()
		slices.Sort(waits)
		if len(waits) > 0 {
			res.p99 = waits[min((len(waits)*99+99)/100, len(waits))-1]
		}
		res.accepted, res.batch = accepted, accepted-interAt
		usable := int64(limit - limit*2/100) // less the default headroom
		res.batchUse = float64(res.batch) / float64(usable*int64(run/window)-interAt)
		res.batchFailed = batchFailed.Load()
	})
	return res, fails
}

// fakeLanesMisses are the targets TestFakeFleetPriorities misses, and why.
var fakeLanesMisses = map[string]string{
	"sliding-window interactive p99 wait": "issue 21: the processes that do not know yet that the window is sliding count it in epochs, and the fleet's first window is spent before any reading is shared: 33–195 ms measured against a 33 ms interval (1.8–1.9 s before the batch kept its reserve in the store)",
	"fixed-window interactive p99 wait":   "issue 21, not analysed: with the roundtripper (seed 1) an interactive call waits for an epoch's end, 2.0–3.6 s measured against a 33 ms interval since the fleet's epochs began to wake the reservations told to ask again (0 s with the middleware; 4.0–4.8 s, and calls lost, before the batch kept its reserve in the store)",
	"batch use":                           "issue 21: the batch is sent evenly from its first window, which its cold start and the fleet's first schedule leave partly unused, and it keeps one request free: 75–97% measured",
}

// TestFakeFleetPriorities is TestFleetPriorities in fake time, with a
// batch of 64 callers per process (4 processes) against a sliding and a
// fixed window of 60 requests per 2 s, both SDK forms: no interactive or
// batch call fails. Before the store held the batch's reserve fleet-wide
// (StoreWindow.Keep), each fixed-window row lost 3 to 5 of its 23 to 28
// interactive calls: a window counted in epochs let the batches take each
// epoch at its start, and an interactive call told to ask again at the
// epoch's end held no place there, lost the race to the batch's callers
// epoch after epoch, and was refused ("pacing wait of 5.05–6.8 s") once
// the next epoch's end was past its deadline. The targets of interactive
// p99 wait (one request interval, 33 ms) and batch use (97%) are logged;
// those missed are listed in fakeLanesMisses.
func TestFakeFleetPriorities(t *testing.T) {
	c := needRedis(t)
	for _, algo := range []steadytest.Algorithm{steadytest.SlidingWindow, steadytest.FixedWindow} {
		for _, form := range []string{"roundtripper", "middleware"} {
			t.Run(algo.String()+"/"+form, func(t *testing.T) {
				cfg := fakeLanesConfig{n: 4, callers: 64, algo: algo, form: form, seed: 1}
				if form == "middleware" {
					cfg.seed = 2
				}
				r, fails := fakeLanes(t, testPrefix(t, c), cfg)
				t.Logf("interactive %d, p99 wait %v, %d failed; batch %d (%.1f%% of what is left), %d failed", r.interactive, r.p99.Round(time.Millisecond), r.interactiveFailed, r.batch, 100*r.batchUse, r.batchFailed)
				for _, f := range fails {
					t.Log(f)
				}
				if r.interactiveFailed != 0 || r.batchFailed != 0 {
					t.Errorf("%d of %d interactive and %d batch calls failed", r.interactiveFailed, r.interactive, r.batchFailed)
				}
				miss := func(measure string, met bool, format string, args ...any) {
					why := fakeLanesMisses[measure]
					switch {
					case met && why != "":
						// The bubble's clock stands still while Redis
						// answers, but the order in which the callers'
						// scripts reach it varies from run to run, and
						// with it these figures: a listed miss met this
						// time is logged, not failed.
						t.Logf("known miss %q met its target this run: "+format, append([]any{measure}, args...)...)
					case !met && why != "":
						t.Logf("KNOWN MISS "+format+": %s", append(args, why)...)
					case !met:
						t.Errorf(format, args...)
					}
				}
				interval := 2 * time.Second / 60
				miss(algo.String()+" interactive p99 wait", r.p99 <= interval, "interactive p99 wait %v, want <= %v", r.p99, interval)
				miss("batch use", r.batchUse >= 0.97, "batch used %.1f%% of what is left, want >= 97%%", 100*r.batchUse)
			})
		}
	}
}
