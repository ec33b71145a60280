package steadyredis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// fleetMisses are the targets TestFleetPriorities misses today, and why
// (this module has no known-miss table of its own; the root's is in
// misses_test.go).
var fleetMisses = map[string]string{
	"interactive p99 wait": "issue 21: in real time an interactive call still waits behind a fleet that counts the sliding window in epochs (its processes seldom learn its kind) and behind the first window's cold start: 73–687 ms measured in seven runs against a 33 ms interval (0.05–3 s before the batch kept its reserve in the store)",
	"batch use":            "issue 21: the batch is sent evenly from its first window and keeps one request free, and the batches of four processes ask the store in turn for a turn they can take now: 77–92% measured",
}

// fleetLanes is what a fleet lanes row measured.
type fleetLanes struct {
	interactive, interactiveFailed int
	p99                            time.Duration
	batch, accepted                int64
	batchUse                       float64
	batchFailed                    int64
}

// runFleetLanes runs a batch (callers per process, PriorityBatch when
// prio) saturating the provider for d, with interactive calls (deadline
// 5 s) arriving at random at 5% of the limit, each in a process taken in
// turn. The interactive wait is a call's time less the provider's latency.
func runFleetLanes(t *testing.T, fleet []*fleetMember, limit int, window, d time.Duration, prov *steadytest.Provider, prio bool, seed uint64) fleetLanes {
	const lat = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bctx := ctx
	ictx := context.Background()
	if prio {
		bctx = steady.WithPriority(ctx, steady.PriorityBatch)
		ictx = steady.WithPriority(ictx, steady.PriorityInteractive)
	}
	params := openai.ChatCompletionNewParams{Model: "steady-test-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	var res fleetLanes
	var batchFailed, interOK atomic.Int64
	var mu sync.Mutex
	var waits []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for _, m := range fleet {
		for range 8 {
			wg.Go(func() {
				for bctx.Err() == nil {
					if _, err := m.sdk.Chat.Completions.New(bctx, params); err != nil && bctx.Err() == nil {
						batchFailed.Add(1)
					}
				}
			})
		}
	}
	var accepted, interAt int64
	wg.Go(func() {
		time.Sleep(time.Until(start.Add(d)))
		accepted, interAt = prov.Stats().Accepted, interOK.Load()
		cancel()
	})
	rng := rand.New(rand.NewPCG(seed, 21))
	rate := float64(limit) * 0.05 / window.Seconds()
	for i := 0; ; i++ {
		gap := time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if !time.Now().Add(gap).Before(start.Add(d)) {
			break
		}
		time.Sleep(gap)
		res.interactive++
		m := fleet[i%len(fleet)]
		wg.Go(func() {
			c, cancel := context.WithTimeout(ictx, 5*time.Second)
			defer cancel()
			began := time.Now()
			_, err := m.sdk.Chat.Completions.New(c, params)
			wait := time.Since(began) - lat
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.interactiveFailed++
				t.Logf("interactive call in %v failed after %v: %v", m.store != nil, time.Since(began), err)
				return
			}
			interOK.Add(1)
			waits = append(waits, wait)
		})
	}
	wg.Wait()
	slices.Sort(waits)
	if len(waits) > 0 {
		res.p99 = waits[min((len(waits)*99+99)/100, len(waits))-1]
	}
	res.accepted, res.batch = accepted, accepted-interAt
	windows := int64(d / window)
	usable := int64(limit) - int64(float64(limit)*0.02)
	res.batchUse = float64(res.batch) / float64(usable*windows-interAt)
	res.batchFailed = batchFailed.Load()
	return res
}

// TestFleetPriorities: four processes share a key through the store
// against the real Redis, in real time (60 requests a 2 s window, 10
// windows): a batch in every process saturates it, and interactive calls
// in any process at 5% of the limit wait at most about one request
// interval of the fleet's rate (33 ms), none fails, and the batch uses
// what they leave. The same fleet without priorities (today's single
// queue) is logged beside it.
func TestFleetPriorities(t *testing.T) {
	c := needRedis(t)
	const (
		n      = 4
		limit  = 60
		window = 2 * time.Second
		run    = 20 * time.Second
	)
	for _, form := range []string{"roundtripper", "middleware"} {
		t.Run(form, func(t *testing.T) {
			var with, single fleetLanes
			for _, prio := range []bool{true, false} {
				prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: limit, Window: window, Latency: 20 * time.Millisecond})
				fleet := newFleet(t, prov, fleetOpts{n: n, client: c, prefix: testPrefix(t, c), middleware: form == "middleware"})
				r := runFleetLanes(t, fleet, limit, window, run, prov, prio, 7)
				if prio {
					with = r
				} else {
					single = r
				}
			}
			interval := window / limit
			row := fmt.Sprintf("fleet lanes 4 procs, %d/%v %-12s | priorities: interactive %d p99 wait %v failed %d, batch %d (%.1f%% of what is left) | single queue: interactive p99 wait %v failed %d, batch %d (%.1f%%)",
				limit, window, form, with.interactive, with.p99.Round(time.Millisecond), with.interactiveFailed, with.batch, 100*with.batchUse,
				single.p99.Round(time.Millisecond), single.interactiveFailed, single.batch, 100*single.batchUse)
			t.Log(row)
			if os.Getenv("STEADY_PRIORITY") != "" {
				fmt.Println(row)
			}
			// The targets; the rows miss them today (see fleetMisses).
			miss := func(measure string, met bool, format string, args ...any) {
				switch {
				case met && fleetMisses[measure] != "":
					// Real time: the row's figures vary from run to run,
					// so a listed miss met this time is logged, not failed.
					t.Logf("known miss %q met its target this run: "+format, append([]any{measure}, args...)...)
				case !met && fleetMisses[measure] != "":
					t.Logf("KNOWN MISS "+format+": %s", append(args, fleetMisses[measure])...)
				case !met:
					t.Errorf(format, args...)
				}
			}
			miss("interactive p99 wait", with.p99 <= interval, "interactive p99 wait %v, want <= %v", with.p99, interval)
			miss("batch use", with.batchUse >= 0.97, "batch used %.1f%% of what is left, want >= 97%%", 100*with.batchUse)
			if with.interactiveFailed != 0 || with.batchFailed != 0 {
				t.Errorf("%d interactive and %d batch calls failed", with.interactiveFailed, with.batchFailed)
			}
		})
	}
}
