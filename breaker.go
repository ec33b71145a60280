package steady

import (
	"cmp"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Default circuit breaker settings, used where a [BreakerConfig] field is
// zero.
const (
	// DefaultBreakerFailureRatio is BreakerConfig.FailureRatio when zero.
	DefaultBreakerFailureRatio = 0.5
	// DefaultBreakerMinRequests is BreakerConfig.MinRequests when zero.
	DefaultBreakerMinRequests = 20
	// DefaultBreakerWindow is BreakerConfig.Window when zero.
	DefaultBreakerWindow = time.Minute
	// DefaultBreakerConsecutiveFailures is BreakerConfig.ConsecutiveFailures
	// when zero.
	DefaultBreakerConsecutiveFailures = 10
	// DefaultBreakerOpenTimeout is BreakerConfig.OpenTimeout when zero.
	DefaultBreakerOpenTimeout = 30 * time.Second
	// DefaultBreakerHalfOpenProbes is BreakerConfig.HalfOpenProbes when
	// zero.
	DefaultBreakerHalfOpenProbes = 3
	// MaxUpstreams is how many upstreams (scheme and host) a Transport
	// keeps a breaker for. Beyond it, breakers of upstreams whose circuit
	// is closed are forgotten first.
	MaxUpstreams = 1024
)

// BreakerConfig configures the circuit breaker kept per upstream (scheme
// and host). Only server failures count against an upstream: statuses 500
// and above (529 included) and transport failures. 4xx and 429 responses
// count as successes: the upstream is up and answering. A caller's own
// cancellation counts as neither.
//
// The circuit opens when, over the rolling Window, at least MinRequests
// attempts completed and the share of failures reached FailureRatio, or
// when ConsecutiveFailures attempts failed in a row. While open, requests
// fail at once with [ErrCircuitOpen] without touching the network. After
// OpenTimeout the circuit is half-open: HalfOpenProbes requests go through;
// if all succeed it closes, if one fails it opens again.
type BreakerConfig struct {
	// Disabled turns the circuit breaker off.
	Disabled bool

	// FailureRatio trips the circuit when the share of failed attempts in
	// the window reaches it. Zero means 0.5; negative disables this rule.
	FailureRatio float64

	// MinRequests is how many completed attempts the window must hold
	// before FailureRatio applies. Zero means 20.
	MinRequests uint32

	// Window is the rolling window FailureRatio is measured over, kept in
	// ten buckets. Zero means one minute.
	Window time.Duration

	// ConsecutiveFailures trips the circuit after that many failed
	// attempts in a row. Zero means 10; negative disables this rule.
	ConsecutiveFailures int

	// OpenTimeout is how long the circuit stays open before it lets
	// probes through. Zero means 30 seconds.
	OpenTimeout time.Duration

	// HalfOpenProbes is how many requests a half-open circuit lets
	// through; when all of them succeed the circuit closes. Zero means 3.
	HalfOpenProbes uint32
}

// Outcomes reported to a breaker.
var (
	errBreakerFailure  = errors.New("steady: upstream failure")
	errBreakerExcluded = errors.New("steady: attempt not counted")
)

// upstreamKey names an upstream without allocating.
type upstreamKey struct{ scheme, host string }

func (k upstreamKey) String() string { return k.scheme + "://" + k.host }

// breakers holds one breaker per upstream. A nil *breakers is a disabled
// breaker: every request is allowed.
type breakers struct {
	settings gobreaker.Settings // template; OnStateChange is set per breaker
	emit     func(Event)

	mu sync.RWMutex
	m  map[upstreamKey]*breaker // guarded by mu
}

func newBreakers(c BreakerConfig, emit func(Event)) *breakers {
	if c.Disabled {
		return nil
	}
	ratio := cmp.Or(c.FailureRatio, DefaultBreakerFailureRatio)
	minReq := positiveOr(c.MinRequests, DefaultBreakerMinRequests)
	window := positiveOr(c.Window, DefaultBreakerWindow)
	consec := cmp.Or(c.ConsecutiveFailures, DefaultBreakerConsecutiveFailures)
	open := positiveOr(c.OpenTimeout, DefaultBreakerOpenTimeout)
	probes := positiveOr(c.HalfOpenProbes, DefaultBreakerHalfOpenProbes)
	bucket := window / 10
	if bucket <= 0 {
		bucket = window
	}
	return &breakers{
		settings: gobreaker.Settings{
			MaxRequests:  probes,
			Interval:     window,
			BucketPeriod: bucket,
			Timeout:      open,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				if consec > 0 && c.ConsecutiveFailures >= uint32(min(consec, 1<<31)) {
					return true
				}
				done := c.TotalSuccesses + c.TotalFailures
				return ratio > 0 && done >= minReq && float64(c.TotalFailures) >= ratio*float64(done)
			},
			IsExcluded: func(err error) bool { return err == errBreakerExcluded },
		},
		emit: emit,
		m:    make(map[upstreamKey]*breaker),
	}
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
	if len(bs.m) >= MaxUpstreams {
		bs.evictLocked()
	}
	b = &breaker{upstream: k.String(), emit: bs.emit}
	st := bs.settings
	st.Name = b.upstream
	st.OnStateChange = b.onStateChange
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
			if len(bs.m) < MaxUpstreams*3/4 {
				return
			}
			continue
		}
		if !found {
			victim, found = k, true
		}
	}
	if len(bs.m) >= MaxUpstreams && found {
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
		st := fromGobreaker(b.cb.State()) // may move open to half-open
		b.flush()
		s = max(s, st) // the constants rise with severity
	}
	return s
}

// breaker is one upstream's circuit breaker. gobreaker calls OnStateChange
// with its own lock held, so changes are queued there and delivered by
// flush once the gobreaker call has returned.
type breaker struct {
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	upstream string
	emit     func(Event)

	lastState atomic.Int32 // last gobreaker.State reported by OnStateChange
	npending  atomic.Int32 // len(pending), read without mu
	mu        sync.Mutex
	pending   []Event // guarded by mu
}

// allow asks whether an attempt may go; done must then be given to report.
// err is non-nil when the circuit is open (or half-open and full).
func (b *breaker) allow() (done func(error), err error) {
	if b == nil {
		return nil, nil
	}
	done, err = b.cb.Allow()
	b.flush()
	return done, err
}

// report records an attempt's outcome: nil, errBreakerFailure or
// errBreakerExcluded.
func (b *breaker) report(done func(error), outcome error) {
	if done == nil {
		return
	}
	done(outcome)
	b.flush()
}

// peek returns the state without moving it (no timeout check), for
// eviction under the breakers' lock.
func (b *breaker) peek() gobreaker.State {
	return gobreaker.State(b.lastState.Load())
}

func (b *breaker) onStateChange(_ string, from, to gobreaker.State) {
	b.lastState.Store(int32(to))
	b.mu.Lock()
	b.pending = append(b.pending, Event{
		Kind:     EventBreakerState,
		Time:     time.Now(),
		Upstream: b.upstream,
		From:     fromGobreaker(from),
		To:       fromGobreaker(to),
	})
	b.npending.Add(1)
	b.mu.Unlock()
}

// flush delivers queued state changes. It must be called with no lock held.
func (b *breaker) flush() {
	if b.npending.Load() == 0 {
		return
	}
	b.mu.Lock()
	evs := b.pending
	b.pending = nil
	b.npending.Store(0)
	b.mu.Unlock()
	for _, ev := range evs {
		b.emit(ev)
	}
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
