package steady

import (
	"context"
	"math"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/steady-go/steady/internal/ascii"
	"github.com/steady-go/steady/ratelimit"
)

// Priority orders the requests waiting in a saturated partition: higher
// priorities go first. Set it on a request's context with [WithPriority];
// the zero value is [PriorityDefault], which behaves exactly as a request
// without a priority. While a partition's limits have room, every request
// goes at once whatever its priority.
type Priority int8

// The named priorities. Values above PriorityInteractive count as
// interactive, below PriorityBatch as batch.
const (
	// PriorityBatch requests go after every other waiting request, and
	// leave PacingConfig.Reserve of each window's burst unused, for
	// interactive requests that may arrive while they are backlogged.
	// While higher priorities keep a partition saturated, they still get
	// at least a twentieth of its admissions (see [PacingConfig]).
	PriorityBatch Priority = -1
	// PriorityDefault is a request's priority when none is set.
	PriorityDefault Priority = 0
	// PriorityInteractive requests go before every default and batch
	// request waiting in their partition.
	PriorityInteractive Priority = 1
)

// String returns "batch", "default" or "interactive": a bounded label.
func (p Priority) String() string {
	switch lane := laneOf(p); lane {
	case laneBatch:
		return "batch"
	case laneInteractive:
		return "interactive"
	}
	return "default"
}

// Lanes of a partition's queue, lowest first: one per priority, and one
// for a circuit breaker's half-open probe, ahead of all.
const (
	laneBatch = iota
	laneDefault
	laneInteractive
	laneUrgent
	nLanes
)

func laneOf(p Priority) uint8 {
	switch {
	case p < 0:
		return laneBatch
	case p > 0:
		return laneInteractive
	}
	return laneDefault
}

// minShare is the least share of a saturated partition's admissions each
// lower lane (default, batch) gets while higher lanes are backlogged: a
// lower lane is never starved.
const minShare = 0.05

// defaultReserve is PacingConfig.Reserve's default.
const defaultReserve = 0.10

// ctxUsed is set once any context carries a priority or a tenant: until
// then, requests never look for them (nothing extra on the hot path).
var ctxUsed atomic.Bool

type priorityKey struct{}
type tenantKey struct{}

// WithPriority returns a copy of ctx whose requests wait with priority p in
// saturated partitions. Requests made with the returned context through
// the SDK carry it to the Transport unchanged.
func WithPriority(ctx context.Context, p Priority) context.Context {
	ctxUsed.Store(true)
	return context.WithValue(ctx, priorityKey{}, p)
}

// WithTenant returns a copy of ctx whose requests belong to tenant id: when
// PacingConfig.Tenant is nil, the backlogged tenants of one priority take
// turns in a saturated partition, instead of going in arrival order.
func WithTenant(ctx context.Context, id string) context.Context {
	ctxUsed.Store(true)
	return context.WithValue(ctx, tenantKey{}, id)
}

// priorityOf returns the priority ctx carries; the default if none.
func priorityOf(ctx context.Context) Priority {
	if ctx == nil || !ctxUsed.Load() {
		return PriorityDefault
	}
	p, _ := ctx.Value(priorityKey{}).(Priority)
	return p
}

// reqPriority returns the priority of req's context.
func reqPriority(req *http.Request) Priority {
	if req == nil || !ctxUsed.Load() {
		return PriorityDefault
	}
	return priorityOf(req.Context())
}

// tenantOf returns req's tenant and its weight.
func (p *pacer) tenantOf(ctx context.Context, req *http.Request) (string, float64) {
	if p.cfg.Tenant != nil {
		id, w := p.cfg.Tenant(req)
		return ascii.BoundName(id), w
	}
	if ctx == nil || !ctxUsed.Load() {
		return "", 1
	}
	id, _ := ctx.Value(tenantKey{}).(string)
	return ascii.BoundName(id), 1
}

// reserveOf reads PacingConfig.Reserve.
func reserveOf(r float64) float64 {
	switch {
	case r == 0 || math.IsNaN(r):
		return defaultReserve
	case r < 0:
		return 0
	}
	return min(r, 0.5)
}

// keepUnits is what of w a request must leave unused when it keeps share
// of the window's burst for others: whole requests in a requests window.
func keepUnits(w *window, share, h float64) float64 {
	if share <= 0 {
		return 0
	}
	k := share * w.capacity(h)
	if w.unit == ratelimit.UnitRequests {
		return max(math.Round(k), 1)
	}
	return k
}

// flow is one tenant's waiting requests in a lane, first come first served.
type flow struct {
	tenant string
	weight float64
	q      queue
	queued costs
	// last is the virtual finish tag of its newest waiter.
	last float64
}

func (f *flow) step() float64 {
	if f.weight > 0 && f.weight < math.Inf(1) {
		return 1 / f.weight
	}
	return 1
}

// lane is one priority's waiting requests: a flow per backlogged tenant,
// served by start-time fair queuing (each tenant's next request is tagged
// with the lane's virtual time or its previous tag, whichever is later,
// plus one over its weight; the lowest tag goes first).
type lane struct {
	n      int
	queued costs
	vtime  float64
	plain  flow             // tenant ""
	flows  []*flow          // backlogged tenants other than "", by arrival
	byID   map[string]*flow // the same, by tenant
	active int              // flows with waiters, plain included
}

// first returns the lane's next waiter.
func (l *lane) first() *waiter {
	var best *waiter
	if l.plain.q.n > 0 {
		best = l.plain.q.head
	}
	for _, f := range l.flows {
		h := f.q.head
		if best == nil || h.tag < best.tag || (h.tag == best.tag && h.seq < best.seq) {
			best = h
		}
	}
	return best
}

// flowFor returns the flow of tenant id, made if needed.
func (l *lane) flowFor(id string, weight float64) *flow {
	if id == "" {
		return &l.plain
	}
	if f := l.byID[id]; f != nil {
		f.weight = weight
		return f
	}
	if l.byID == nil {
		l.byID = make(map[string]*flow)
	}
	f := &flow{tenant: id, weight: weight}
	l.byID[id] = f
	l.flows = append(l.flows, f)
	return f
}

// lanes is a partition's queue of waiting requests: one lane per priority.
// head is the request to go next: the urgent lane's first, else the first
// of a lower lane whose minimum share is due, else the first of the highest
// lane with waiters. Without priorities or tenants it is a single queue,
// first come first served. All fields are guarded by the partition's mu.
type lanes struct {
	head *waiter
	n    int
	lane *[nLanes]lane // nil until a request first waits
	// credit is, for the batch and default lanes, the admissions due to
	// them for their minimum share while higher lanes are backlogged.
	credit [laneInteractive]float64
	seq    uint64
}

// pushBack queues w in its lane and tenant's flow, w.lane, w.tenant and
// w.weight being set.
func (q *lanes) pushBack(w *waiter) {
	if q.lane == nil {
		q.lane = new([nLanes]lane)
	}
	l := &q.lane[w.lane]
	f := l.flowFor(w.tenant, w.weight)
	w.fl = f
	if f.q.n == 0 {
		l.active++
		f.last = max(f.last, l.vtime)
	}
	w.tag = max(f.last, l.vtime)
	f.last = w.tag + f.step()
	q.seq++
	w.seq = q.seq
	f.q.pushBack(w)
	f.queued.add(w.est)
	l.n++
	l.queued.add(w.est)
	q.n++
	q.pick()
}

// pushFront queues w ahead of every other waiter (a half-open probe).
func (q *lanes) pushFront(w *waiter) {
	w.lane, w.tenant = laneUrgent, ""
	if q.lane == nil {
		q.lane = new([nLanes]lane)
	}
	l := &q.lane[laneUrgent]
	w.fl = &l.plain
	if l.plain.q.n == 0 {
		l.active++
	}
	q.seq++
	w.seq, w.tag = q.seq, 0
	l.plain.q.pushFront(w)
	l.plain.queued.add(w.est)
	l.n++
	l.queued.add(w.est)
	q.n++
	q.pick()
}

// remove takes w out of the queue.
func (q *lanes) remove(w *waiter) {
	l, f := &q.lane[w.lane], w.fl
	f.q.remove(w)
	f.queued.sub(w.est)
	l.n--
	l.queued.sub(w.est)
	q.n--
	if f.q.n == 0 {
		l.active--
		if f != &l.plain {
			delete(l.byID, f.tenant)
			for i, g := range l.flows {
				if g == f {
					l.flows = slices.Delete(l.flows, i, i+1)
					break
				}
			}
		}
		if l.n == 0 && w.lane < laneInteractive {
			q.credit[w.lane] = 0
		}
	}
	q.pick()
}

// admitted records that w, still queued, is being sent: the lane's virtual
// time moves to its tag, and the minimum shares of lower lanes accrue.
func (q *lanes) admitted(w *waiter) {
	l := &q.lane[w.lane]
	l.vtime = max(l.vtime, w.tag)
	if w.lane >= laneUrgent {
		return
	}
	if w.lane < laneInteractive && q.higherWaiting(w.lane) {
		q.credit[w.lane] = max(q.credit[w.lane]-1, 0)
	}
	for b := uint8(laneBatch); b < w.lane; b++ {
		if q.lane[b].n > 0 {
			q.credit[b] = min(q.credit[b]+minShare/(1-minShare), 2)
		}
	}
}

// higherWaiting reports whether a lane above b (the urgent one aside) has
// waiters.
func (q *lanes) higherWaiting(b uint8) bool {
	for l := b + 1; l < laneUrgent; l++ {
		if q.lane[l].n > 0 {
			return true
		}
	}
	return false
}

// waiting returns how many wait in lane b.
func (q *lanes) waiting(b uint8) int {
	if q.lane == nil {
		return 0
	}
	return q.lane[b].n
}

// pick sets head.
func (q *lanes) pick() {
	q.head = nil
	if q.n == 0 {
		return
	}
	if q.lane[laneUrgent].n > 0 {
		q.head = q.lane[laneUrgent].plain.q.head
		return
	}
	for b := uint8(laneBatch); b < laneInteractive; b++ {
		if q.lane[b].n > 0 && q.credit[b] >= 1 && q.higherWaiting(b) {
			q.head = q.lane[b].first()
			return
		}
	}
	for b := laneInteractive; b >= laneBatch; b-- {
		if q.lane[b].n > 0 {
			q.head = q.lane[b].first()
			return
		}
	}
}

// simple reports whether the queue is one first-come-first-served list
// (every waiter in one flow), so that w.next walks it in order.
func (q *lanes) simple() bool {
	if q.lane == nil {
		return true
	}
	active := 0
	for i := range q.lane {
		active += q.lane[i].active
	}
	return active <= 1
}

// keepLocked is what a request of lane b leaves unused of each window:
// for a batch request while no interactive request waits (those that
// wait go first anyway), PacingConfig.Reserve, and one request once the
// batch has been sent evenly for a whole window (the quota then comes
// back one request at a time, and interactive requests take it first).
func (pt *partition) keepLocked(p *pacer, b uint8, now time.Time) float64 {
	if b != laneBatch || p.reserve <= 0 || pt.q.waiting(laneInteractive) > 0 {
		return 0
	}
	if s := pt.prio.pacedSince; !s.IsZero() {
		if _, period := pt.batchGapLocked(p, TokenEstimate{}); now.Sub(s) >= period {
			return math.SmallestNonzeroFloat64 // one request
		}
	}
	return p.reserve
}

// readyKeepLocked is readyAtLocked for a request that leaves keep of each
// window unused.
func (pt *partition) readyKeepLocked(p *pacer, now time.Time, ahead costs, keep float64, est TokenEstimate, optimistic bool) time.Time {
	pt.keep = keep
	t := pt.readyAtLocked(p, now, ahead, est, optimistic)
	pt.keep = 0
	return t
}

// ahead returns what goes before w, not yet queued, by the order of the
// queue as it stands (a lower lane's minimum share aside).
func (q *lanes) ahead(w *waiter) costs {
	var c costs
	if q.lane == nil {
		return c
	}
	for b := w.lane + 1; b < nLanes; b++ {
		c.plus(q.lane[b].queued)
	}
	l := &q.lane[w.lane]
	if l.active == 0 {
		return c
	}
	own := &l.plain
	if w.tenant != "" {
		own = l.byID[w.tenant]
	}
	tag := l.vtime
	if own != nil {
		tag = max(own.last, l.vtime)
		c.plus(own.queued)
	}
	if own != &l.plain {
		c.plus(l.plain.before(tag))
	}
	for _, f := range l.flows {
		if f != own {
			c.plus(f.before(tag))
		}
	}
	return c
}

// before is what of f goes before a waiter tagged tag: its waiters' tags
// grow by f.step() from its head's.
func (f *flow) before(tag float64) costs {
	if f.q.n == 0 || tag < f.q.head.tag {
		return costs{}
	}
	k := int64(math.Floor((tag-f.q.head.tag)/f.step())) + 1
	if k >= int64(f.q.n) {
		return f.queued
	}
	n := int64(f.q.n)
	return costs{req: k, in: f.queued.in * k / n, out: f.queued.out * k / n}
}

// order returns every waiter in the order they go (lanes from the highest,
// tags within a lane), the lower lanes' minimum shares aside.
func (q *lanes) order() []*waiter {
	out := make([]*waiter, 0, q.n)
	for b := laneUrgent; b >= laneBatch; b-- {
		l := &q.lane[b]
		if l.n == 0 {
			continue
		}
		var heads []*waiter
		if l.plain.q.n > 0 {
			heads = append(heads, l.plain.q.head)
		}
		for _, f := range l.flows {
			heads = append(heads, f.q.head)
		}
		for len(heads) > 0 {
			bi := 0
			for i, h := range heads[1:] {
				if h.tag < heads[bi].tag || (h.tag == heads[bi].tag && h.seq < heads[bi].seq) {
					bi = i + 1
				}
			}
			out = append(out, heads[bi])
			if nx := heads[bi].next; nx != nil {
				heads[bi] = nx
			} else {
				heads = append(heads[:bi], heads[bi+1:]...)
			}
		}
	}
	return out
}

// last returns the waiter that goes last as the queue stands (the lowest
// lane's highest tag), or nil when none waits.
func (q *lanes) last() *waiter {
	if q.n == 0 {
		return nil
	}
	for b := range q.lane {
		l := &q.lane[b]
		if l.n == 0 {
			continue
		}
		best := l.plain.q.tail
		for _, f := range l.flows {
			if t := f.q.tail; best == nil || t.tag > best.tag || (t.tag == best.tag && t.seq > best.seq) {
				best = t
			}
		}
		return best
	}
	return nil
}

// waitingBy returns the waiters per priority, nil when only default
// requests wait.
func (q *lanes) waitingBy() map[Priority]int {
	if q.waiting(laneBatch) == 0 && q.waiting(laneInteractive) == 0 {
		return nil
	}
	m := make(map[Priority]int, 3)
	for b, p := range [...]Priority{PriorityBatch, PriorityDefault, PriorityInteractive} {
		if n := q.lane[b].n; n > 0 {
			m[p] = n
		}
	}
	if n := q.lane[laneUrgent].n; n > 0 {
		m[PriorityDefault] += n
	}
	return m
}

// why says why a swept waiter's place moved past its deadline, when
// requests that arrived after it went before it: higher lanes, or other
// tenants' turns.
func bumpedWhy(higher, tenants bool) string {
	switch {
	case higher:
		return "higher-priority requests arrived"
	case tenants:
		return "other tenants' turns came first"
	}
	return ""
}

// plus adds o's costs.
func (c *costs) plus(o costs) {
	c.req += o.req
	c.in += o.in
	c.out += o.out
}

// replanLanesLocked is replanLocked for a queue of several lanes or
// tenants: it walks the waiters in the order they go.
func (pt *partition) replanLanesLocked(p *pacer, now time.Time) {
	var ahead costs
	var keep float64
	var maxHigher, maxSame uint64 // the latest arrival ahead, of a higher lane and of the same one
	lastLane := uint8(nLanes)
	for _, w := range pt.q.order() {
		if w.lane != lastLane {
			if lastLane < nLanes {
				maxHigher, maxSame = max(maxHigher, maxSame), 0
			}
			lastLane = w.lane
			keep = pt.keepLocked(p, w.lane, now)
		}
		if !w.deadline.IsZero() {
			if at := pt.refusePlanLocked(p, now, ahead, keep, w.est); at.After(w.deadline) {
				w.why = bumpedWhy(maxHigher > w.seq, maxSame > w.seq)
				pt.sweepLocked(w, at)
				continue
			}
		}
		ahead.add(w.est)
		maxSame = max(maxSame, w.seq)
	}
}

// prioState is a partition's memory for its batch lane: when its queued
// requests may next go, and since when they have been sent evenly.
type prioState struct {
	batchNext  time.Time
	pacedSince time.Time
	agedAt     time.Time // with a Store: when a batch request last took its place in line by age
}

// laneReadyLocked is readyAtLocked for the head of lane b. A batch request
// leaves its keep unused, and queued batch requests go one at a time, at
// the pace of the tightest window: what the batch uses then comes back
// spread over the window rather than in one burst, so that an interactive
// request finds the next unit within about one request interval.
func (pt *partition) laneReadyLocked(p *pacer, now time.Time, b uint8, est TokenEstimate, optimistic bool) time.Time {
	t := pt.readyKeepLocked(p, now, costs{}, pt.keepLocked(p, b, now), est, optimistic)
	if b == laneBatch && p.reserve > 0 {
		t = maxTime(t, pt.prio.batchNext)
	}
	return t
}

// laneAdmittedLocked records that w, still queued, is being sent.
func (pt *partition) laneAdmittedLocked(p *pacer, w *waiter, now time.Time) {
	pt.q.admitted(w)
	if w.lane == laneBatch && p.reserve > 0 {
		gap, _ := pt.batchGapLocked(p, w.est)
		// Catching up by up to two intervals: a timer that fires late
		// does not cost the batch its turn.
		pt.prio.batchNext = maxTime(pt.prio.batchNext, now.Add(-2*gap)).Add(gap)
		if pt.prio.pacedSince.IsZero() {
			pt.prio.pacedSince = now
		}
	}
}

// batchGapLocked returns the time a request of estimate est takes of the
// tightest known window at its whole rate (this process's share of it),
// and the longest window's length.
func (pt *partition) batchGapLocked(p *pacer, est TokenEstimate) (gap, period time.Duration) {
	for i := range pt.windows {
		w := &pt.windows[i]
		if !w.known() {
			continue
		}
		n := cost(w.unit, est)
		per := w.guessPeriod()
		period = max(period, per)
		if n <= 0 {
			continue
		}
		// At the window's whole rate: its headroom is the pacer's to
		// spend or keep, by the window's own plan.
		gap = max(gap, durationOf(float64(min(n, maxCost))*per.Seconds()/max(w.share*w.quota(), 1)))
	}
	return gap, period
}
