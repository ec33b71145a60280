package main

import (
	"context"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/steady-go/steady"
)

// plan is the workload every client runs.
type plan struct {
	Duration    time.Duration // whole run
	OutageStart time.Duration // offset where the outage begins; <= 0 or >= Duration: no outage
	OutageEnd   time.Duration // offset where the provider recovers
	Concurrency int           // workers per client
	Offered     float64       // calls per second offered by all workers of a client together
	CallTimeout time.Duration // deadline of one call, SDK retries included
	Model       string
	MaxTokens   int64
}

// phaseAt returns the phase of the plan at offset d.
func (p plan) phaseAt(d time.Duration) phase {
	switch {
	case p.OutageStart <= 0 || p.OutageStart >= p.Duration || d < p.OutageStart:
		return phaseOverload
	case d < p.OutageEnd:
		return phaseOutage
	}
	return phaseRecovery
}

// client is one side of the comparison: an SDK client, the provider it
// talks to, and the recorder that counts what happens.
type client struct {
	name     string
	sdk      openai.Client
	upstream upstream // nil when the client talks to a real endpoint
	rec      *recorder
	steady   *steady.Transport // nil for the bare SDK
}

// call makes one chat completion and records it.
func (c *client) call(ctx context.Context, p plan) {
	start := time.Now()
	parent := ctx
	ctx, cancel := context.WithTimeout(withCall(ctx), p.CallTimeout)
	defer cancel()
	params := openai.ChatCompletionNewParams{
		Model: openai.ChatModel(p.Model),
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.UserMessage("Say ok."),
		},
	}
	if p.MaxTokens > 0 {
		params.MaxCompletionTokens = openai.Int(p.MaxTokens)
	}
	_, err := c.sdk.Chat.Completions.New(ctx, params)
	if parent.Err() != nil {
		return // the run was stopped: neither a success nor a failure
	}
	c.rec.callDone(time.Since(start), err)
}

// run drives the plan through every client at once and returns the
// timeline it followed. It returns early, with the timeline so far, when
// ctx is done.
func run(ctx context.Context, p plan, clients []*client) timeline {
	start := time.Now()
	var tl timeline
	for i := range tl.Start {
		tl.Start[i] = -1
	}
	tl.Start[phaseOverload] = 0
	var tlMu sync.Mutex
	mark := func(ph phase) {
		tlMu.Lock()
		tl.Start[ph] = time.Since(start)
		tlMu.Unlock()
		for _, c := range clients {
			c.rec.setPhase(ph)
			if c.upstream != nil {
				c.upstream.setOutage(ph == phaseOutage)
			}
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup

	// The phase driver.
	if p.phaseAt(p.OutageStart) == phaseOutage {
		wg.Go(func() {
			if !sleepUntil(runCtx, start.Add(p.OutageStart)) {
				return
			}
			mark(phaseOutage)
			if !sleepUntil(runCtx, start.Add(p.OutageEnd)) {
				return
			}
			mark(phaseRecovery)
		})
	}

	// Workers: each offers one call every interval, staggered, and skips
	// the slots it missed while a call was in flight.
	workers := max(p.Concurrency, 1)
	interval := time.Duration(float64(workers) / max(p.Offered, 1e-3) * float64(time.Second))
	for _, c := range clients {
		for w := range workers {
			offset := interval * time.Duration(w) / time.Duration(workers)
			wg.Go(func() {
				next := start.Add(offset)
				for {
					if !sleepUntil(runCtx, next) || time.Since(start) >= p.Duration {
						return
					}
					c.call(runCtx, p)
					next = next.Add(interval)
					if now := time.Now(); next.Before(now) {
						next = now
					}
				}
			})
		}
	}

	// End of the run.
	wg.Go(func() {
		sleepUntil(runCtx, start.Add(p.Duration))
		stop()
	})
	wg.Wait()
	tlMu.Lock()
	defer tlMu.Unlock()
	tl.End = min(time.Since(start), p.Duration)
	return tl
}

// sleepUntil waits until t or until ctx is done, and reports whether it
// reached t.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
