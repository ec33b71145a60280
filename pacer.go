package steady

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// PacingConfig configures proactive throttling. Limits are kept per
// partition (by default: upstream host, credential fingerprint and model).
// Before each attempt a request reserves one request and its estimated
// tokens in every window of its partition, and waits for its turn when
// the limits announced by the provider's headers, or stated here, require
// it. Each window is paced at its quota less headroom, spread evenly over
// its period (or faster, when what remains can be spread over the time to
// its reset), with a burst no larger than the headroom; every response's
// headers correct what is left. A 429 or Retry-After pauses the whole
// partition until the hinted time. When a provider announces no limits and
// none are configured, a requests quota is inferred from what it accepts
// once it starts refusing. The zero value paces by the headers alone, with
// the defaults documented on each field.
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
	// wins. Zero means not known.
	RequestsPerMinute int64
	TokensPerMinute   int64

	// Key returns the partition key of a request, given the model named in
	// its JSON body ("" when none). Nil means upstream host, a fingerprint
	// of the credential header (Authorization, Api-Key or X-Api-Key; the
	// credential itself is never stored) and the model. The key is shown
	// as the partition's label in snapshots and events, so it must not
	// hold a secret.
	Key func(req *http.Request, model string) string

	// Estimator returns the tokens a request counts against token limits.
	// Nil means an estimate from the JSON body: its text at about four
	// bytes a token plus its maximum output tokens, times n; see
	// [EstimateTokens]. A request without a replayable JSON body counts
	// one request and no tokens.
	Estimator Estimator

	// MaxPartitions bounds how many partitions are kept. When it is
	// reached, partitions idle for IdleTimeout are dropped, and if none
	// is, the least recently used one with nothing in flight or waiting;
	// partitions in use are never dropped, so the count can exceed the
	// bound by the number of partitions busy at once. Idle partitions are
	// also swept every 256 new partitions. There are no background
	// goroutines: all of this happens when a partition is made. Zero
	// means 1024.
	MaxPartitions int

	// IdleTimeout is how long a partition stays unused before it may be
	// dropped. Zero means 10 minutes.
	IdleTimeout time.Duration

	// ColdStart is how many requests of a partition may be in flight
	// before its first response tells its limits, and after a 429 until
	// a request succeeds again; the rest wait. Zero means 4; a negative
	// value means no bound.
	ColdStart int

	// MaxWait caps any single pacing wait or cooldown. A request whose
	// wait would be longer fails at once with a [*WaitError] matching
	// [ErrWaitTooLong]. Zero means 2 minutes.
	MaxWait time.Duration

	// Store, if set, shares this Transport's pacing partitions with other
	// processes through it (see package steadyredis). Nil means each
	// Transport paces alone.
	Store Store
}

// Defaults for [PacingConfig] fields left zero.
const (
	DefaultHeadroom      = 0.02             // PacingConfig.Headroom
	DefaultMaxPartitions = 1024             // PacingConfig.MaxPartitions
	DefaultIdleTimeout   = 10 * time.Minute // PacingConfig.IdleTimeout
	DefaultColdStart     = 4                // PacingConfig.ColdStart
	DefaultMaxWait       = 2 * time.Minute  // PacingConfig.MaxWait
)

// defaultCooldown is how long a partition pauses after a 429 that carries
// no hint and names no exhausted window.
const defaultCooldown = time.Second

// ErrWaitTooLong is matched, with errors.Is, by the error of a request whose
// pacing wait would exceed [PacingConfig.MaxWait].
var ErrWaitTooLong = errors.New("steady: pacing wait exceeds the maximum")

// WaitError reports a request refused by pacing without being sent,
// because the wait it needed would pass its context's deadline (Err is
// context.DeadlineExceeded) or exceed MaxWait (Err is ErrWaitTooLong).
type WaitError struct {
	Wait      time.Duration // how long the request would have had to wait
	Partition string        // the partition's label
	Err       error         // context.DeadlineExceeded or ErrWaitTooLong
}

// Error describes the refused wait.
func (e *WaitError) Error() string {
	return fmt.Sprintf("steady: pacing would wait %v in partition %q: %v", e.Wait, e.Partition, e.Err)
}

// Unwrap returns context.DeadlineExceeded or ErrWaitTooLong.
func (e *WaitError) Unwrap() error { return e.Err }

// pacer keeps the limits of every partition and makes requests wait for
// their turn. The transport calls acquire before each attempt and settle on
// the permit after it.
type pacer struct {
	cfg          PacingConfig
	headroom     float64
	coldStart    int
	maxParts     int
	idle         time.Duration
	maxWait      time.Duration
	emit         func(Event)
	breakerState func(upstream string) BreakerState
	seed         maphash.Seed

	mu      sync.RWMutex
	parts   map[uint64]*partition // guarded by mu
	inserts int                   // partitions made; guarded by mu
}

// newPacer returns a pacer. emit delivers events (never call it under a
// lock); breakerState reports an upstream's breaker state for snapshots.
func newPacer(cfg PacingConfig, emit func(Event), breakerState func(upstream string) BreakerState) *pacer {
	p := &pacer{
		cfg:          cfg,
		headroom:     cfg.Headroom,
		coldStart:    cfg.ColdStart,
		maxParts:     cfg.MaxPartitions,
		idle:         cfg.IdleTimeout,
		maxWait:      cfg.MaxWait,
		emit:         emit,
		breakerState: breakerState,
		seed:         maphash.MakeSeed(),
		parts:        make(map[uint64]*partition),
	}
	switch {
	case p.headroom == 0 || math.IsNaN(p.headroom):
		p.headroom = DefaultHeadroom
	case p.headroom < 0:
		p.headroom = 0
	case p.headroom > 0.5:
		p.headroom = 0.5
	}
	p.coldStart = cmp.Or(p.coldStart, DefaultColdStart)
	p.maxParts = positiveOr(p.maxParts, DefaultMaxPartitions)
	p.idle = positiveOr(p.idle, DefaultIdleTimeout)
	p.maxWait = positiveOr(p.maxWait, DefaultMaxWait)
	if p.emit == nil {
		p.emit = func(Event) {}
	}
	if p.breakerState == nil {
		p.breakerState = func(string) BreakerState { return BreakerClosed }
	}
	return p
}

// pace returns the limiter settings for a window of quota limit per
// period: the quota less headroom spread evenly over the period, and a
// burst no larger than the headroom, so that no span of one period ever
// admits more than the quota.
func (p *pacer) pace(limit float64, period time.Duration) (rate.Limit, int) {
	r := max(rate.Limit(limit*(1-p.headroom)/period.Seconds()), minRate)
	b := int(min(max(math.Floor(limit*p.headroom), 1), maxBurst))
	return r, b
}

// admitOpts are the breaker's say in a pacing wait. stop (may be nil) is
// closed when the request must be decided at once: acquire then returns
// errStopped, holding nothing. urgent marks a half-open probe: it goes
// ahead of the partition's queue, still counted in the limits.
type admitOpts struct {
	stop   <-chan struct{}
	urgent bool
}

// errStopped is returned by acquire when admitOpts.stop was closed during
// the wait.
var errStopped = errors.New("steady: pacing wait stopped")

// acquire waits until req may be sent. A nil permit is valid. The error is
// final: ctx's error when it ends during a wait, errStopped when o.stop is
// closed, or a *WaitError when the wait would pass ctx's deadline or
// MaxWait.
func (p *pacer) acquire(ctx context.Context, req *http.Request, o admitOpts) (*permit, error) {
	if p == nil || p.cfg.Disabled {
		return nil, nil
	}
	model, est := inspectRequest(req, p.cfg.Estimator)
	now := time.Now()
	pt := p.partitionFor(req, []byte(model), now)
	pm, err := pt.acquire(ctx, p, req, est, now, o)
	if err != nil {
		pt.release()
		return nil, err
	}
	return pm, nil
}

// acquire waits for pt's cooldown, a cold-start slot and the windows, in
// that order, and returns the permit.
func (pt *partition) acquire(ctx context.Context, p *pacer, req *http.Request, est TokenEstimate, start time.Time, o admitOpts) (*permit, error) {
	now := start
	var pm *permit
	coldDone := false
	pt.mu.Lock()
	for {
		// pt.mu is held here.
		if now.Before(pt.cooldown) && !o.urgent {
			d := pt.cooldown.Sub(now)
			if err := pt.refuseLocked(ctx, p, req, now, d, pm); err != nil {
				return nil, err
			}
			if err := pt.waitLocked(func() error { return sleep(ctx, d, o.stop) }); err != nil {
				pt.dropLocked(pm)
				pt.mu.Unlock()
				return nil, err
			}
			now = time.Now()
			continue
		}
		if pm != nil {
			break // reserved and past any cooldown
		}
		if (!pt.known || pt.probing) && !coldDone && !o.urgent && p.coldStart > 0 && pt.inflight+pt.reserved >= p.coldStart {
			if pt.wake == nil {
				pt.wake = make(chan struct{})
			}
			wake := pt.wake
			if err := pt.waitLocked(func() error { return waitCold(ctx, wake, p.maxWait, o.stop) }); err != nil {
				pt.mu.Unlock()
				return nil, err
			}
			now = time.Now()
			// After MaxWait of cold start, go: a slow first response
			// must not hold the partition forever.
			coldDone = now.Sub(start) >= p.maxWait
			continue
		}
		d := pt.delayLocked(now, est)
		if o.urgent {
			d = 0
		}
		if d > 0 {
			if err := pt.refuseLocked(ctx, p, req, now, d, nil); err != nil {
				return nil, err
			}
		}
		pt.takeLocked(now, est)
		pm = &permit{pt: pt, p: p, seq: pt.seq, issued: pt.issued}
		pt.reserved++
		if d <= 0 {
			break
		}
		if err := pt.waitLocked(func() error { return sleep(ctx, d, o.stop) }); err != nil {
			pt.dropLocked(pm)
			pt.mu.Unlock()
			return nil, err
		}
		now = time.Now()
		// loop: a cooldown may have begun while this request waited
	}
	pt.reserved--
	pt.inflight++
	pt.sent.add(est)
	pm.sent = pt.sent
	pt.mu.Unlock()
	if waited := now.Sub(start); waited > 0 {
		ev := Event{Kind: EventPace, Time: now, Upstream: pt.upstream, Partition: pt.label, Wait: waited}
		if req != nil && req.URL != nil {
			ev.Method, ev.Path = req.Method, req.URL.Path
		}
		p.emit(ev)
	}
	return pm, nil
}

// waitLocked runs wait with pt.mu released, counted as waiting, and
// returns with pt.mu held again.
func (pt *partition) waitLocked(wait func() error) error {
	pt.waiting++
	pt.mu.Unlock()
	err := wait()
	pt.mu.Lock()
	pt.waiting--
	return err
}

// refuseLocked returns, with pt.mu released, the error for a wait of d
// that would pass ctx's deadline or MaxWait; or nil with pt.mu still held.
func (pt *partition) refuseLocked(ctx context.Context, p *pacer, req *http.Request, now time.Time, d time.Duration, pm *permit) error {
	var err error
	if d > p.maxWait {
		err = ErrWaitTooLong
	} else if dl, ok := ctx.Deadline(); ok && now.Add(d).After(dl) {
		err = context.DeadlineExceeded
	} else {
		return nil
	}
	pt.dropLocked(pm)
	label, upstream := pt.label, pt.upstream
	pt.mu.Unlock()
	we := &WaitError{Wait: d, Partition: label, Err: err}
	ev := Event{Kind: EventRejected, Time: now, Upstream: upstream, Partition: label, Wait: d, Reason: "pacing wait", Err: we}
	if req != nil && req.URL != nil {
		ev.Method, ev.Path = req.Method, req.URL.Path
	}
	p.emit(ev)
	return we
}

// dropLocked forgets a reservation whose request will not be sent. Its
// cost stays spent: the limiter cannot tell whether the server saw it.
func (pt *partition) dropLocked(pm *permit) {
	if pm == nil {
		return
	}
	pm.done.Store(true)
	pt.reserved--
	pt.wakeLocked()
}

// sleep waits d or until ctx ends or stop is closed.
func sleep(ctx context.Context, d time.Duration, stop <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return errStopped
	}
}

// waitCold waits for a cold-start slot, ctx's end, stop, or max.
func waitCold(ctx context.Context, wake <-chan struct{}, max time.Duration, stop <-chan struct{}) error {
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-wake:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return errStopped
	}
}

// permit is one attempt's reservation in its partition.
type permit struct {
	pt   *partition
	p    *pacer
	done atomic.Bool
	// The partition's sequence number and cumulative costs right after
	// this permit was issued, and right after it was sent.
	seq          uint64
	issued, sent costs
}

// settle reconciles the reservation with what the attempt's response (or
// error) says: the rate-limit headers, usage, a 429 cooldown. nil-safe;
// calls after the first do nothing.
func (pm *permit) settle(resp *http.Response, err error) {
	if pm == nil || pm.done.Swap(true) {
		return
	}
	now := time.Now()
	var rl RateLimits
	var buf [maxWindows + 2]Window
	status := 0
	if resp != nil {
		status = resp.StatusCode
		rl = appendRateLimits(buf[:0], resp.Header, now)
	}
	pm.finish(resp != nil, status, rl, now)
}

// cancel gives back the permit of a request that will not be sent. Its
// cost stays spent. nil-safe; calls after settle or cancel do nothing.
func (pm *permit) cancel() {
	if pm == nil || pm.done.Swap(true) {
		return
	}
	pt := pm.pt
	pt.mu.Lock()
	pt.inflight--
	pt.wakeLocked()
	pt.mu.Unlock()
	pt.release()
}

// finish is settle after the headers are read: status is the response's
// (0 without one, when responded is false) and rl what its headers
// announced.
func (pm *permit) finish(responded bool, status int, rl RateLimits, now time.Time) {
	if ev, ok := pm.observe(responded, status, rl, now); ok {
		pm.p.emit(ev)
	}
	pm.pt.release()
}

// observe applies one attempt's outcome to the partition: status is the
// response's (0 without one) and rl what its headers announced. It returns
// a cooldown event to emit after the lock is released.
func (pm *permit) observe(responded bool, status int, rl RateLimits, now time.Time) (Event, bool) {
	pt, p := pm.pt, pm.p
	pt.mu.Lock()
	pt.inflight--
	if responded {
		// Limits are known once announced, or once a success shows
		// that none will be: an error without headers (a gateway's 502)
		// tells nothing.
		if len(rl.Windows) > 0 || status < 400 {
			pt.known = true
		}
		fresh := pm.seq >= pt.observed
		if fresh {
			pt.observed = pm.seq
		}
		for _, w := range rl.Windows {
			pt.observeLocked(p, pm, w, now, fresh)
		}
		if status < 400 {
			pt.ok.add(now)
			pt.okTotal++
		}
		if len(rl.Windows) == 0 {
			pt.inferLocked(p, status, now)
		}
	}
	var ev Event
	emit := false
	if responded && status != http.StatusTooManyRequests && pm.seq > pt.probeSeq {
		pt.probing = false
	}
	if status == http.StatusTooManyRequests || (status >= 400 && rl.HasRetryAfter) {
		// Until a request succeeds again, only a few go out at once:
		// when the cooldown ends, the waiters do not all rush in.
		pt.probing, pt.probeSeq = true, pt.seq
		var until time.Time
		if rl.HasRetryAfter {
			until = now.Add(min(max(rl.RetryAfter, 0), p.maxWait))
		} else if t := pt.exhaustedResetLocked(now); !t.IsZero() {
			until = t
		} else {
			until = now.Add(defaultCooldown)
		}
		if until.Sub(now) > p.maxWait {
			until = now.Add(p.maxWait)
		}
		if until.After(pt.cooldown) {
			pt.cooldown = until
			emit = true
			ev = Event{Kind: EventCooldown, Time: now, Upstream: pt.upstream, Partition: pt.label, Status: status, Until: until}
		}
	}
	pt.wakeLocked()
	pt.mu.Unlock()
	return ev, emit
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
	// requests waiting for their turn.
	InFlight, Waiting int
	// CooldownUntil is when a cooldown after a 429 ends; zero if none.
	CooldownUntil time.Time
	// Known is false while the partition waits for its first response to
	// tell its limits (cold start).
	Known   bool
	Breaker BreakerState // the upstream's circuit breaker state
}

// WindowSnapshot is one rate-limit window of a partition.
type WindowSnapshot struct {
	Unit Unit
	// Name is the announced window's name; "config" for a configured
	// limit, "inferred" for a quota inferred from 429s.
	Name string
	// Limit is the quota per Period; -1 when not known.
	Limit int64
	// Remaining is what the latest response announced; -1 when unknown
	// (always for a configured window).
	Remaining int64
	// Reset is when the latest response said the window is replenished;
	// zero when unknown.
	Reset  time.Time
	Period time.Duration
	// Rate is the pace in units per second, and Tokens what the limiter
	// holds now (negative while requests wait for their reservations);
	// both are zero while the window's quota is unknown.
	Rate   float64
	Tokens float64
}

// Snapshot returns the state of every pacing partition, sorted by key.
func (t *Transport) Snapshot() []PartitionSnapshot {
	if t == nil || t.pacer == nil {
		return nil
	}
	return t.pacer.snapshot(time.Now())
}

func (p *pacer) snapshot(now time.Time) []PartitionSnapshot {
	p.mu.RLock()
	parts := make([]*partition, 0, len(p.parts))
	for _, pt := range p.parts {
		parts = append(parts, pt)
	}
	p.mu.RUnlock()
	out := make([]PartitionSnapshot, 0, len(parts))
	for _, pt := range parts {
		s := PartitionSnapshot{Key: pt.label, Upstream: pt.upstream, Model: pt.model}
		pt.mu.Lock()
		s.InFlight = pt.inflight
		s.Waiting = pt.waiting
		if pt.cooldown.After(now) {
			s.CooldownUntil = pt.cooldown
		}
		s.Known = pt.known
		s.Windows = make([]WindowSnapshot, 0, pt.nwin)
		for i := range pt.nwin {
			w := &pt.windows[i]
			ws := WindowSnapshot{Unit: w.unit, Name: w.name, Limit: w.limit, Remaining: w.remaining, Reset: w.reset, Period: w.period}
			if w.config {
				ws.Name = "config"
			}
			if w.lim != nil {
				ws.Rate = float64(w.lim.Limit())
				ws.Tokens = w.lim.TokensAt(now)
			}
			s.Windows = append(s.Windows, ws)
		}
		pt.mu.Unlock()
		s.Breaker = p.breakerState(s.Upstream)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b PartitionSnapshot) int { return strings.Compare(a.Key, b.Key) })
	return out
}
