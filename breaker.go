package steady

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Circuit breaker settings used where a [BreakerConfig] field is zero.
const (
	defaultBreakerFailureRatio        = 0.5
	defaultBreakerMinRequests         = 20
	defaultBreakerWindow              = time.Minute
	defaultBreakerConsecutiveFailures = 5
	defaultBreakerOpenTimeout         = 10 * time.Second
	defaultBreakerHalfOpenProbes      = 3

	// firstOpenPeriod is how long a circuit stays open the first time,
	// before the first probe: short, so that a brief outage costs little.
	firstOpenPeriod = time.Second

	// maxUpstreams is how many upstreams (scheme and host) a Transport
	// keeps a breaker for. Beyond it, breakers of upstreams whose circuit
	// is closed are forgotten first.
	maxUpstreams = 1024
)

// BreakerConfig configures the circuit breaker kept per upstream (scheme
// and host). Only server failures count against an upstream: statuses 500
// and above (529 included) and transport failures. 4xx and 429 responses
// count as successes: the upstream is up and answering. A caller's own
// cancellation counts as neither.
//
// The circuit opens when, over the rolling Window, at least MinRequests
// attempts completed and the share of failures reached FailureRatio, or
// when ConsecutiveFailures attempts failed in a row. The breaker is
// consulted at the moment of sending, after any pacing wait: requests
// waiting for their turn when the circuit opens are decided at once.
//
// While the circuit is open nothing is sent. The first open period lasts
// about a second; each time a probe fails it doubles, with jitter, up to
// OpenTimeout. When it ends the circuit is half-open: probes go out one at
// a time, ahead of the pacing queue, and after HalfOpenProbes successes in
// a row the circuit closes; one failure opens it again.
//
// A request that meets an open circuit fails at once with
// [ErrCircuitOpen], unless Hold is set. A request that meets a half-open
// circuit whose probe is out waits for the probe's verdict (or for its
// context to end), and is then sent or decided like the others.
type BreakerConfig struct {
	// Disabled turns the circuit breaker off.
	Disabled bool

	// Hold makes a request that meets an open circuit wait until the
	// circuit closes instead of failing at once, as long as its context's
	// deadline lies beyond the next probe's verdict (no deadline: it
	// waits). Only probes reach the upstream meanwhile. A request whose
	// deadline comes first fails at once with an error matching both
	// [ErrCircuitOpen] and context.DeadlineExceeded. Hold suits batch work,
	// where a late answer beats none; the default, failing fast, suits a
	// service that has a fallback.
	Hold bool

	// FailureRatio trips the circuit when the share of failed attempts in
	// the window reaches it. Zero means 0.5; negative turns this rule off.
	FailureRatio float64

	// MinRequests is how many completed attempts the window must hold
	// before FailureRatio applies. Zero means 20; negative means no
	// minimum.
	MinRequests int

	// Window is the rolling window FailureRatio is measured over, kept in
	// ten buckets. Zero means one minute; negative means no window: the
	// counts run from the moment the circuit last closed.
	Window time.Duration

	// ConsecutiveFailures trips the circuit after that many failed
	// attempts in a row. Zero means 5; negative turns this rule off.
	ConsecutiveFailures int

	// OpenTimeout is the longest the circuit stays open before the next
	// probe, the bound of the growing open period. Zero means 10 seconds,
	// so that the circuit closes within about that long of the upstream's
	// recovery; negative means no bound.
	OpenTimeout time.Duration

	// HalfOpenProbes is how many probes in a row must succeed before a
	// half-open circuit closes. Zero means 3; negative means none: the
	// circuit closes when its open period ends.
	HalfOpenProbes int
}

// Outcomes reported to a breaker.
var (
	errBreakerFailure  = errors.New("steady: upstream failure")
	errBreakerExcluded = errors.New("steady: attempt not counted")
)

// upstreamKey names an upstream without allocating.
type upstreamKey struct{ scheme, host string }

func (k upstreamKey) String() string { return k.scheme + "://" + k.host }

// breakerPolicy is a BreakerConfig with its defaults resolved.
type breakerPolicy struct {
	hold      bool
	ratio     float64 // <= 0: rule off
	minReq    uint32
	consec    int // <= 0: rule off
	maxOpen   time.Duration
	probes    int // 0: none
	gobreaker gobreaker.Settings
	rnd       *jitter // Config.Random; nil: the global source
}

// breakers holds one breaker per upstream. A nil *breakers is a disabled
// breaker: every request is allowed.
type breakers struct {
	pol  breakerPolicy
	emit func(Event)
	// act is what a state change does beyond its report (the fleet's
	// circuit opens with the local one); called before the event is
	// delivered, so that observers only report.
	act func(Event)

	mu sync.RWMutex
	m  map[upstreamKey]*breaker // guarded by mu
}

func newBreakers(c BreakerConfig, emit, act func(Event)) *breakers {
	if c.Disabled {
		return nil
	}
	pol := breakerPolicy{
		hold:    c.Hold,
		ratio:   cmp.Or(c.FailureRatio, defaultBreakerFailureRatio),
		minReq:  1,
		consec:  cmp.Or(c.ConsecutiveFailures, defaultBreakerConsecutiveFailures),
		maxOpen: cmp.Or(c.OpenTimeout, defaultBreakerOpenTimeout),
		probes:  cmp.Or(c.HalfOpenProbes, defaultBreakerHalfOpenProbes),
	}
	if math.IsNaN(pol.ratio) {
		pol.ratio = defaultBreakerFailureRatio
	}
	if m := cmp.Or(c.MinRequests, defaultBreakerMinRequests); m > 0 {
		pol.minReq = uint32(min(m, math.MaxUint32))
	}
	if pol.maxOpen < 0 {
		pol.maxOpen = math.MaxInt64
	}
	pol.probes = max(pol.probes, 0)
	window := cmp.Or(c.Window, defaultBreakerWindow)
	var bucket time.Duration
	if window < 0 {
		window = 0 // gobreaker: counts cleared only on state changes
	} else if bucket = window / 10; bucket <= 0 {
		bucket = window
	}
	pol.gobreaker = gobreaker.Settings{
		MaxRequests:  uint32(max(pol.probes, 1)),
		Interval:     window,
		BucketPeriod: bucket,
		// The open period is timed here, not by gobreaker: its circuit
		// moves to half-open whenever it is asked after the open period
		// this package chose, and it is asked no sooner.
		Timeout:    time.Nanosecond,
		IsExcluded: func(err error) bool { return err == errBreakerExcluded },
	}
	return &breakers{pol: pol, emit: emit, act: act, m: make(map[upstreamKey]*breaker)}
}

// get returns the breaker of u's upstream, creating it if needed.
func (bs *breakers) get(u *url.URL) *breaker {
	if bs == nil {
		return nil
	}
	k := upstreamKey{u.Scheme, u.Host}
	bs.mu.RLock()
	b := bs.m[k]
	bs.mu.RUnlock()
	if b != nil {
		return b
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b = bs.m[k]; b != nil {
		return b
	}
	if len(bs.m) >= maxUpstreams {
		bs.evictLocked()
	}
	b = &breaker{upstream: k.String(), emit: bs.emit, act: bs.act, pol: &bs.pol}
	st := bs.pol.gobreaker
	st.Name = b.upstream
	st.OnStateChange = b.onStateChange
	st.ReadyToTrip = b.readyToTrip
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](st)
	bs.m[k] = b
	return b
}

// evictLocked forgets breakers to make room: closed ones first (they hold
// only recent counts), any one if none is closed.
func (bs *breakers) evictLocked() {
	var victim upstreamKey
	found := false
	for k, b := range bs.m {
		if b.peek() == gobreaker.StateClosed {
			delete(bs.m, k)
			if len(bs.m) < maxUpstreams*3/4 {
				return
			}
			continue
		}
		if !found {
			victim, found = k, true
		}
	}
	if len(bs.m) >= maxUpstreams && found {
		delete(bs.m, victim)
	}
}

// state reports the breaker state of upstream, written "scheme://host". A
// bare host matches any scheme: if several upstreams match, the most
// severe state is reported (open, then half-open, then closed). An unknown
// upstream is closed.
func (bs *breakers) state(upstream string) BreakerState {
	if bs == nil {
		return BreakerClosed
	}
	var one *breaker
	var many []*breaker
	bs.mu.RLock()
	if scheme, host, ok := strings.Cut(upstream, "://"); ok {
		one = bs.m[upstreamKey{strings.ToLower(scheme), host}]
	} else {
		for k, v := range bs.m {
			if k.host == upstream {
				many = append(many, v)
			}
		}
	}
	bs.mu.RUnlock()
	if one != nil {
		many = append(many, one)
	}
	s := BreakerClosed
	for _, b := range many {
		s = max(s, b.look().state) // the constants rise with severity
	}
	return s
}

// breaker is one upstream's circuit breaker: gobreaker's state machine
// and counts, with the timing of open periods, the probes and the wake-ups
// of waiting requests around it. Every call into gobreaker is made with mu
// held, so that nothing moves between a look at the open period and the
// gobreaker call; gobreaker's callbacks (onStateChange, readyToTrip) run
// inside such a call, with mu held. Events are delivered after mu is
// released.
type breaker struct {
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	upstream string
	emit     func(Event) // reports a state change
	act      func(Event) // acts on one, before its report; may be nil
	pol      *breakerPolicy

	lastState atomic.Int32 // last gobreaker.State reported by onStateChange

	mu        sync.Mutex
	openUntil time.Time     // end of the open period; guarded by mu
	opens     int           // open periods since the circuit last closed; guarded by mu
	gen       uint64        // state changes so far; guarded by mu
	probing   bool          // a probe is out in this half-open period; guarded by mu
	probeAt   time.Time     // when the probe out was allowed; guarded by mu
	lat       time.Duration // how long an attempt takes, a decaying maximum; guarded by mu
	tripped   string        // why readyToTrip tripped; guarded by mu
	opened    chan struct{} // closed at the next change to open; guarded by mu
	changed   chan struct{} // closed at the next change or probe verdict; guarded by mu
	pending   []Event       // state changes to deliver; guarded by mu
}

// view is what a request sees of its circuit before taking a slot.
type view struct {
	state BreakerState
	// until is when the open period ends (state open).
	until time.Time
	// probeFree says a half-open circuit (or an open one whose period is
	// over) would take a probe now.
	probeFree bool
	// changed is closed at the next state change or probe verdict; opened
	// at the next change to open.
	changed, opened <-chan struct{}
	// verdict is when the next probe's verdict is expected: the end of
	// the open period (or the probe's start) plus an attempt's duration.
	verdict time.Time
}

// look returns the circuit's state without taking a slot. A nil breaker
// is closed.
func (b *breaker) look() view {
	if b == nil {
		return view{}
	}
	b.mu.Lock()
	v := view{opened: b.chanLocked(&b.opened)}
	if b.peek() == gobreaker.StateClosed {
		// A closed circuit changes only when an attempt is reported:
		// gobreaker need not be asked.
		b.mu.Unlock()
		return v
	}
	v.changed = b.chanLocked(&b.changed)
	now := time.Now()
	switch {
	case b.peek() == gobreaker.StateOpen && now.Before(b.openUntil):
		v.state, v.until = BreakerOpen, b.openUntil
		v.verdict = b.openUntil.Add(b.lat)
	case b.peek() == gobreaker.StateOpen:
		// The open period is over: the next request is a probe, or,
		// with no probes, the circuit closes when it is allowed.
		v.state, v.probeFree = BreakerHalfOpen, true
		if b.pol.probes == 0 {
			v.state, v.probeFree = BreakerClosed, false
		}
	default:
		v.state = fromGobreaker(b.cb.State())
		v.probeFree = v.state == BreakerHalfOpen && !b.probing
		if b.probing {
			v.verdict = b.probeAt.Add(b.lat)
		}
	}
	b.flushUnlock()
	return v
}

// chanLocked returns *c, making it if needed.
func (b *breaker) chanLocked(c *chan struct{}) chan struct{} {
	if *c == nil {
		*c = make(chan struct{})
	}
	return *c
}

// breakerSlot is one allowed attempt; give it back with report.
type breakerSlot struct {
	done  func(error) // gobreaker's
	probe bool
	gen   uint64
	at    time.Time // when it was allowed
}

// allow takes a slot for an attempt, or fails with ErrCircuitOpen when the
// circuit is open or half-open with its probe out.
func (b *breaker) allow() (breakerSlot, error) {
	if b == nil {
		return breakerSlot{}, nil
	}
	b.mu.Lock()
	if b.peek() == gobreaker.StateOpen {
		if time.Now().Before(b.openUntil) {
			b.mu.Unlock()
			return breakerSlot{}, ErrCircuitOpen
		}
		if b.pol.probes == 0 {
			// No probes: the open period's end closes the circuit.
			if done, err := b.cb.Allow(); err == nil {
				done(nil)
			}
		}
	}
	if b.peek() != gobreaker.StateClosed && b.cb.State() == gobreaker.StateHalfOpen && b.probing {
		b.flushUnlock()
		return breakerSlot{}, ErrCircuitOpen
	}
	done, err := b.cb.Allow()
	s := breakerSlot{done: done, gen: b.gen, at: time.Now()}
	if err == nil && b.peek() == gobreaker.StateHalfOpen {
		s.probe, b.probing, b.probeAt = true, true, s.at
	}
	b.flushUnlock()
	if err != nil {
		return breakerSlot{}, ErrCircuitOpen
	}
	return s, nil
}

// report records an attempt's outcome: nil, errBreakerFailure or
// errBreakerExcluded. It gives back s; a zero slot is a no-op, and so is
// the slot of a period that has ended.
func (b *breaker) report(s breakerSlot, outcome error) {
	if s.done == nil {
		return
	}
	b.mu.Lock()
	if outcome != errBreakerExcluded {
		// The latest attempt's duration, or a slowly forgotten longer
		// one: how long a probe's verdict takes.
		b.lat = max(time.Since(s.at), b.lat-b.lat/8)
	}
	if s.gen != b.gen {
		// The attempt was allowed before the latest state change: its
		// outcome belongs to a period that has ended, and gobreaker
		// would ignore it, but asking it at all would move an open
		// circuit to half-open (its own timeout is a nanosecond), cutting
		// short the open period the event announced.
		b.flushUnlock()
		return
	}
	s.done(outcome)
	if s.probe {
		// The probe's verdict did not change the state (a success
		// short of the count, or an excluded attempt): the next probe
		// may go.
		b.probing = false
		b.wakeLocked()
	}
	b.flushUnlock()
}

// peek returns gobreaker's last reported state without asking gobreaker,
// which might move it; safe without b.mu (for eviction).
func (b *breaker) peek() gobreaker.State {
	return gobreaker.State(b.lastState.Load())
}

// readyToTrip is gobreaker's ReadyToTrip; it runs with b.mu held.
func (b *breaker) readyToTrip(c gobreaker.Counts) bool {
	p := b.pol
	if p.consec > 0 && c.ConsecutiveFailures >= uint32(min(p.consec, math.MaxUint32)) {
		b.tripped = fmt.Sprintf("%d failures in a row", c.ConsecutiveFailures)
		return true
	}
	done := c.TotalSuccesses + c.TotalFailures
	if p.ratio > 0 && done >= p.minReq && float64(c.TotalFailures) >= p.ratio*float64(done) {
		b.tripped = fmt.Sprintf("%d of %d attempts failed", c.TotalFailures, done)
		return true
	}
	return false
}

// onStateChange is gobreaker's OnStateChange; it runs with b.mu held.
func (b *breaker) onStateChange(_ string, from, to gobreaker.State) {
	now := time.Now()
	b.lastState.Store(int32(to))
	b.gen++
	b.probing = false
	ev := Event{Kind: EventBreakerState, Time: now, Upstream: b.upstream, From: fromGobreaker(from), To: fromGobreaker(to)}
	switch to {
	case gobreaker.StateOpen:
		b.opens++
		d := openPeriod(b.opens, b.pol.maxOpen, b.pol.rnd)
		b.openUntil = now.Add(d)
		ev.Wait, ev.Until = d, b.openUntil
		ev.Reason = b.tripped
		if from == gobreaker.StateHalfOpen {
			ev.Reason = "probe failed"
		}
		if b.opened != nil {
			close(b.opened)
			b.opened = nil
		}
	case gobreaker.StateHalfOpen:
		ev.Reason = "open period over"
	case gobreaker.StateClosed:
		b.opens = 0
		ev.Reason = "probes succeeded"
		if b.pol.probes == 0 {
			ev.Reason = "open period over"
		}
	}
	b.tripped = ""
	b.wakeLocked()
	b.pending = append(b.pending, ev)
}

// wakeLocked wakes the requests waiting for a change.
func (b *breaker) wakeLocked() {
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

// flushUnlock releases b.mu and delivers the state changes queued while it
// was held.
func (b *breaker) flushUnlock() {
	evs := b.pending
	b.pending = nil
	b.mu.Unlock()
	for _, ev := range evs {
		if b.act != nil {
			b.act(ev)
		}
		b.emit(ev)
	}
}

// openPeriod returns the length of the n-th open period in a row: about a
// second, doubling with each failed probe up to max, less up to a quarter
// at random (drawn from rnd) so that many clients do not probe in step.
func openPeriod(n int, max time.Duration, rnd *jitter) time.Duration {
	d := firstOpenPeriod
	for i := 1; i < n && d < max; i++ {
		if d > math.MaxInt64/2 {
			d = math.MaxInt64
			break
		}
		d *= 2
	}
	d = min(d, max)
	return d - time.Duration(rnd.int64N(int64(d/4)+1))
}

func fromGobreaker(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	}
	return BreakerClosed
}
