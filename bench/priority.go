package bench

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// priorityCase is the real-time priority row: a batch saturating a
// provider on loopback for Run, and interactive calls arriving at random
// at 5% of the limit, through steady with priorities and through steady
// as a single queue (no priority set).
type priorityCase struct {
	Requests int           // the limit per window
	Window   time.Duration // a sliding window
	Run      time.Duration
	Batch    int // batch callers
}

// priorityCases is the row the report runs: 60 requests a 3 s window
// (20/s), 32 batch callers, 30 s.
func priorityCases() []priorityCase {
	return []priorityCase{{Requests: 60, Window: 3 * time.Second, Run: 30 * time.Second, Batch: 32}}
}

// priorityResult is what one side of the row measured.
type priorityResult struct {
	Priorities          bool
	Interactive         int           // interactive calls made
	InteractiveFailed   int           // of them, failed
	InteractiveP99      time.Duration // p99 of their time less the provider's latency
	Batch               int64         // batch calls the provider accepted in the run
	BatchUse            float64       // batch / (the limit less 2% headroom over the run, less the interactive calls)
	BatchFailed         int64
	Attempts, Limited   int64 // upstream attempts and 429s
	RequestInterval     time.Duration
	InteractiveDeadline time.Duration
}

const priorityLatency = 20 * time.Millisecond

// runPriorityCase runs c in real time on loopback, once with priorities and
// once without, at the same time, each against its own provider.
func runPriorityCase(ctx context.Context, c priorityCase) [2]priorityResult {
	var out [2]priorityResult
	var wg sync.WaitGroup
	for i, prio := range []bool{true, false} {
		wg.Go(func() { out[i] = runPriority(ctx, c, prio) })
	}
	wg.Wait()
	return out
}

func runPriority(ctx context.Context, c priorityCase, prio bool) priorityResult {
	prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: c.Requests, Window: c.Window, Latency: priorityLatency})
	srv := httptest.NewServer(prov)
	defer srv.Close()
	hc := &http.Transport{MaxIdleConnsPerHost: 1024}
	defer hc.CloseIdleConnections()
	tr := steady.New(steady.Config{Base: hc})
	sdk := openai.NewClient(option.WithHTTPClient(&http.Client{Transport: tr}), option.WithBaseURL(srv.URL+"/v1/"), option.WithAPIKey("sk-bench"))
	params := openai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}

	res := priorityResult{Priorities: prio, RequestInterval: c.Window / time.Duration(c.Requests), InteractiveDeadline: 5 * time.Second}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	bctx, ictx := runCtx, context.Background()
	if prio {
		bctx = steady.WithPriority(bctx, steady.PriorityBatch)
		ictx = steady.WithPriority(ictx, steady.PriorityInteractive)
	}
	var batchFailed, interOK atomic.Int64
	var mu sync.Mutex
	var waits []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(c.Run)
	for range c.Batch {
		wg.Go(func() {
			for bctx.Err() == nil {
				if _, err := sdk.Chat.Completions.New(bctx, params); err != nil && bctx.Err() == nil {
					batchFailed.Add(1)
				}
			}
		})
	}
	var accepted, interAt int64
	wg.Go(func() {
		sleepUntil(ctx, end)
		accepted, interAt = prov.Stats().Accepted, interOK.Load()
		cancel()
	})
	rng := rand.New(rand.NewPCG(7, 21))
	rate := float64(c.Requests) * 0.05 / c.Window.Seconds()
	for ctx.Err() == nil {
		gap := time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if !time.Now().Add(gap).Before(end) {
			break
		}
		sleepUntil(ctx, time.Now().Add(gap))
		res.Interactive++
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ictx, res.InteractiveDeadline)
			defer cancel()
			began := time.Now()
			_, err := sdk.Chat.Completions.New(cctx, params)
			wait := max(time.Since(began)-priorityLatency, 0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.InteractiveFailed++
				return
			}
			interOK.Add(1)
			waits = append(waits, wait)
		})
	}
	wg.Wait()
	slices.Sort(waits)
	if len(waits) > 0 {
		res.InteractiveP99 = waits[min((len(waits)*99+99)/100, len(waits))-1]
	}
	res.Batch = accepted - interAt
	res.BatchUse = float64(res.Batch) / (float64(c.Requests)*c.Run.Seconds()/c.Window.Seconds() - float64(interAt))
	res.BatchFailed = batchFailed.Load()
	st := prov.Stats()
	res.Attempts, res.Limited = st.Requests, st.RateLimited
	return res
}
