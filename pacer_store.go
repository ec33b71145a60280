package steady

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/store"
)

// This file wires a store.Store into the pacer: after a request's local turn
// comes, the store reserves it in the fleet's shared budget (one call per
// attempt), and the request waits for the fleet's turn too; after the
// attempt, the store is told what the response showed.

// errStoreLocal is the Err of an EventStore reporting a fall back whose
// store named no cause: the store could not reach its backend and paces
// at this process's share.
var errStoreLocal = errors.New("steady: store unreachable; pacing at this process's share of the limits")

// storeLocalError is the Err of an EventStore reporting a fall back that
// its store gave a cause for ([store.Grant.Err], [store.Grant.Lapse]); it
// unwraps to the cause.
type storeLocalError struct{ cause error }

func (e *storeLocalError) Error() string {
	return "steady: store unreachable (" + e.cause.Error() + "); pacing at this process's share of the limits"
}

func (e *storeLocalError) Unwrap() error { return e.cause }

// storeFallbackErr returns the Err of an EventStore reporting a fall
// back of the given cause (nil: none named).
func storeFallbackErr(cause error) error {
	if cause == nil {
		return errStoreLocal
	}
	return &storeLocalError{cause: cause}
}

// fleetReopen is how long a failed fleet probe opens the fleet's circuit
// again when the local circuit stays closed.
const fleetReopen = 2 * time.Second

// storeTurn is a permit's reservation in the store.
type storeTurn struct {
	part    store.Partition
	windows []store.Window
	grant   store.Grant
	// cold: reserved before the fleet knew any window; what its response
	// shows was issued before every reservation in a window.
	cold bool
	// caps are, per window, the most one request may count (storeCap).
	caps []int64
}

// capped bounds c, a cost in window i of the reservation, as storeCap
// bounded its reserved cost.
func (st *storeTurn) capped(i int, c int64) int64 {
	c = min(c, maxCost)
	if i < len(st.caps) {
		c = min(c, st.caps[i])
	}
	return c
}

// storeCapsLocked returns, for the windows storeWindowsLocked returns and
// in their order, the most one request may count in each.
func (pt *partition) storeCapsLocked(p *pacer) []int64 {
	var cs []int64
	for i := range pt.windows {
		w := &pt.windows[i]
		if !w.known() {
			continue
		}
		cs = append(cs, storeCap(maxCost, w.quota()-max(w.headroomUnits(p.headroom), 1)))
	}
	return cs
}

// storeApplyLocked applies a grant to pt: whether the store paces the
// fleet, and a newer reading of the fleet's windows. It appends to evs the
// EventStores to emit (once pt.mu is released) when the partition fell
// back to local pacing or rejoined the fleet (both, in that order, for a
// grant that reports a lapse), and returns evs.
func (p *pacer) storeApplyLocked(pt *partition, pm *permit, g store.Grant, now time.Time, evs []Event) []Event {
	// Each partition says so for itself: a store may fall back for one
	// partition (its keys unusable) and stay shared for others.
	ev := Event{Kind: EventStore, Time: now, Upstream: pt.upstream, Partition: pt.label, Model: pt.model}
	switch {
	case g.Shared && g.Lapse != nil && (!pt.storeSeen || pt.storeShared):
		// The store fell back and rejoined between two grants of this
		// partition: it is told as it happened.
		fb := ev
		fb.Reason, fb.Err = "fallback", storeFallbackErr(g.Lapse)
		ev.Reason = "rejoined"
		evs = append(evs, fb, ev)
	case !g.Shared && (!pt.storeSeen || pt.storeShared):
		ev.Reason, ev.Err = "fallback", storeFallbackErr(g.Err)
		evs = append(evs, ev)
	case g.Shared && pt.storeSeen && !pt.storeShared:
		ev.Reason = "rejoined"
		evs = append(evs, ev)
	}
	pt.storeSeen = true
	if g.Shared != pt.storeShared {
		pt.storeShared = g.Shared
		if g.Shared {
			// The store paces the fleet: this process no longer paces
			// a share it guesses from the headers.
			for i := range pt.windows {
				pt.windows[i].share = 1
			}
		}
	}
	if g.Observed != nil && g.Observed.Seq > pt.fleetSeq {
		pt.fleetSeq = g.Observed.Seq
		rl := observedLimits(g.Observed, now)
		for _, w := range rl.Windows {
			pt.observeLocked(p, pm, w, now)
		}
		if len(rl.Windows) > 0 {
			pt.known = true
		}
		pt.wakeHeadLocked()
	}
	return evs
}

// fleetOpenError is acquire's error when the fleet's circuit for the
// upstream is open: another process found it failing. It matches
// [ErrCircuitOpen]; the transport treats it like its own open circuit.
type fleetOpenError struct {
	upstream string
	until    time.Time
}

func (e *fleetOpenError) Error() string {
	return "steady: circuit open: " + e.upstream + ": opened by the fleet"
}

func (e *fleetOpenError) Unwrap() error { return ErrCircuitOpen }

// storeWindowsLocked returns pt's windows with a known quota as the
// store sees them, with what est costs in each: the fleet is paced evenly
// at the quota less headroom (at least one unit) per window length, with
// a burst of half the headroom (or of the request's own cost, if larger),
// so that it never sends more than the quota in any span of the window's
// length, whatever kind of window it is, even when requests sent in turn
// reach the server a little out of step.
func (pt *partition) storeWindowsLocked(p *pacer, est TokenEstimate) []store.Window {
	var ws []store.Window
	for i := range pt.windows {
		w := &pt.windows[i]
		if !w.known() {
			continue
		}
		if ws == nil {
			ws = make([]store.Window, 0, len(pt.windows))
		}
		name := w.name
		if w.config {
			name = "config"
		}
		h := w.headroomUnits(p.headroom)
		q := w.quota() - max(h, 1)
		c := storeCap(cost(w.unit, est), q)
		burst := max(int64(h/2), c, 1)
		if w.kind == kindUnknown && !w.config && !w.reset.IsZero() {
			// Whole again at its reset: the store counts it in epochs
			// of the quota less headroom (a negative burst says so).
			burst = -max(int64(w.quota()-h), c, 1)
		}
		ws = append(ws, store.Window{
			ID:    store.WindowID(w.unit, name),
			Cost:  c,
			Rate:  max(q, 1) / w.guessPeriod().Seconds(),
			Burst: burst,
		})
	}
	return ws
}

// storeCap bounds what one request counts in a window of quota q (less
// headroom) in the fleet's budget: a request larger than the window is
// sent alone, when the fleet's window is whole, and takes all of it, as a
// process without a store sends it; it never owes the fleet many windows
// (an absurd max_tokens would have pushed the schedule days ahead). The
// usage its response tells is bounded the same way (permit.used).
func storeCap(c int64, q float64) int64 {
	return min(c, maxCost, int64(max(q, 1)))
}

// storeAcquire reserves the turn of pm, just admitted locally, in the
// fleet's shared budget, and waits for it. On error pm is given back.
func (p *pacer) storeAcquire(ctx context.Context, req *http.Request, pm *permit, o admitOpts, start time.Time) error {
	pt := pm.pt
	pt.mu.Lock()
	st := &storeTurn{part: store.Partition{Upstream: pt.upstream, Key: pt.label}, windows: pt.storeWindowsLocked(p, pm.est), caps: pt.storeCapsLocked(p)}
	pt.storeKeepLocked(ctx, p, st.windows)
	known := len(st.windows) > 0
	seq := pt.fleetSeq
	cold := 0
	if !known && !pt.known && p.coldStart > 0 {
		cold = p.coldStart
	}
	pt.mu.Unlock()

	now := time.Now()
	r := store.Reservation{Partition: st.part, Windows: st.windows, ObservedSeq: seq, ColdStart: cold}
	if p.maxWait > 0 {
		r.MaxWait = max(p.maxWait-now.Sub(start), time.Nanosecond)
	}
	if dl, ok := ctx.Deadline(); ok {
		left := max(dl.Sub(now), time.Nanosecond)
		if r.MaxWait == 0 || left < r.MaxWait {
			r.MaxWait = left
		}
	}
	var g store.Grant
	var evs []Event // EventStore, emitted once pt.mu is released
	for try := 0; ; try++ {
		var err error
		g, err = p.storeReserve(ctx, pt, r, o.stop)
		if err != nil {
			if ctx.Err() != nil || err == errStopped {
				pm.cancel()
				return cmp.Or(ctx.Err(), err)
			}
			return nil // the store decides nothing: paced locally
		}
		now = time.Now()
		pt.mu.Lock()
		evs = p.storeApplyLocked(pt, pm, g, now, evs)
		// A partition that learned its windows from the fleet's reading
		// reserves in them at once, rather than send uncounted.
		if try > 0 || known || !g.Shared || g.Refused || g.Breaker != store.BreakerClosed {
			break
		}
		ws := pt.storeWindowsLocked(p, pm.est)
		pt.storeKeepLocked(ctx, p, ws)
		if len(ws) == 0 {
			// Nothing known anywhere yet: what this request shows is
			// news to the fleet, before any reservation in a window.
			st.cold = g.Observed == nil && r.ObservedSeq == 0
			break
		}
		seq, caps := pt.fleetSeq, pt.storeCapsLocked(p)
		pt.mu.Unlock()
		p.cfg.Store.Settle(ctx, store.Settlement{Partition: st.part, Windows: st.windows, Grant: g})
		r.Windows, r.ObservedSeq, r.ColdStart, st.windows, st.caps = ws, seq, 0, ws, caps
	}
	st.grant = g
	pt.mu.Unlock()
	for _, ev := range evs {
		p.emit(ev)
	}

	switch {
	case g.Breaker == store.BreakerOpen && p.noBreaker:
		return nil // nothing reserved; this Transport has no circuit breaker
	case g.Breaker == store.BreakerOpen:
		pm.cancel()
		return &fleetOpenError{upstream: pt.upstream, until: now.Add(g.Wait)}
	case g.Refused:
		pm.cancel()
		werr := context.DeadlineExceeded
		reason := "pacing wait past the deadline"
		if dl, ok := ctx.Deadline(); !ok || !now.Add(g.Wait).After(dl) {
			werr, reason = ErrWaitTooLong, "pacing wait beyond MaxWait"
		}
		we := &WaitError{Wait: g.Wait, Partition: pt.label, Err: werr}
		ev := Event{Kind: EventRejected, Time: now, Upstream: pt.upstream, Partition: pt.label, Model: pt.model, Wait: g.Wait, Reason: reason + " (fleet)", Err: we}
		if req != nil && req.URL != nil {
			ev.Method, ev.Path = req.Method, req.URL.Path
		}
		p.emit(ev)
		return we
	}
	pt.mu.Lock()
	if pt.turns == nil {
		pt.turns = make(map[*permit]*storeTurn)
	}
	pt.turns[pm] = st
	pt.mu.Unlock()
	pm.stored = true
	if g.Wait <= 0 {
		return nil
	}
	if err := waitTurn(ctx, o.stop, nil, g.Wait, -1); err != nil {
		pm.cancel()
		return err
	}
	ev := Event{Kind: EventPace, Time: time.Now(), Upstream: pt.upstream, Partition: pt.label, Model: pt.model, Wait: g.Wait, Reason: "fleet"}
	if req != nil && req.URL != nil {
		ev.Method, ev.Path = req.Method, req.URL.Path
	}
	p.emit(ev)
	return nil
}

// storeSettle tells the store how pm's attempt ended: what its response
// announced, a cooldown after a 429, and the verdict of a fleet probe.
func (p *pacer) storeSettle(pm *permit, resp *http.Response, err error, status int, rl ratelimit.Limits, now time.Time) {
	pt := pm.pt
	pt.mu.Lock()
	st := pt.takeTurnLocked(pm)
	if st == nil {
		pt.mu.Unlock()
		return
	}
	pm.turn = st // for the usage its body tells (storeUsed)
	s := store.Settlement{Partition: st.part, Windows: st.windows, Grant: st.grant, Sent: true}
	if o := storeObservation(rl, now); o != nil && st.grant.Seq > 0 {
		o.Seq = st.grant.Seq
		if st.cold {
			for i := range o.Windows {
				o.Windows[i].Issued = 0
			}
		}
		pt.markGradualLocked(o)
		s.Observed = o
	}
	if s.Observed != nil && st.grant.Seq > pt.fleetSeq {
		pt.fleetSeq = st.grant.Seq // this process applied it already
	}
	if status == http.StatusTooManyRequests || (status >= 400 && rl.HasRetryAfter) {
		s.Cooldown = max(pt.cooldown.Sub(now), 0)
	}
	pt.mu.Unlock()
	s.Failed = (resp != nil && status >= 500) || (resp == nil && err != nil && !errors.Is(err, context.Canceled))
	if st.grant.Breaker == store.BreakerHalfOpen {
		switch {
		case resp != nil && status < 500:
			s.BreakerClosed = true
		case resp != nil || (err != nil && !errors.Is(err, context.Canceled)):
			s.BreakerOpen = fleetReopen
		}
	}
	p.cfg.Store.Settle(context.Background(), s)
}

// storeCancel gives pm's reservation in the store back: the request was
// not sent.
func (p *pacer) storeCancel(pm *permit) {
	pm.pt.mu.Lock()
	st := pm.pt.takeTurnLocked(pm)
	pm.pt.mu.Unlock()
	if st == nil {
		return
	}
	p.cfg.Store.Settle(context.Background(), store.Settlement{Partition: st.part, Windows: st.windows, Grant: st.grant})
}

// takeTurnLocked returns pm's reservation and forgets it.
func (pt *partition) takeTurnLocked(pm *permit) *storeTurn {
	st := pt.turns[pm]
	delete(pt.turns, pm)
	return st
}

// storeBreakerOpen opens the fleet's circuit for upstream for d: this
// process's circuit opened.
func (p *pacer) storeBreakerOpen(upstream string, d time.Duration) {
	if p == nil || p.cfg.Store == nil || p.cfg.Disabled || d <= 0 {
		return
	}
	p.cfg.Store.Settle(context.Background(), store.Settlement{Partition: store.Partition{Upstream: upstream}, BreakerOpen: d})
}

// markGradualLocked marks the windows of o that this partition knows
// refill gradually (a bucket or a sliding window), so that the store
// does not hold them to their reset.
func (pt *partition) markGradualLocked(o *store.Observation) {
	for i := range o.Windows {
		ow := &o.Windows[i]
		for j := range pt.windows {
			w := &pt.windows[j]
			if !w.config && store.WindowID(w.unit, w.name) == ow.ID {
				ow.Gradual = w.kind == kindBucket || w.kind == kindSliding
			}
		}
	}
}
