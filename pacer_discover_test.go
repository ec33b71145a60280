package steady

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady/ratelimit"
)

// TestDiscoverColdStartHeld: the first success without rate-limit headers
// does not release the queue. The partition stays cold (ColdStart in
// flight) and goes at its discovered pace until it has evidence of the
// rate; its snapshot shows the pace.
func TestDiscoverColdStartHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{}, pacerDeps{})
		b := acquireBatch(t, p, 20, "gw")
		synctest.Wait()
		permits, _ := b.granted()
		settleOK(permits[0]) // no headers
		synctest.Wait()
		if permits, _ = b.granted(); len(permits) != defaultColdStart+1 {
			t.Errorf("%d requests out after the first success without headers, want %d (the freed slot)", len(permits), defaultColdStart+1)
		}
		s := p.snapshot(time.Now())
		if len(s) != 1 || s[0].Known || s[0].InFlight != defaultColdStart || len(s[0].Windows) != 1 || s[0].Windows[0].Name != "discovered" || !(s[0].Windows[0].Rate > 0) {
			t.Fatalf("snapshot = %+v, want a cold partition with a discovered pace", s)
		}
		// Successes, answered at once: the pace grows (slow start) and,
		// with enough of them, the partition is no longer cold.
		start := time.Now()
		for settled := 1; settled < 20; settled++ {
			for {
				if permits, _ = b.granted(); len(permits) > settled {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			settleOK(permits[settled])
		}
		b.wg.Wait()
		el := time.Since(start)
		s = p.snapshot(time.Now())
		if !s[0].Known {
			t.Errorf("still cold after 20 successes: %+v", s[0])
		}
		// 19 sends at a pace from 4/s growing by one per success: about
		// two seconds; at once, or at 4/s, would be 0 and 4.75 s.
		if el < time.Second || el > 4*time.Second {
			t.Errorf("19 requests took %v at the discovered pace, want 1-4s", el)
		}
	})
}

// TestDiscoverNoCooldown: a 429 of a header-less partition cuts its pace
// rather than pausing it for the generic cooldown, and a Retry-After long
// enough to mean a window pauses it until the window reopens; a request
// whose deadline comes first is refused at once.
func TestDiscoverNoCooldown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{ColdStart: -1}, pacerDeps{})
		ctx := context.Background()
		req := func(ctx context.Context) (*permit, error) {
			return p.acquire(ctx, chatRequest(t, ctx, "gw", "k", smallChat), admitOpts{})
		}
		pm, err := req(ctx)
		if err != nil {
			t.Fatal(err)
		}
		settleOK(pm)
		pm, _ = req(ctx)
		pm.done.Store(true)
		pm.finish(true, http.StatusTooManyRequests, ratelimit.Limits{}, time.Now())
		start := time.Now()
		pm, err = req(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el >= defaultCooldown {
			t.Errorf("a bare 429 paused the partition %v, want only a slot of its pace", el)
		}
		if s := p.snapshot(time.Now()); !s[0].CooldownUntil.IsZero() {
			t.Errorf("cooldown until %v after a bare 429", s[0].CooldownUntil)
		}
		pm.done.Store(true)
		pm.finish(true, http.StatusTooManyRequests, ratelimit.Limits{RetryAfter: 30 * time.Second, HasRetryAfter: true}, time.Now())
		until := time.Now().Add(30 * time.Second)
		if s := p.snapshot(time.Now()); !s[0].CooldownUntil.Equal(until) {
			t.Errorf("cooldown until %v, want the window's reopening at %v", s[0].CooldownUntil, until)
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		at := time.Now()
		if _, err := req(dctx); err == nil || time.Since(at) != 0 {
			t.Errorf("err = %v after %v, want a refusal at once", err, time.Since(at))
		}
		pm, err = req(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Not before the window reopens; then at the pace sustained over
		// the window (one request in about 30 s here): within a slot.
		if now := time.Now(); now.Before(until) || now.After(until.Add(time.Second)) {
			t.Errorf("sent at %v, want at the window's reopening %v", now, until)
		}
		pm.settle(nil, nil)
	})
}
