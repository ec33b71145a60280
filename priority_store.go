package steady

import (
	"context"
	"math"
	"time"

	"github.com/steady-go/steady/store"
)

// This file holds priorities fleet-wide, through a Store: a batch request
// reserves in the fleet's budget only a turn it can take now (the
// reservation's MaxWait is a microsecond), and otherwise waits in this
// process for the time the store said, and asks again. The fleet's
// budget therefore never runs ahead of now for a batch: an interactive
// request of any process, which reserves without that cap, waits at most
// about one request interval of the fleet's rate, whatever the batches of
// the others have queued. So that batches never starve, a batch request
// that has asked for batchAge request intervals takes its place in line
// as any request does, if no batch request of this process did so in the
// last batchAge intervals times the fleet's size: under interactive load
// at the whole limit, batches still get about one turn in batchAge.

// storeKeepLocked sets, for a batch request, what it leaves of each of
// ws, the partition's known windows in storeWindowsLocked's order, for
// the fleet's other requests: what keepLocked keeps of the partition's
// own windows (PacingConfig.Reserve, and one request once the batch has
// been sent evenly for a whole window), at least one unit. The store then
// sends it at the windows' rate, never in a burst, so that what the
// batches of the fleet use comes back spread over the window, and an
// interactive request of any process finds a unit within about one
// request interval: in a window counted in epochs, the batches no longer
// take an epoch at its start, leaving the interactive requests to race
// them at its end for what is left (a request told to ask again holds no
// place, and a turn lost at every epoch's end ran past the deadline).
func (pt *partition) storeKeepLocked(ctx context.Context, p *pacer, ws []store.Window) {
	if len(ws) == 0 || p.reserve <= 0 || laneOf(priorityOf(ctx)) != laneBatch {
		return
	}
	share := p.reserve
	if s := pt.prio.pacedSince; !s.IsZero() {
		if _, period := pt.batchGapLocked(p, TokenEstimate{}); time.Since(s) >= period {
			share = math.SmallestNonzeroFloat64 // one request
		}
	}
	j := 0
	for i := range pt.windows {
		w := &pt.windows[i]
		if !w.known() {
			continue
		}
		if j == len(ws) {
			return
		}
		ws[j].Keep = max(int64(math.Ceil(keepUnits(w, share, p.headroom))), 1)
		j++
	}
}

// batchAge is, in request intervals of the tightest window, how long a
// batch request asks for a turn it can take now before it takes its place
// in the fleet's line.
const batchAge = 20

// storeReserve is Store.Reserve for a request of ctx's priority. Its error
// is the store's, ctx's, or errStopped when stop is closed.
func (p *pacer) storeReserve(ctx context.Context, pt *partition, r store.Reservation, stop <-chan struct{}) (store.Grant, error) {
	if laneOf(priorityOf(ctx)) != laneBatch || p.reserve <= 0 || len(r.Windows) == 0 {
		return p.cfg.Store.Reserve(ctx, r)
	}
	var gap time.Duration
	for _, w := range r.Windows {
		if w.Rate > 0 && w.Cost > 0 {
			gap = max(gap, durationOf(float64(w.Cost)/w.Rate))
		}
	}
	began := time.Now()
	fleet := 1
	for {
		asked := r
		waited := time.Since(began)
		if r.MaxWait > 0 {
			asked.MaxWait = max(r.MaxWait-waited, time.Nanosecond)
		}
		now := asked.MaxWait <= 0 || asked.MaxWait > time.Microsecond
		if now && waited >= batchAge*gap {
			// Old enough: it takes its place in line, unless another
			// batch request of this process did lately.
			t := time.Now()
			pt.mu.Lock()
			if t.Sub(pt.prio.agedAt) >= time.Duration(fleet)*batchAge*gap {
				pt.prio.agedAt, now = t, false
			}
			pt.mu.Unlock()
		}
		limit := asked.MaxWait
		if now {
			asked.MaxWait = time.Microsecond
		}
		g, err := p.cfg.Store.Reserve(ctx, asked)
		switch {
		case err != nil || !g.Refused || !now:
			return g, err
		case !g.Shared:
			// Decided locally, at this process's share: no fleet to
			// yield to.
			asked.MaxWait = limit
			return p.cfg.Store.Reserve(ctx, asked)
		case limit > 0 && g.Wait > limit:
			return g, nil // past its deadline or MaxWait
		}
		fleet = max(g.Fleet, 1)
		// Refused only for being a batch: wait for the time the fleet's
		// budget has room, and ask again.
		d := g.Wait
		if waited < batchAge*gap {
			d = min(d, batchAge*gap-waited)
		}
		if err := waitTurn(ctx, stop, nil, d, -1); err != nil {
			return store.Grant{}, err
		}
	}
}
