package steady

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/store"
)

// PacingConfig configures proactive throttling. Limits are kept per
// partition (by default: upstream host, credential fingerprint and model).
// Requests of a partition wait their turn in one queue, first come first
// served, unless they carry a [Priority] or a tenant (see Tenant): then
// higher priorities go first and backlogged tenants take turns. What the provider announces as remaining is sent at once (less
// headroom); then the queue waits for the quota to come back: at the
// announced reset for a window that resets, gradually for a token bucket,
// one period after each use for a sliding window (recognized from how the
// headers change). Every response re-plans the queue: the request at its
// head wakes when it may go, or when news arrives, and checks the latest
// state before it goes. A 429 or Retry-After pauses the partition until the
// hinted time. When several processes share a key without coordination and
// what remains falls faster than this process sends, it paces its share.
//
// The caller's context governs how long a request may wait: a request
// fails in pacing only when the time planned for it is past its context's
// deadline (then at once) or its context ends. A request on a context
// without a deadline waits its turn, however long the queue. When a
// provider announces no limits and none are configured, the partition's
// pace is discovered from what the provider accepts and refuses (as
// congestion control finds a link's rate): it never refuses a request,
// only shapes when requests go. The zero value paces by the headers
// alone, with the defaults documented on each field.
type PacingConfig struct {
	// Disabled turns pacing off: requests are sent at once and headers
	// are not read. False (the zero value) paces.
	Disabled bool

	// Headroom is the fraction of every limit kept unused as a margin, in
	// [0, 0.5]. Zero means 0.02 (2%); a negative value means none.
	Headroom float64

	// RequestsPerMinute and TokensPerMinute state a known tier's limits
	// for every partition. They apply from the first request, before any
	// header arrives, and alongside what headers announce: the stricter
	// wins. This process sends at most the quota (less headroom) in any
	// minute. Zero or negative means not known.
	RequestsPerMinute int64
	TokensPerMinute   int64

	// Key returns the partition key of a request, given the model named in
	// its JSON body ("" when none). Nil means upstream host, a fingerprint
	// of the credential (the Authorization, Api-Key, X-Api-Key or
	// X-Goog-Api-Key header, else the key query parameter; 64 bits of
	// SHA-256 over the credential and where it was carried: the credential
	// itself is never stored) and the model. The key is shown
	// as the partition's label in snapshots and events, so it must not
	// hold a secret.
	Key func(req *http.Request, model string) string

	// Estimator returns the tokens req counts against token limits. body
	// yields req's body, read through req.GetBody: a copy, never the body
	// that will be sent. It is valid only during the call; whatever the
	// Estimator leaves unread steady reads on for the model, so that the
	// body is read once in all. body is empty when the request has none or
	// it cannot be replayed. The Estimator decides how much of the body it
	// keeps in memory; [EstimateTokens] gives the default's arithmetic on
	// bytes. Nil means an estimate from the JSON body: its text at about
	// four bytes a token plus its maximum output tokens, times n. A request
	// without a replayable JSON body counts one request and no tokens.
	Estimator func(req *http.Request, body io.Reader) TokenEstimate

	// MaxPartitions bounds how many partitions are kept. When it is
	// reached, partitions idle for IdleTimeout are dropped, and if none
	// is, the least recently used one with nothing in flight or waiting;
	// partitions in use are never dropped, so the count can exceed the
	// bound by the number of partitions busy at once. Idle partitions are
	// also swept every 256 new partitions. There are no background
	// goroutines: all of this happens when a partition is made. Zero
	// means 1024; a negative value means no bound.
	MaxPartitions int

	// IdleTimeout is how long a partition stays unused before it may be
	// dropped. Zero means 10 minutes; a negative value means never (only
	// MaxPartitions drops partitions).
	IdleTimeout time.Duration

	// ColdStart is how many requests of a partition may be in flight
	// before its first response tells its limits (for a provider that
	// announces nothing, until its pace rests on a 429 or enough
	// successes), and after a 429 until a request succeeds again; the
	// rest wait. Zero means 4; a negative value means no bound.
	ColdStart int

	// MaxWait is an optional load-shedding cap on how long a request may
	// wait in pacing: a request whose planned wait is longer fails at once
	// with a [*WaitError] matching [ErrWaitTooLong]. Zero (the default) and
	// negative mean no cap: only the caller's context bounds the wait.
	MaxWait time.Duration

	// Store, if set, shares this Transport's pacing partitions with other
	// processes through it (see package steadyredis; package store holds
	// the seam for its implementers). Nil means each Transport paces
	// alone.
	Store store.Store

	// TokensByUsage says that the provider counts a request's tokens by
	// what its response says it used, charged once known (as gateways
	// such as LiteLLM and Envoy AI Gateway do, and Anthropic for output
	// tokens), rather than by its max_tokens when it arrives (as OpenAI
	// does). Set, each request's tokens are settled with the usage its
	// body reports as the caller reads it (in the partition and, with a
	// Store, fleet-wide), and a request reserves for its output a high
	// quantile of its model's recent outputs (95% of the last 64) instead
	// of its max_tokens when that is lower, never more than max_tokens.
	// An Estimator still decides the estimate. False (the zero value)
	// reserves max_tokens and settles nothing by usage; what usage
	// teaches still shows in events ([EventUsage]) and snapshots.
	TokensByUsage bool

	// Tenant returns the tenant of a request and its weight, so that
	// within one priority the tenants with requests waiting take turns in
	// a saturated partition (weighted fair queuing: a tenant of weight 2
	// gets twice the turns of one of weight 1), instead of going in
	// arrival order. A weight of zero or less means 1. Nil means the
	// tenant set with [WithTenant] on the request's context, weight 1.
	// Requests of tenant "" form one tenant.
	Tenant func(req *http.Request) (id string, weight float64)

	// Reserve is the share of each window, in [0, 0.5], that
	// [PriorityBatch] requests leave unused for interactive requests that
	// may arrive while the batch is backlogged. A backlogged batch is
	// sent evenly at the window's rate, so that what it uses comes back
	// spread over the window; once it has been for a whole window, it
	// keeps only one request unused (what it keeps is lost in every
	// period of a window that counts the last period's sends), and an
	// interactive request waits at most about one request interval. Zero
	// means 0.1; a negative value means none, and no even pace. Whatever
	// the priorities, default and batch requests each get at least one
	// admission in twenty while higher priorities keep the partition
	// saturated: no priority starves.
	Reserve float64
}

// Defaults for [PacingConfig] fields left zero.
const (
	defaultHeadroom      = 0.02             // PacingConfig.Headroom
	defaultMaxPartitions = 1024             // PacingConfig.MaxPartitions
	defaultIdleTimeout   = 10 * time.Minute // PacingConfig.IdleTimeout
	defaultColdStart     = 4                // PacingConfig.ColdStart
)

// defaultCooldown is how long a partition pauses after a 429 that carries
// no hint and names no exhausted window.
const defaultCooldown = time.Second

// maxHint bounds every wait read from a server.
const maxHint = ratelimit.MaxHint

// maxHintWait bounds a cooldown read from a server's hint. A longer hint
// (Retry-After: 86400) fails at once the requests whose deadline comes
// before it; the others wait this long, and then a few go out to ask again,
// so that a caller without a deadline gets the server's answer rather than
// waiting a day.
const maxHintWait = time.Minute

// rampDone is how many successes end the ramp after a cold start or a
// 429.
const rampDone = 64

// coldStartWait is the longest the queue waits for a response to tell a
// partition's limits before it sends anyway: a response that never comes
// must not hold the partition forever.
const coldStartWait = 30 * time.Second

// ErrWaitTooLong is matched, with errors.Is, by the error of a request whose
// pacing wait would exceed [PacingConfig.MaxWait].
var ErrWaitTooLong = errors.New("steady: pacing wait exceeds the maximum")

// errStopped is acquire's error when its admitOpts.stop is closed: the
// request must be decided at once (its upstream's circuit opened). It holds
// no reservation and nothing in flight.
var errStopped = errors.New("steady: pacing stopped")

// errMoved is acquire's error when admitOpts.move found another upstream
// that sends the request sooner than its own queue would: the request
// left the queue, and is routed again. It holds nothing.
var errMoved = errors.New("steady: moved to another upstream")

// WaitError reports a request refused by pacing without being sent,
// because the time planned for it is past its context's deadline (Err is
// context.DeadlineExceeded) or beyond MaxWait (Err is ErrWaitTooLong).
type WaitError struct {
	Wait      time.Duration // how long the request would have had to wait
	Partition string        // the partition's label
	Err       error         // context.DeadlineExceeded or ErrWaitTooLong
	// Reason says why the request's place moved past its deadline while
	// it waited, when requests that arrived after it went first: "higher-
	// priority requests arrived" or "other tenants' turns came first";
	// "" otherwise.
	Reason string
}

// Error describes the refused wait.
func (e *WaitError) Error() string {
	why := "past the deadline"
	if e.Err == ErrWaitTooLong {
		why = "beyond PacingConfig.MaxWait"
	}
	if e.Reason != "" {
		why += ": " + e.Reason
	}
	return fmt.Sprintf("steady: pacing wait of %v in partition %q is %s", e.Wait, e.Partition, why)
}

// Unwrap returns context.DeadlineExceeded or ErrWaitTooLong.
func (e *WaitError) Unwrap() error { return e.Err }

// admitOpts are the options of one acquire. stop (nil: never) is closed
// when the request must be decided at once: acquire then returns
// errStopped. urgent puts the request ahead of its partition's queue (a
// half-open probe); it still counts in the limits. body, if set, keeps
// what the first acquire of a request read of its body, so that its
// retries do not read it again. route is the name of the [Upstream] the
// request is routed to ("" when not routed): its partitions are its own.
// move, if set, is asked, with no lock held, whether another upstream
// sends the request sooner than at, the time planned for it in its queue
// (or past its deadline, if that is why it is refused): when it says so,
// the request leaves the queue and acquire returns errMoved.
type admitOpts struct {
	stop   <-chan struct{}
	urgent bool
	body   *bodyInfo
	route  string
	move   func(at time.Time) bool
}

// bodyInfo is what pacing read of a request's body: its model and its
// token estimate.
type bodyInfo struct {
	done   bool
	model  string
	est    TokenEstimate
	stream bool // the body asks for a stream
}

// inspect returns what pacing needs of req's body, read once per request
// when o.body keeps it.
func (p *pacer) inspect(req *http.Request, o admitOpts) (string, TokenEstimate) {
	if o.body != nil && o.body.done {
		return o.body.model, o.body.est
	}
	model, est, stream := inspectRequestStream(req, p.cfg.Estimator, &p.models)
	if o.body != nil {
		*o.body = bodyInfo{done: true, model: model, est: est, stream: stream}
	}
	return model, est
}

// pacer keeps the limits of every partition and makes requests wait for
// their turn. The transport calls acquire before each attempt and settle
// (or cancel) on the permit after it.
type pacer struct {
	cfg          PacingConfig
	headroom     float64
	coldStart    int
	maxParts     int
	idle         time.Duration
	maxWait      time.Duration // 0: no cap
	reserve      float64       // PacingConfig.Reserve, read
	emit         func(Event)
	breakerState func(upstream string) BreakerState
	// skipped reports why routing passes the upstream called name by,
	// and until when, for snapshots; nil when not routed.
	skipped func(name string, now time.Time) (string, time.Time)
	seed    maphash.Seed
	models  modelNames // the model names read, kept to be read again without allocating

	parts *table[*partition]

	// With a Store: noBreaker ignores the fleet's circuit (this
	// Transport has none).
	noBreaker bool
}

// pacerDeps is what the pacer asks of the rest of its Transport, given
// once at construction.
type pacerDeps struct {
	// emit delivers events (never call it under a lock); nil drops them.
	emit func(Event)
	// breakerState reports an upstream's breaker state for snapshots;
	// nil reports every circuit closed.
	breakerState func(upstream string) BreakerState
	// skipped reports why routing passes an upstream by (see pacer.skipped);
	// nil when not routed.
	skipped func(name string, now time.Time) (string, time.Time)
	// noBreaker: the Transport has no breaker, so the fleet's circuit is
	// ignored (with a Store).
	noBreaker bool
}

// newPacer returns a pacer working with d.
func newPacer(cfg PacingConfig, d pacerDeps) *pacer {
	emit, breakerState := d.emit, d.breakerState
	p := &pacer{
		cfg:          cfg,
		headroom:     cfg.Headroom,
		coldStart:    cmp.Or(cfg.ColdStart, defaultColdStart),
		maxParts:     cmp.Or(cfg.MaxPartitions, defaultMaxPartitions),
		idle:         cmp.Or(cfg.IdleTimeout, defaultIdleTimeout),
		maxWait:      max(cfg.MaxWait, 0),
		reserve:      reserveOf(cfg.Reserve),
		emit:         emit,
		breakerState: breakerState,
		skipped:      d.skipped,
		noBreaker:    d.noBreaker,
		seed:         maphash.MakeSeed(),
	}
	switch {
	case p.headroom == 0 || math.IsNaN(p.headroom):
		p.headroom = defaultHeadroom
	case p.headroom < 0:
		p.headroom = 0
	case p.headroom > 0.5:
		p.headroom = 0.5
	}
	if p.maxParts < 0 {
		p.maxParts = math.MaxInt
	}
	if p.idle < 0 {
		p.idle = 100 * 365 * 24 * time.Hour // never, without overflowing a time
	}
	p.parts = newTable[*partition](p.maxParts, p.idle)
	if p.emit == nil {
		p.emit = func(Event) {}
	}
	if p.breakerState == nil {
		p.breakerState = func(string) BreakerState { return BreakerClosed }
	}
	return p
}

// acquire waits until req may be sent, in its partition's queue. A nil
// permit is valid. The error is final: ctx's error when it ends during a
// wait, errStopped when o.stop is closed, or a *WaitError when the time
// planned for req is past ctx's deadline or MaxWait.
func (p *pacer) acquire(ctx context.Context, req *http.Request, o admitOpts) (*permit, error) {
	if p == nil || p.cfg.Disabled {
		return nil, nil
	}
	if stopped(o.stop) {
		return nil, errStopped
	}
	model, est := p.inspect(req, o)
	now := time.Now()
	pt := p.partitionFor(req, model, strings.Clone(o.route), now) // a copy: o must not escape
	if p.cfg.Estimator == nil {
		pt.mu.Lock()
		est = pt.learnedLocked(model, est, now)
		pt.mu.Unlock()
	}
	pm, err := pt.acquire(ctx, p, req, est, o, now)
	if err != nil {
		pt.release()
		return nil, err
	}
	pm.model = model
	if p.cfg.Store != nil {
		if err := p.storeAcquire(ctx, req, pm, o, now); err != nil {
			return nil, err
		}
	}
	return pm, nil
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// waiter is a request waiting in its partition's queue.
type waiter struct {
	prev, next *waiter
	est        TokenEstimate
	wake       chan struct{} // buffered: a re-plan or its turn
	deadline   time.Time     // its context's; zero if none
	// swept is set when a re-plan took it out of the queue, its planned
	// time (sweptAt) being past its deadline.
	swept   bool
	sweptAt time.Time
	// granted is its permit when the request before it admitted it.
	granted *permit
	// Its place in the partition's lanes (priority.go): lane, tenant and
	// weight, its flow, its virtual tag and arrival number, and why a
	// re-plan swept it, if later arrivals went first.
	lane   uint8
	tenant string
	weight float64
	fl     *flow
	tag    float64
	seq    uint64
	why    string
	// movable: a routed request that may move to another upstream;
	// nudged: its partition asks it to look whether another would send
	// it sooner (nudgeLastLocked).
	movable, nudged bool
	// lateAsked: it looked for another upstream since its turn here was
	// planned past its deadline (cleared when it is woken again).
	lateAsked bool
}

// queue is one flow of a partition's waiting requests, first come first
// served.
type queue struct {
	head, tail *waiter
	n          int
}

func (q *queue) pushBack(w *waiter) {
	w.prev, w.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

func (q *queue) pushFront(w *waiter) {
	w.prev, w.next = nil, q.head
	if q.head != nil {
		q.head.prev = w
	} else {
		q.tail = w
	}
	q.head = w
	q.n++
}

func (q *queue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.n--
}

// wakeHeadLocked tells the request at the head of the queue to look again:
// the plan changed, or its turn came.
func (pt *partition) wakeHeadLocked() {
	if h := pt.q.head; h != nil {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// coldOKLocked reports whether one more request may go while the
// partition's limits are not known (cold start, or probing after a 429).
//
// After that, until rampDone requests have succeeded, at most twice as
// many as have succeeded are in flight: each response may show that
// others use the same key, before this process sends all that remains.
func (pt *partition) coldOKLocked(p *pacer, now time.Time) bool {
	if p.coldStart <= 0 || pt.inflight < p.coldStart {
		return true
	}
	// With a shared store the fleet's budget paces: no ramp.
	if pt.known && !pt.probing && (pt.ramp >= rampDone || pt.inflight < 2*pt.ramp || pt.storeShared) {
		return true
	}
	return !pt.coldSince.IsZero() && now.Sub(pt.coldSince) >= coldStartWait
}

// acquire waits for req's turn in pt's queue and returns its permit. A
// request goes at once when nothing waits before it and the windows, the
// cooldown and the cold start allow it; otherwise it joins the queue,
// unless the time planned for it is already past its deadline. Only the
// request at the head of the queue keeps a timer, for the time planned for
// it; the others wait for their turn. Every change in what the partition
// knows wakes the head, which looks again.
func (pt *partition) acquire(ctx context.Context, p *pacer, req *http.Request, est TokenEstimate, o admitOpts, start time.Time) (*permit, error) {
	now := start
	lane := laneOf(priorityOf(ctx))
	pt.mu.Lock()
	pt.advanceLocked(p, now)
	if (pt.q.n == 0 || o.urgent) && pt.coldOKLocked(p, now) && !pt.readyKeepLocked(p, now, costs{}, pt.keepLocked(p, lane, now), est, false).After(now) {
		if lane == laneBatch {
			pt.prio.pacedSince = time.Time{} // not backlogged
		}
		return pt.admitLocked(p, req, est, start, now, nil), nil
	}
	w := &waiter{est: est, lane: lane, movable: o.move != nil && !o.urgent}
	w.tenant, w.weight = p.tenantOf(ctx, req)
	ahead, keep := pt.queued, pt.keepLocked(p, lane, now)
	switch {
	case o.urgent:
		ahead = costs{}
	case lane != laneDefault || w.tenant != "" || !pt.q.simple():
		ahead = pt.q.ahead(w)
	}
	at := pt.refusePlanLocked(p, now, ahead, keep, est)
	if dl, ok := ctx.Deadline(); ok && at.After(dl) && w.movable {
		// Past its deadline here: routed, it may go sooner elsewhere
		// (it was routed here when this queue was shorter, or before
		// its limits were known).
		pt.mu.Unlock()
		moved := o.move(at)
		pt.mu.Lock()
		if moved {
			pt.mu.Unlock()
			return nil, errMoved
		}
	}
	if err := pt.refuseLocked(ctx, p, req, start, now, at, nil); err != nil {
		return nil, err
	}
	w.wake = make(chan struct{}, 1)
	if dl, ok := ctx.Deadline(); ok {
		w.deadline = dl
		pt.deadlined++
	}
	if o.urgent {
		pt.q.pushFront(w)
	} else {
		pt.q.pushBack(w)
	}
	pt.queued.add(est)
	if pt.deadlined > 0 && !pt.q.simple() && pt.q.n > 1 {
		// It may go before requests already waiting: those whose place
		// moves past their deadline fail now.
		pt.replanned = time.Time{}
		pt.replanLocked(p, now)
	}
	for {
		// pt.mu is held here.
		d := time.Duration(-1) // until woken
		if pt.q.head == w {
			pt.advanceLocked(p, now)
			at := pt.laneReadyLocked(p, now, w.lane, est, false)
			if !pt.coldOKLocked(p, now) {
				if pt.coldSince.IsZero() {
					pt.coldSince = now
				}
				d = coldStartWait - now.Sub(pt.coldSince)
			} else {
				if !at.After(now) {
					return pt.admitLocked(p, req, est, start, now, w), nil
				}
				pt.refusing = true
				late := pt.laneReadyLocked(p, now, w.lane, est, true)
				pt.refusing = false
				if err := pt.refuseLocked(ctx, p, req, start, now, late, w); err != nil {
					return nil, err
				}
				if w.movable && !w.deadline.IsZero() && at.After(w.deadline) && !w.lateAsked {
					// Its turn here, as it is planned to go, is past its
					// deadline, though the plan for refusing (which lets
					// a window refill as soon as it may) kept it: routed,
					// it looks, once a plan, for an upstream that serves
					// it in time rather than wait here for its last
					// moment.
					w.lateAsked = true
					pt.mu.Unlock()
					moved := o.move(at)
					pt.mu.Lock()
					if moved && w.granted == nil && !w.swept {
						pt.leaveLocked(w)
						pt.nudgeLastLocked()
						pt.mu.Unlock()
						return nil, errMoved
					}
					now = time.Now()
					continue
				}
				if !w.deadline.IsZero() && at.After(w.deadline) {
					// Its turn as planned is past its deadline, and the
					// plan for refusing keeps it: a window of unknown kind
					// that may refill sooner than planned (a bucket's
					// refill, a reset's probe slower than the fastest
					// answer). Rather than wait for its last moment and
					// fail, it goes at the soonest the window may allow,
					// if that comes in time: its answer tells.
					if soon := pt.laneReadyLocked(p, now, w.lane, est, true); !soon.After(w.deadline) {
						if !soon.After(now) {
							return pt.admitLocked(p, req, est, start, now, w), nil
						}
						at = soon
					}
				}
				d = at.Sub(now)
			}
		}
		pt.mu.Unlock()
		err := waitTurn(ctx, o.stop, w.wake, d, lastMoment(w.deadline))
		pt.mu.Lock()
		now = time.Now()
		last := err == errLastMoment
		if last {
			err = nil
		}
		if pm := w.granted; pm != nil {
			// Admitted by the request before it.
			pt.mu.Unlock()
			if err != nil {
				pm.cancel()
				return nil, err
			}
			pt.paced(p, req, start, now)
			return pm, nil
		}
		if w.swept {
			// A re-plan found its time past its deadline and took it out
			// of the queue. Its turn is planned again, at the end of the
			// queue as it is now: requests before it may have left it
			// (moved to another upstream) since. Routed, it may go
			// sooner elsewhere.
			at := w.sweptAt
			if err == nil {
				ahead := pt.queued
				if w.lane != laneDefault || w.tenant != "" || !pt.q.simple() {
					ahead = pt.q.ahead(w)
				}
				at = maxTime(at, now)
				if again := pt.refusePlanLocked(p, now, ahead, pt.keepLocked(p, w.lane, now), est); again.Before(at) {
					at = again
				}
			}
			if err == nil && w.movable {
				pt.mu.Unlock()
				moved := o.move(at)
				pt.mu.Lock()
				if moved {
					pt.mu.Unlock()
					return nil, errMoved
				}
			}
			if err == nil {
				pt.refuseWhy = w.why
				if err = pt.refuseLocked(ctx, p, req, start, now, at, nil); err != nil {
					return nil, err
				}
				w.swept = false
				pt.q.pushBack(w)
				pt.queued.add(est)
				pt.deadlined++
				continue
			}
			pt.mu.Unlock()
			return nil, err
		}
		if err != nil {
			pt.leaveLocked(w)
			pt.mu.Unlock()
			return nil, err
		}
		if last {
			// Its turn has not come by its deadline: it fails now, with
			// a WaitError, not a moment later with its context's error.
			return nil, pt.refuseLocked(ctx, p, req, start, now, w.deadline.Add(time.Nanosecond), w)
		}
		if w.nudged {
			if moved := pt.moveLocked(p, w, o, now); moved {
				return nil, errMoved
			}
		}
	}
}

// moveLocked asks o.move whether w, nudged, would go sooner on another
// upstream than where it waits. If so, w leaves the queue, the waiter
// now planned last is nudged in turn, and moveLocked returns true with
// pt.mu released; otherwise it returns false with pt.mu held and w in
// its place (or admitted or swept meanwhile, which its wake tells).
func (pt *partition) moveLocked(p *pacer, w *waiter, o admitOpts, now time.Time) bool {
	w.nudged = false
	at := pt.plannedLocked(p, w, now)
	pt.mu.Unlock()
	moved := o.move(at)
	pt.mu.Lock()
	if !moved || w.granted != nil || w.swept {
		return false
	}
	pt.leaveLocked(w)
	pt.nudgeLastLocked()
	pt.mu.Unlock()
	return true
}

// plannedLocked returns when w, queued, is planned to go as the queue
// stands, as [pacer.plan] plans a request on another upstream (a window
// of unknown kind taken to refill gradually).
func (pt *partition) plannedLocked(p *pacer, w *waiter, now time.Time) time.Time {
	pt.advanceLocked(p, now)
	var ahead costs
	switch {
	case pt.q.head == w:
	case pt.q.simple():
		ahead = pt.queued
		for x := w; x != nil; x = x.next {
			ahead.sub(x.est)
		}
	default:
		ahead = pt.q.ahead(w)
		ahead.sub(w.est)
	}
	at := pt.readyKeepLocked(p, now, ahead, pt.keepLocked(p, w.lane, now), w.est, true)
	return maxTime(at, pt.hintUntil)
}

// nudgeLastLocked wakes the waiter planned to go last, if it may move to
// another upstream, to look whether one would send it sooner. A routed
// partition does so at each answer (what it learned may have made its
// queue slower than another's), and after each waiter that moved away:
// the queues even out, one request at a time, from their ends.
func (pt *partition) nudgeLastLocked() {
	if w := pt.q.last(); w != nil && w.movable && !w.nudged {
		w.nudged = true
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// replanEvery is the least time between two re-plans of a whole queue.
const replanEvery = 10 * time.Millisecond

// replanLocked walks the queue after the partition learned something and
// takes out, at once, every request whose planned time is now past its
// deadline: it fails without waiting for its deadline. The head of the
// queue re-plans for itself when woken.
func (pt *partition) replanLocked(p *pacer, now time.Time) {
	if pt.deadlined == 0 {
		return
	}
	if !pt.replanned.IsZero() && now.Sub(pt.replanned) < replanEvery {
		// Re-planned just now; again only if that plan rested on answers
		// of a moment still to come, and they have all come.
		if !pt.replanDoubt || pt.anyDoubtLocked() {
			return
		}
	}
	pt.replanned = now
	pt.advanceLocked(p, now)
	var doubts [maxWindows]float64
	pt.replanDoubt = pt.countDoubtsLocked(&doubts)
	defer func() { pt.doubts = nil }()
	if !pt.q.simple() {
		pt.replanLanesLocked(p, now)
		return
	}
	var ahead costs
	var keep float64
	if h := pt.q.head; h != nil {
		keep = pt.keepLocked(p, h.lane, now)
	}
	for w := pt.q.head; w != nil; {
		next := w.next
		if !w.deadline.IsZero() {
			if at := pt.refusePlanLocked(p, now, ahead, keep, w.est); at.After(w.deadline) {
				pt.sweepLocked(w, at)
				w = next
				continue
			}
		}
		ahead.add(w.est)
		w = next
	}
}

// sweepLocked takes w out of the queue, its planned time at being past
// its deadline, and wakes it to fail.
func (pt *partition) sweepLocked(w *waiter, at time.Time) {
	pt.leaveLocked(w)
	w.swept, w.sweptAt = true, at
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// leaveLocked takes w out of the queue and, if it was the head, wakes the
// next one.
func (pt *partition) leaveLocked(w *waiter) {
	wasHead := pt.q.head == w
	pt.q.remove(w)
	pt.queued.sub(w.est)
	if !w.deadline.IsZero() {
		pt.deadlined--
	}
	if wasHead {
		pt.wakeHeadLocked()
	}
}

// admitLocked sends a request now: it takes its cost and leaves the queue
// (w, if it waited in it). Waiters behind it that may go now too are
// admitted with it, handed their permits directly (one goroutine admits a
// run of requests, instead of each waking the next in turn), and the next
// head is woken. It returns the permit with pt.mu released.
func (pt *partition) admitLocked(p *pacer, req *http.Request, est TokenEstimate, start, now time.Time, w *waiter) *permit {
	pm := pt.permitLocked(p, est, now)
	if w != nil {
		pt.laneAdmittedLocked(p, w, now)
		pt.q.remove(w)
		pt.queued.sub(w.est)
		if !w.deadline.IsZero() {
			pt.deadlined--
		}
		pt.grantLocked(p, now)
		pt.wakeHeadLocked()
	}
	pt.mu.Unlock()
	pt.paced(p, req, start, now)
	return pm
}

// permitBatch is how many permits a partition that sends more than once
// allocates at a time: one allocation for several requests on the success
// path, and at most permitBatch-1 unused permits kept per partition.
const permitBatch = 8

// permitLocked takes est's cost now and returns its permit, in flight.
func (pt *partition) permitLocked(p *pacer, est TokenEstimate, now time.Time) *permit {
	pt.takeLocked(now, est)
	pt.coldSince = time.Time{}
	if len(pt.spare) == 0 {
		n := 1
		if pt.seq > 1 { // not the partition's first
			n = permitBatch
		}
		pt.spare = make([]permit, n)
	}
	pm := &pt.spare[0]
	pt.spare = pt.spare[1:]
	if len(pt.spare) == 0 {
		pt.spare = nil
	}
	pm.pt, pm.p, pm.seq, pm.sent, pm.sentAt, pm.est, pm.baseSeq, pm.baseSent = pt, p, pt.seq, pt.sent, now, est, pt.instSeq, pt.instSent
	pm.prev = pt.flyTail
	if pt.flyTail != nil {
		pt.flyTail.next = pm
	} else {
		pt.flyHead = pm
	}
	pt.flyTail = pm
	return pm
}

// grantLocked admits, in queue order, the waiters that may go now, and
// hands each its permit.
func (pt *partition) grantLocked(p *pacer, now time.Time) {
	for h := pt.q.head; h != nil; h = pt.q.head {
		if !pt.coldOKLocked(p, now) || pt.laneReadyLocked(p, now, h.lane, h.est, false).After(now) {
			return
		}
		h.granted = pt.permitLocked(p, h.est, now)
		pt.laneAdmittedLocked(p, h, now)
		pt.q.remove(h)
		pt.queued.sub(h.est)
		if !h.deadline.IsZero() {
			pt.deadlined--
		}
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// paced reports the wait of a request admitted at now, if it waited.
func (pt *partition) paced(p *pacer, req *http.Request, start, now time.Time) {
	if waited := now.Sub(start); waited > 0 {
		ev := Event{Kind: EventPace, Time: now, Upstream: pt.upstream, Partition: pt.label, Model: pt.model, Wait: waited, Priority: reqPriority(req)}
		if req != nil && req.URL != nil {
			ev.Method, ev.Path = req.Method, req.URL.Path
		}
		p.emit(ev)
	}
}

// refuseLocked returns, with pt.mu released and w out of the queue, the
// error for a request planned to go at at when that is past ctx's
// deadline, beyond MaxWait, or before a server hint longer than the
// cooldown honours; or nil with pt.mu still held.
func (pt *partition) refuseLocked(ctx context.Context, p *pacer, req *http.Request, start, now, at time.Time, w *waiter) error {
	dl, hasDL := ctx.Deadline()
	var err error
	d := at.Sub(now)
	switch {
	case hasDL && at.After(dl):
		err = context.DeadlineExceeded
	case hasDL && pt.hintUntil.After(dl) && pt.hintUntil.After(at):
		// The server asked for a pause longer than is honoured at once,
		// and this request cannot outlast it.
		err, d = context.DeadlineExceeded, pt.hintUntil.Sub(now)
	case p.maxWait > 0 && at.Sub(start) > p.maxWait:
		err = ErrWaitTooLong
	default:
		pt.refuseWhy = ""
		return nil
	}
	if w != nil {
		pt.leaveLocked(w)
	}
	label, upstream, model, why := pt.label, pt.upstream, pt.model, pt.refuseWhy
	pt.refuseWhy = ""
	pt.mu.Unlock()
	we := &WaitError{Wait: d, Partition: label, Err: err, Reason: why}
	ev := Event{Kind: EventRejected, Time: now, Upstream: upstream, Partition: label, Model: model, Wait: d, Reason: "pacing wait past the deadline", Err: we, Priority: reqPriority(req), Context: ctx}
	if err == ErrWaitTooLong {
		ev.Reason = "pacing wait beyond MaxWait"
	}
	if why != "" {
		ev.Reason += ": " + why
	}
	if req != nil && req.URL != nil {
		ev.Method, ev.Path = req.Method, req.URL.Path
	}
	p.emit(ev)
	return we
}

// waitTurn waits until woken, d passes (d < 0: no timer), ctx ends or stop
// is closed; or, with errLastMoment, until last passes (last < 0: never).
func waitTurn(ctx context.Context, stop, wake <-chan struct{}, d, last time.Duration) error {
	var tc, lc <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	if last >= 0 {
		t := time.NewTimer(last)
		defer t.Stop()
		lc = t.C
	}
	select {
	case <-tc:
		return nil
	case <-lc:
		return errLastMoment
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return errStopped
	}
}

// permit is one attempt's admission in its partition.
type permit struct {
	pt   *partition
	p    *pacer
	done atomic.Bool
	// stored: the permit holds a reservation in the pacer's Store, kept
	// in its partition's turns.
	stored bool
	// disc is set by settle when the partition is paced by a discovered
	// rate (pacer_discover.go).
	disc bool
	// reconciled is set once the tokens the response used settled the
	// permit's estimate (usage.go); model and landedAt say what for.
	reconciled atomic.Bool
	model      string
	landedAt   time.Time
	turn       *storeTurn // the store's reservation, kept after settle for the usage
	// The partition's sequence number and cumulative sent costs right
	// after this permit was sent, when, and its cost.
	seq    uint64
	sent   costs
	sentAt time.Time
	est    TokenEstimate
	// The first permit sent at the same moment, and the cumulative cost
	// sent before it: the server may count those in any order.
	baseSeq  uint64
	baseSent costs
	// The partition's permits in flight; guarded by its mu.
	prev, next *permit
}

// landLocked takes pm out of the partition's permits in flight.
func (pm *permit) landLocked() {
	pt := pm.pt
	pt.inflight--
	pt.flying.sub(pm.est)
	if pm.prev != nil {
		pm.prev.next = pm.next
	} else {
		pt.flyHead = pm.next
	}
	if pm.next != nil {
		pm.next.prev = pm.prev
	} else {
		pt.flyTail = pm.prev
	}
	pm.prev, pm.next = nil, nil
}

// settle reconciles the admission with what the attempt's response (or
// error) says: the rate-limit headers, a 429 cooldown. nil-safe; calls
// after the first, or after cancel, do nothing.
func (pm *permit) settle(resp *http.Response, err error) {
	if pm == nil || pm.done.Load() {
		return
	}
	var sc ratelimit.Scan
	if resp != nil {
		sc.Read(resp.Header, nil)
	}
	pm.settleRead(resp, err, &sc)
}

// settleRead is settle of a response whose headers sc read (unused
// without a response).
func (pm *permit) settleRead(resp *http.Response, err error, sc *ratelimit.Scan) {
	if pm == nil || pm.done.Swap(true) {
		return
	}
	now := time.Now()
	var rl ratelimit.Limits
	var buf [maxWindows + 2]ratelimit.Window
	status := 0
	if resp != nil {
		status = resp.StatusCode
		rl = sc.Append(buf[:0], now)
	}
	pm.finish(resp != nil, status, rl, now)
	if pm.stored {
		pm.p.storeSettle(pm, resp, err, status, rl, now)
	}
}

// cancel gives the admission back unused: the request was not sent.
// nil-safe; calls after the first, or after settle, do nothing.
func (pm *permit) cancel() {
	if pm == nil || pm.done.Swap(true) {
		return
	}
	pt, p := pm.pt, pm.p
	pt.mu.Lock()
	pm.landLocked()
	for i := range pt.windows {
		w := &pt.windows[i]
		w.give(pm.sentAt, float64(min(cost(w.unit, pm.est), maxCost)), p.headroom)
		if w.probeOut && w.probeAt.Equal(pm.sentAt) {
			w.probeOut = false // the probe was not sent: the next request goes first
		}
	}
	pt.wakeHeadLocked()
	pt.mu.Unlock()
	pt.release()
	if pm.stored {
		p.storeCancel(pm)
	}
}

// finish is settle after the headers are read: status is the response's
// (0 without one, when responded is false) and rl what its headers
// announced.
func (pm *permit) finish(responded bool, status int, rl ratelimit.Limits, now time.Time) {
	if ev, ok := pm.observe(responded, status, rl, now); ok {
		pm.p.emit(ev)
	}
	pm.pt.release()
}

// observe applies one attempt's outcome to the partition: status is the
// response's (0 without one) and rl what its headers announced. It wakes
// the head of the queue, which re-plans, and returns a cooldown event to
// emit after the lock is released.
func (pm *permit) observe(responded bool, status int, rl ratelimit.Limits, now time.Time) (Event, bool) {
	pt, p := pm.pt, pm.p
	pt.mu.Lock()
	pm.landLocked()
	pm.landedAt = now
	for i := range pt.windows {
		w := &pt.windows[i]
		w.landed(now, float64(min(cost(w.unit, pm.est), maxCost)))
		if !w.probeAt.IsZero() && !pm.sentAt.Before(w.probeAt) {
			w.probeAt, w.probeOut = time.Time{}, false // the reset's probe has its answer
			if !responded {
				// It has none (its caller gave up, or the connection
				// failed): the window stays as the reset made it, whole
				// less what is in flight, rather than wait for another
				// probe's answer, which would move every waiter's turn
				// by a round trip.
				n := float64(min(cost(w.unit, pm.est), maxCost))
				w.avail = max(w.avail, w.capacity(p.headroom)-float64(pt.flying.of(w.unit))-n)
			}
		}
	}
	if responded {
		pt.rttLocked(now.Sub(pm.sentAt))
		// Limits are known once announced, or once a success shows
		// that none will be: an error without headers (a gateway's 502)
		// tells nothing.
		if len(rl.Windows) > 0 || status < 400 {
			pt.known = true
		}
		for _, w := range rl.Windows {
			pt.observeLocked(p, pm, w, now)
		}
		if status < 400 {
			pt.hintUntil = time.Time{}
			pt.ramp = min(pt.ramp+1, rampDone)
		}
	}
	// A partition that announces nothing is paced by its discoverer,
	// which holds the pauses after a 429 itself.
	discovering, ev, emit := pt.discoverObserveLocked(p, pm, responded, status, rl, now)
	pm.disc = discovering
	if responded && status != http.StatusTooManyRequests && pm.seq > pt.probeSeq {
		pt.probing = false
	}
	if !discovering && (status == http.StatusTooManyRequests || (status >= 400 && rl.HasRetryAfter)) {
		ev, emit = pt.coolLocked(status, rl, now)
	}
	pt.replanLocked(p, now)
	pt.wakeHeadLocked()
	if pt.routed {
		pt.nudgeLastLocked()
	}
	pt.mu.Unlock()
	return ev, emit
}

// coolLocked applies a 429 (or a hint beside another error) to the
// partition: it cools down until the hint's end (bounded by maxHintWait,
// a longer hint kept in hintUntil), or the exhausted window's reset, or
// for defaultCooldown; until a request succeeds again, only a few go out
// at once, so that the waiters do not all rush in when it ends. It
// returns the cooldown event to emit after the lock is released.
func (pt *partition) coolLocked(status int, rl ratelimit.Limits, now time.Time) (Event, bool) {
	pt.probing, pt.probeSeq, pt.ramp = true, pt.seq, 0
	var until time.Time
	if rl.HasRetryAfter {
		hint := min(max(rl.RetryAfter, 0), maxHint)
		until = now.Add(hint)
		if hint > maxHintWait {
			if until.After(pt.hintUntil) {
				pt.hintUntil = until
			}
			until = now.Add(maxHintWait)
		}
	} else if t := pt.exhaustedResetLocked(now); !t.IsZero() {
		until = t
	} else {
		until = now.Add(defaultCooldown)
	}
	if !until.After(pt.cooldown) {
		return Event{}, false
	}
	pt.cooldown = until
	return Event{Kind: EventCooldown, Time: now, Upstream: pt.upstream, Partition: pt.label, Model: pt.model, Status: status, Until: until, Reason: "rate limited"}, true
}

// streamLimited applies a rate-limit error event that ended pm's stream
// after its first content, when its attempt had been settled as a 2xx:
// the partition is paced as after a 429 answered with the event's hint
// (hasHint false: none), bounded as a header's. The cooldown event says
// it came from the stream. The fleet's store (if its turn went through
// one) is told the cooldown in a settlement of its own, as after a 429.
// nil-safe.
func (pm *permit) streamLimited(hint time.Duration, hasHint bool, now time.Time) {
	if pm == nil {
		return
	}
	pt, p := pm.pt, pm.p
	rl := ratelimit.Limits{RetryAfter: hint, HasRetryAfter: hasHint}
	pt.mu.Lock()
	pt.advanceLocked(p, now)
	discovering, ev, emit := pt.discoverObserveLocked(p, pm, true, http.StatusTooManyRequests, rl, now)
	if !discovering {
		ev, emit = pt.coolLocked(http.StatusTooManyRequests, rl, now)
	}
	pt.replanLocked(p, now)
	pt.wakeHeadLocked()
	if pt.routed {
		pt.nudgeLastLocked()
	}
	cool := pt.cooldown.Sub(now)
	pt.mu.Unlock()
	if st := pm.turn; st != nil && cool > 0 {
		p.cfg.Store.Settle(context.Background(), store.Settlement{Partition: st.part, Cooldown: cool})
	}
	if emit {
		ev.Reason = "rate limited: stream error event"
		p.emit(ev)
	}
}

// PartitionSnapshot is the state of one pacing partition at one moment.
type PartitionSnapshot struct {
	Key      string // label: upstream host, model and a credential fingerprint
	Upstream string // scheme://host
	Model    string // model named in the requests' bodies; "" if none
	// Windows are the limits in force: configured ones first, then those
	// announced by the latest headers.
	Windows []WindowSnapshot
	// InFlight counts requests sent and not yet settled; Waiting counts
	// requests waiting for their turn in the partition's queue.
	InFlight, Waiting int
	// WaitingByPriority splits Waiting by [Priority] (a half-open probe
	// counts as default); nil when only requests without a priority wait.
	WaitingByPriority map[Priority]int
	// NextAdmit is when the request at the head of the queue is planned
	// to go, as far as is known now; zero when none waits or while the
	// partition waits for a response to tell its limits.
	NextAdmit time.Time
	// CooldownUntil is when a cooldown after a 429 ends; zero if none.
	CooldownUntil time.Time
	// Known is false while the partition waits for its first response to
	// tell its limits (cold start), and while the pace of a provider that
	// announces nothing rests on too few answers.
	Known   bool
	Breaker BreakerState // the upstream's circuit breaker state
	// LearnedOutput is what a request of the partition's model reserves
	// for its output when the provider counts by usage
	// ([PacingConfig.TokensByUsage]): a high quantile of its recent
	// outputs, read from the responses' usage; zero until enough are known.
	// EstimateError is the mean, over the recent responses that told
	// their usage, of the tokens reserved less those used: positive when
	// requests reserve more than they use. A body that is not a stream is
	// read for its usage only when usage counts or events are observed
	// (docs/usage.md): otherwise both stay zero for it.
	LearnedOutput int64
	EstimateError float64
	// Skipped says, for a partition of one of [Config.Upstreams], why
	// routing passes its upstream by, and SkippedUntil until when, as far
	// as is known now: "key refused (REASON)" until its next probe,
	// "circuit open" until the open period ends, "circuit half-open" while
	// its probe is out (no end known), or "cooldown" (the server asked for
	// a pause: a 429, a Retry-After hint) until the pause ends, the hint's
	// end when it is longer than the cooldown steady holds. "" when the
	// upstream is usable, and for a partition that is not routed. Names
	// and reasons are bounded; never a credential.
	Skipped      string
	SkippedUntil time.Time
}

// WindowSnapshot is one rate-limit window of a partition.
type WindowSnapshot struct {
	// Unit is what the window counts: requests or tokens.
	Unit ratelimit.Unit
	// Name is the announced window's name; "config" for a configured
	// limit, "discovered" for the pace found for a provider that
	// announces nothing (its Rate is the pace, in requests a second).
	Name string
	// Limit is the quota per Period; -1 when not known.
	Limit int64
	// Remaining is what the latest response announced; -1 when unknown
	// (always for a configured window).
	Remaining int64
	// Reset is when the latest response said the window is replenished;
	// zero when unknown.
	Reset time.Time
	// Period is the window's length: stated, inferred, or the longest
	// reset announced so far (at least a second); zero while the window's
	// quota is unknown.
	Period time.Duration
	// Kind is how the window is believed to refill: "reset" (whole again
	// at its reset: a fixed window, or one not yet recognized), "sliding",
	// "bucket", "local" (a configured limit, counted from this process's
	// own sends), or "discovered" (the pace found from what the provider
	// accepts and refuses: see [PacingConfig]).
	Kind string
	// Tokens is what this process may use of the window now (negative in
	// debt), and NextRefill when a window that refills at its reset is
	// whole again (zero when not known or not such a window).
	Tokens     float64
	NextRefill time.Time
	// Rate is the gradual refill in units per second of a bucket or local
	// window, and the pace of a discovered one; zero for the others and
	// while the quota is unknown.
	Rate float64
	// Share is this process's share of the window, below 1 when what
	// remains falls faster than it sends: others use the same key.
	Share float64
}

// Snapshot returns the state of every pacing partition, sorted by key.
func (t *Transport) Snapshot() []PartitionSnapshot {
	if t == nil || t.pacer == nil {
		return nil
	}
	return t.pacer.snapshot(time.Now())
}

func (p *pacer) snapshot(now time.Time) []PartitionSnapshot {
	parts := make([]*partition, 0, p.parts.len())
	p.parts.each(func(pt *partition) { parts = append(parts, pt) })
	out := make([]PartitionSnapshot, 0, len(parts))
	for _, pt := range parts {
		s := PartitionSnapshot{Key: pt.label, Upstream: pt.upstream, Model: pt.model}
		pt.mu.Lock()
		s.InFlight = pt.inflight
		s.Waiting = pt.q.n
		s.WaitingByPriority = pt.q.waitingBy()
		pt.advanceLocked(p, now)
		if h := pt.q.head; h != nil && pt.coldOKLocked(p, now) {
			s.NextAdmit = pt.laneReadyLocked(p, now, h.lane, h.est, false)
		}
		if pt.cooldown.After(now) {
			s.CooldownUntil = pt.cooldown
		}
		s.Known = pt.known
		s.Windows = make([]WindowSnapshot, 0, len(pt.windows)+1)
		for i := range pt.windows {
			w := &pt.windows[i]
			ws := WindowSnapshot{Unit: w.unit, Name: w.name, Limit: w.limit, Remaining: w.remaining, Reset: w.reset, Period: w.period, Kind: w.kind.String(), Share: w.share}
			if w.known() {
				ws.Period = w.guessPeriod()
			}
			if w.config {
				ws.Name = "config"
			}
			if w.known() {
				ws.Tokens = w.avail
				ws.NextRefill = w.next
				if w.kind == kindBucket || w.kind == kindLocal {
					ws.Rate = w.rate(p.headroom)
				}
			}
			s.Windows = append(s.Windows, ws)
		}
		if l := pt.learnerLocked(pt.model, now, false); l != nil {
			if l.n >= learnMin {
				s.LearnedOutput = l.q
			}
			s.EstimateError = l.meanErr()
		}
		if pt.discovering() {
			ws, pause := pt.discoverSnapshotLocked(now)
			s.Windows = append(s.Windows, ws)
			s.CooldownUntil = pause
		}
		routed, pause := pt.routed, s.CooldownUntil
		if pt.hintUntil.After(pause) && pt.hintUntil.After(now) {
			pause = pt.hintUntil
		}
		pt.mu.Unlock()
		s.Breaker = p.breakerState(s.Upstream)
		if routed && p.skipped != nil {
			s.Skipped, s.SkippedUntil = p.skipped(s.Upstream, now)
			if s.Skipped == "" && !pause.IsZero() {
				s.Skipped, s.SkippedUntil = "cooldown", pause
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b PartitionSnapshot) int { return strings.Compare(a.Key, b.Key) })
	return out
}
