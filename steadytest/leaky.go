package steadytest

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Limiter is a limit that announces nothing: a gateway's or a proxy's
// limiter in front of a model server. Set as [ProviderConfig.Limiter], it
// decides every request the provider would otherwise count against
// RequestsPerWindow and TokensPerWindow; the provider then sends no
// rate-limit headers for it, and a 429 carries Retry-After only when Admit
// returns a positive wait.
type Limiter interface {
	// Admit admits one request arriving at now, or refuses it and
	// returns how long until one would be admitted (zero: the refusal
	// says nothing about when, as a bare 429).
	Admit(now time.Time) (ok bool, retryIn time.Duration)
}

// limitKind is how a [Limit] counts.
type limitKind uint8

const (
	kindGCRA limitKind = iota
	kindFixed
	kindSliding
)

// Limit is a header-less request limit: a leaky bucket (GCRA), a token
// bucket, a fixed window or a sliding window. Its limit can be scaled while
// it runs, to test how a client finds a changed limit. A Limit is safe for
// concurrent use; make one with [LeakyBucket] or [NewLimit].
type Limit struct {
	mu      sync.Mutex
	kind    limitKind
	rate    float64       // GCRA: requests a second
	burst   float64       // GCRA: requests beyond the first admitted at once
	n       int           // windows: requests a window
	length  time.Duration // windows: the window
	noRetry bool          // refusals carry no wait
	name    string
	tat     int64   // GCRA: theoretical arrival time, Unix nanoseconds
	start   int64   // fixed window: the current window's start
	count   int     // fixed window: admitted in the current window
	log     []int64 // sliding window: admissions, oldest first
}

var _ Limiter = (*Limit)(nil)

// LeakyBucket returns the limiter of nginx's limit_req and most API
// gateways (GCRA): requests are admitted at perSecond, and up to burst
// more may arrive early; a request that would exceed the burst is refused
// (nginx's "nodelay"). Burst zero admits requests no closer together than
// 1/perSecond.
func LeakyBucket(perSecond float64, burst int) *Limit {
	if !(perSecond > 0) || math.IsInf(perSecond, 0) {
		panic(fmt.Sprintf("steadytest: LeakyBucket rate %v must be positive and finite", perSecond))
	}
	return &Limit{kind: kindGCRA, rate: perSecond, burst: float64(max(burst, 0)),
		name: fmt.Sprintf("leaky %g/s burst %d", perSecond, max(burst, 0)), length: time.Second}
}

// NewLimit returns a limit of n requests per length, counted by a:
//   - [TokenBucket]: a bucket of n requests refilled at n per length, full
//     at the start: n requests at once, then n per length;
//   - [FixedWindow]: n requests in each window of the given length, the
//     windows aligned on the Unix epoch: the count restarts at every
//     boundary;
//   - [SlidingWindow]: n requests in any span of the given length.
//
// It panics on any other Algorithm.
func NewLimit(a Algorithm, n int, length time.Duration) *Limit {
	n, length = max(n, 1), max(length, time.Nanosecond)
	switch a {
	case TokenBucket:
		return &Limit{kind: kindGCRA, rate: float64(n) / length.Seconds(), burst: float64(n - 1),
			name: fmt.Sprintf("token bucket %d/%v", n, length), length: length}
	case FixedWindow:
		return &Limit{kind: kindFixed, n: n, length: length, name: fmt.Sprintf("fixed window %d/%v", n, length)}
	case SlidingWindow:
		return &Limit{kind: kindSliding, n: n, length: length, name: fmt.Sprintf("sliding window %d/%v", n, length)}
	}
	panic(fmt.Sprintf("steadytest: NewLimit of unknown algorithm %v", a))
}

// WithoutRetryAfter makes l refuse with bare 429s, without Retry-After, as
// nginx's limit_req does. It returns l.
func (l *Limit) WithoutRetryAfter() *Limit {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.noRetry = true
	l.name += ", no Retry-After"
	return l
}

// String describes the limit as made, e.g. "leaky 20/s burst 10".
func (l *Limit) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.name
}

// Rate returns the sustained rate the limit admits now, in requests a
// second.
func (l *Limit) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kind == kindGCRA {
		return l.rate
	}
	return float64(l.n) / l.length.Seconds()
}

// Window returns the limit's period: a second for a leaky bucket, the
// refill period of a token bucket, the window of a window limit.
func (l *Limit) Window() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.length
}

// Scale multiplies the limit by f from now on (0.5 halves it, 2 doubles
// it): a leaky or token bucket's rate and burst, a window's count (at
// least 1). A non-positive or non-finite f is ignored.
func (l *Limit) Scale(f float64) {
	if !(f > 0) || math.IsInf(f, 0) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kind == kindGCRA {
		l.rate *= f
		if l.burst > 0 {
			l.burst = math.Max(math.Round((l.burst+1)*f)-1, 0)
		}
		return
	}
	l.n = max(int(math.Round(float64(l.n)*f)), 1)
}

// Admit implements [Limiter].
func (l *Limit) Admit(now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := now.UnixNano()
	var wait time.Duration
	switch l.kind {
	case kindGCRA:
		step := 1e9 / l.rate
		tat := max(l.tat, t)
		if excess := float64(tat-t) - l.burst*step; excess > 0.5 {
			wait = time.Duration(math.Ceil(excess))
		} else {
			l.tat = tat + int64(math.Round(step))
		}
	case kindFixed:
		start := t - t%int64(l.length)
		if start != l.start {
			l.start, l.count = start, 0
		}
		if l.count >= l.n {
			wait = time.Duration(start + int64(l.length) - t)
		} else {
			l.count++
		}
	case kindSliding:
		cut := t - int64(l.length)
		i := 0
		for i < len(l.log) && l.log[i] <= cut {
			i++
		}
		if i > 0 {
			l.log = append(l.log[:0], l.log[i:]...)
		}
		if k := len(l.log); k >= l.n {
			// The k-n+1 oldest must leave the window.
			wait = time.Duration(l.log[k-l.n] + int64(l.length) - t)
		} else {
			l.log = append(l.log, t)
		}
	}
	if wait > 0 {
		if l.noRetry {
			return false, 0
		}
		return false, wait
	}
	return true, 0
}

// limiterDecision asks a Limiter about one request, as the provider's own
// limits would answer: no quotas to announce.
func limiterDecision(l Limiter, now time.Time) decision {
	ok, wait := l.Admit(now)
	return decision{admit: ok, wait: max(wait, 0), which: "requests"}
}
