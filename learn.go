package steady

import (
	"context"
	"slices"
	"time"

	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/store"
)

// This file settles a permit with the tokens its response used, and learns
// from them what a request reserves: per partition and model, a high
// quantile of the output tokens recent responses used.

// Learned estimates: the last learnWindow outputs of a model, of which the
// learnQuantile is reserved once learnMin are known.
const (
	learnWindow   = 64
	learnMin      = 8
	learnQuantile = 0.95
	// learnModels bounds the models a partition learns for (a partition
	// keyed by PacingConfig.Key may hold several); the least recently
	// seen is forgotten.
	learnModels = 8
)

// learner is what a partition learned of one model's outputs. Guarded by
// the partition's mu.
type learner struct {
	model string
	last  time.Time // its latest use, for replacement
	outs  [learnWindow]int64
	n, i  int   // how many outs are filled; the next to write
	q     int64 // the quantile of outs; valid when n >= learnMin
	// errs are the latest errors of estimates (reserved minus used, all
	// tokens), for the snapshot.
	errs   [learnWindow]int64
	en, ei int
}

// add records one response's output tokens and the error of its
// estimate.
func (l *learner) add(out, errTokens int64) {
	l.outs[l.i] = out
	l.i = (l.i + 1) % learnWindow
	l.n = min(l.n+1, learnWindow)
	if l.n >= learnMin {
		var s [learnWindow]int64
		v := s[:l.n]
		copy(v, l.outs[:l.n])
		slices.Sort(v)
		k := min(int(float64(l.n)*learnQuantile), l.n-1)
		l.q = v[k]
	}
	l.errs[l.ei] = errTokens
	l.ei = (l.ei + 1) % learnWindow
	l.en = min(l.en+1, learnWindow)
}

// meanErr is the mean error of the recent estimates.
func (l *learner) meanErr() float64 {
	if l.en == 0 {
		return 0
	}
	var sum int64
	for _, e := range l.errs[:l.en] {
		sum += e
	}
	return float64(sum) / float64(l.en)
}

// learnerLocked returns the learner of model, adding one if add is set.
func (pt *partition) learnerLocked(model string, now time.Time, add bool) *learner {
	var oldest *learner
	for _, l := range pt.learners {
		if l.model == model {
			l.last = now
			return l
		}
		if oldest == nil || l.last.Before(oldest.last) {
			oldest = l
		}
	}
	if !add {
		return nil
	}
	if len(pt.learners) < learnModels {
		l := &learner{model: model, last: now}
		pt.learners = append(pt.learners, l)
		return l
	}
	*oldest = learner{model: model, last: now}
	return oldest
}

// learnedLocked returns est with its output reserved as learned: the
// quantile of the model's recent outputs when it is lower than the
// request's maximum (or when the request states none), never more than
// the maximum. It applies only where usage counts (see usageCountsLocked).
func (pt *partition) learnedLocked(model string, est TokenEstimate, now time.Time) TokenEstimate {
	if !pt.usageCountsLocked() {
		return est
	}
	l := pt.learnerLocked(model, now, false)
	if l == nil || l.n < learnMin {
		return est
	}
	if est.Output == 0 || l.q < est.Output {
		est.Output = l.q
	}
	return est
}

// usageCountsLocked reports whether what responses say they used settles
// the partition's token windows and teaches its estimates: when the
// provider counts by usage (PacingConfig.TokensByUsage).
func (pt *partition) usageCountsLocked() bool { return pt.byUsage }

// used settles pm with the tokens its response said it used, once known
// (the body ended, or was closed): the difference from its estimate is
// given back to, or taken from, every token window of its partition and,
// with a store, the fleet's; the partition learns the output. outOK is
// false when the body told the input alone (a stream closed before its
// final usage): the output estimate then stands. It must be called after
// settle, at most once (later calls do nothing); nil-safe.
func (pm *permit) used(u TokenEstimate, outOK bool) {
	if pm == nil || !pm.done.Load() || pm.reconciled.Swap(true) {
		return
	}
	if !outOK {
		u.Output = pm.est.Output
	}
	pt, p := pm.pt, pm.p
	now := time.Now()
	pt.mu.Lock()
	counts := pt.usageCountsLocked()
	if counts {
		pt.advanceLocked(p, now)
		for i := range pt.windows {
			w := &pt.windows[i]
			if w.unit == ratelimit.UnitRequests {
				continue
			}
			d := min(cost(w.unit, u), maxCost) - min(cost(w.unit, pm.est), maxCost)
			w.correct(pm.landedAt, now, float64(d), p.headroom)
		}
	}
	if outOK {
		pt.learnerLocked(pm.model, now, true).add(u.Output, pm.est.Total()-u.Total())
	}
	pt.wakeHeadLocked()
	label, upstream := pt.label, pt.upstream
	pt.mu.Unlock()
	if pm.turn != nil && counts {
		p.storeUsed(pm, u)
	}
	p.emit(Event{Kind: EventUsage, Time: now, Upstream: upstream, Partition: label, Model: pt.model, Used: u, Reserved: pm.est})
}

// storeUsed tells the store what pm's attempt used, per window of its
// reservation: the difference from the reserved cost is charged or given
// back fleet-wide. It is a second settlement of the same grant, after the
// one made when the response's headers came: Sent, with Actual set and
// nothing else (see store.Store).
func (p *pacer) storeUsed(pm *permit, u TokenEstimate) {
	st := pm.turn
	if st == nil || !st.grant.Shared && len(st.windows) == 0 {
		return
	}
	actual := make([]int64, len(st.windows))
	diff := false
	for i, w := range st.windows {
		actual[i] = -1
		if un, _, ok := store.ParseWindowID(w.ID); ok && un != ratelimit.UnitRequests {
			actual[i] = st.capped(i, cost(un, u)) // bounded as its reservation was
			diff = diff || actual[i] != w.Cost
		}
	}
	if !diff {
		return
	}
	p.cfg.Store.Settle(context.Background(), store.Settlement{Partition: st.part, Windows: st.windows, Grant: st.grant, Sent: true, Actual: actual})
}

// correct charges a use answered at landed d more units (or gives back
// -d), its actual cost being known at now. A window reset since is whole
// anyway. In a window that gives each use back one period after it, the
// use's entry in the log is corrected, so that what comes back is what was
// used; what the log no longer holds came back already, and is not given
// back twice.
func (w *window) correct(landed, now time.Time, d float64, h float64) {
	if !w.known() || d == 0 || landed.IsZero() || landed.Before(w.lastUp) {
		return
	}
	switch w.kind {
	case kindSliding, kindLocal:
		if !w.shared() {
			rest := w.correctLog(landed.UnixNano(), d)
			if d < 0 {
				d -= rest
			} else if rest > 0 {
				w.landed(now, rest) // past the log: back one period from now
			}
		}
	case kindUnknown:
		w.correctLog(landed.UnixNano(), d) // history only
	}
	w.avail = min(w.avail-d, w.capacity(h))
}

// maxCorrectScan bounds how far back correctLog looks for a use's entry.
const maxCorrectScan = 512

// correctLog applies d to the log's entry of the use at t (Unix
// nanoseconds), or to the newest entry when the log is full (it merges
// uses into it), and returns what it could not apply.
func (w *window) correctLog(t int64, d float64) float64 {
	last := len(w.log) - 1
	full := len(w.log)-w.head >= maxLog
	for j := last; j >= w.head && j > last-maxCorrectScan; j-- {
		e := &w.log[j]
		if e.t < t {
			break
		}
		if e.t != t && !(full && j == last) {
			continue
		}
		if d > 0 {
			e.n += d
			w.logSum += d
			return 0
		}
		g := min(-d, e.n)
		e.n -= g
		w.logSum -= g
		if d += g; d == 0 {
			return 0
		}
	}
	return d
}
