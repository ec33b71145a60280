package steadyotel_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestWaitsByPriority: with a window announced spent, a batch call and an
// interactive call wait; the waiting gauge splits them by priority, and
// once they went, the pacing wait histogram holds each under its
// priority, a bounded label. A call without a priority keeps its series
// unlabelled.
func TestWaitsByPriority(t *testing.T) {
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ok := steadytest.ChatCompletion("Hi")
				fake := steadytest.NewFakeT(t, limits(ok, "0", 30*time.Second), limits(ok, "98", time.Minute), limits(ok, "97", time.Minute), limits(ok, "96", time.Minute))
				cfg := steady.Config{}
				if form == "roundtripper" {
					cfg.Base = fake
				}
				h := newHarness(t, cfg)
				c := h.client(form, fake)
				if err := chat(c, context.Background()); err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				for _, p := range []steady.Priority{steady.PriorityBatch, steady.PriorityInteractive, steady.PriorityDefault} {
					wg.Go(func() {
						ctx := context.Background()
						if p != steady.PriorityDefault {
							ctx = steady.WithPriority(ctx, p)
						}
						if err := chat(c, ctx); err != nil {
							t.Error(err)
						}
					})
				}
				time.Sleep(time.Second)
				synctest.Wait()
				rm := h.collect(t)
				waiting := find(t, rm, "steady.pacing.waiting")
				for _, c := range []struct {
					prio string
					want int64
				}{{"batch", 1}, {"interactive", 1}, {"default", 1}} {
					if got := sum(t, waiting, "steady.priority="+c.prio); got != c.want {
						t.Errorf("waiting %s = %d, want %d", c.prio, got, c.want)
					}
				}
				wg.Wait()
				rm = h.collect(t)
				wait := find(t, rm, "steady.pacing.wait.duration")
				for _, prio := range []string{"batch", "interactive"} {
					if got := hcount(t, wait, "steady.priority="+prio); got != 1 {
						t.Errorf("pacing waits of %s = %d, want 1", prio, got)
					}
				}
				if got := hcount(t, wait, "steady.priority=default"); got != 0 {
					t.Errorf("a call without a priority was labelled default (%d)", got)
				}
				if got := hcount(t, wait); got != 3 {
					t.Errorf("pacing waits = %d, want 3", got)
				}
			})
		})
	}
}
