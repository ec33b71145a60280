package steady

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady/store"
)

// ErrCircuitOpen is returned, wrapped, for a request refused because its
// upstream's circuit breaker is open.
var ErrCircuitOpen = errors.New("steady: circuit open")

// errNoResponse stands in for a base that returned neither a response nor
// an error.
var errNoResponse = errors.New("steady: transport returned no response and no error")

var (
	errNilRequest = errors.New("steady: nil request")
	errNilURL     = errors.New("steady: request has no URL")
	errNotNew     = errors.New("steady: Transport not made by New")
	errPanicked   = errors.New("steady: the attempt panicked")

	errBaseWithMiddleware = errors.New("steady: Config.Base is set, but through Middleware the SDK's HTTP client sends each attempt; leave Base nil, or use the Transport as the HTTP client's transport")
)

// Config configures a [Transport]. The zero value gives production
// defaults.
type Config struct {
	// Base sends each attempt. Nil means a tuned clone of
	// http.DefaultTransport: a 10-minute response-header timeout (as the
	// OpenAI SDK's own client has) and up to 64 idle connections per host
	// (instead of 2, which throttles concurrent calls). Base belongs to
	// the RoundTripper form only: through [Transport.Middleware] the rest
	// of the SDK's middleware chain and its HTTP client send each attempt,
	// so a Transport whose Base is set refuses every Middleware call with
	// an error that says so, instead of sending elsewhere than meant.
	Base http.RoundTripper

	// Retry says what is retried and how long steady waits between tries.
	Retry RetryConfig

	// Breaker configures the circuit breaker kept per upstream.
	Breaker BreakerConfig

	// Pacing configures proactive throttling under the announced limits.
	Pacing PacingConfig

	// OnEvent, if set, is called for every retry, wait and breaker state
	// change. It is never called with a lock held, and may be called from
	// several goroutines at once.
	OnEvent func(Event)

	// Upstreams, if set, are where requests go instead of the URL the
	// client addressed them to: each attempt is sent to one of them, with
	// its URL, credential and model rewritten on a copy (see [Upstream]).
	// Among the usable upstreams of the best tier, an attempt goes to the
	// one whose pacing lets it go soonest; weights break ties and set the
	// split when all have room. A refused key (401, 403, insufficient
	// quota, billing) takes its upstream out of the rotation until a
	// probe (one request, at growing intervals from 30 s) finds it
	// accepted again; an open circuit does so until its probes succeed;
	// either comes back ramped, its share doubling every 250 ms. A 429,
	// a 5xx or a transport failure moves the retry to another upstream at
	// once, as does a refused key (uncounted); when every upstream is
	// unusable, a request waits for the first to come back if its
	// deadline allows. A stream is never moved once its response began.
	// Events, snapshots and [Transport.BreakerState] name upstreams by
	// their Name. Nil means requests go where they are addressed.
	Upstreams []Upstream

	// Logger, if set, receives the same events as OnEvent: at Debug level
	// attempts, waits and cooldowns; at Info retries; at Warn give-ups,
	// refusals and breaker changes. A burst of like events (same kind,
	// upstream, partition, status and reason) writes one line at once and,
	// a second later, one line with the count of the rest.
	Logger *slog.Logger

	// Random, if set, is the source of the jitter of retry backoff and of
	// the breaker's open periods; the Transport draws from it under a
	// lock. Tests set it, seeded (rand.NewPCG(seed, 0)), so that their
	// results are the same on every run; give each Transport of a fleet
	// in one test its own. Nil means math/rand/v2's global source.
	Random rand.Source
}

// Transport is an [http.RoundTripper] that paces, retries and guards
// requests to LLM APIs. It is safe for concurrent use and keeps no
// background goroutines: the only ones it starts read an error body under
// a time bound (see [ClassifyResponse]), or a stream ahead to its first
// content under RetryConfig.FirstTokenTimeout, and end with that read.
//
// Every error response (status 400 or above) it hands back carries
// "X-Should-Retry: false", so that a client's own retry loop (the OpenAI
// SDK's, for one) does not retry it again, and "X-Steady-Give-Up" with the
// reason steady stopped (such as "retries exhausted"), which
// [ClassifyResponse] reports. Through [Transport.Middleware], a final
// error (circuit open, pacing deadline, retries exhausted on a transport
// failure) comes with a synthetic response carrying both headers, which
// stops the SDK's retry loop at once. Through the RoundTripper form, an
// error cannot carry them: give the SDK option.WithMaxRetries(0), or
// errors are retried by both.
//
// Make a Transport with [New]. A Transport that New did not make (a zero
// value, or a nil pointer) sends nothing: every request fails with an
// error that says so.
type Transport struct {
	cfg   Config
	base  http.RoundTripper
	retry retryPolicy
	guard guardPolicy
	// byUsage: the pacer settles by usage (PacingConfig.TokensByUsage),
	// so every JSON body is watched for it; otherwise only while events
	// are observed (EventUsage) or in a stream (watch.go).
	byUsage bool
	budget  *budget // nil: unlimited
	// fleetBudget is the Store's fleet-wide retry budget, when it keeps
	// one and pacing is on; nil otherwise.
	fleetBudget store.RetryBudget
	breakers    *breakers // nil: disabled
	pacer       *pacer
	router      *router // nil without Config.Upstreams

	logs *logBursts // nil when no Logger

	obsMu     sync.Mutex                  // serializes changes to observers
	observers atomic.Pointer[[]*observer] // set by Observe; nil when none
}

var (
	_ http.RoundTripper = (*Transport)(nil)
	_ option.Middleware = (*Transport)(nil).Middleware
)

// New returns a Transport configured by cfg.
func New(cfg Config) *Transport {
	t := &Transport{
		cfg:    cfg,
		base:   cfg.Base,
		retry:  newRetryPolicy(cfg.Retry),
		guard:  newGuardPolicy(cfg.Retry),
		budget: newBudget(cfg.Retry.BudgetRatio, cfg.Retry.BudgetMinPerSecond),
		// Decided once: the hot path asks a field, and an atomic load
		// for the observers (see watch).
		byUsage: !cfg.Pacing.Disabled && cfg.Pacing.TokensByUsage,
	}
	if t.base == nil {
		t.base = defaultBase()
	}
	if cfg.Logger != nil {
		t.logs = &logBursts{m: make(map[burstKey]*burst)}
	}
	rnd := newJitter(cfg.Random)
	t.retry.rnd = rnd
	t.breakers = newBreakers(cfg.Breaker, t.emit, t.breakerChanged)
	if t.breakers != nil {
		t.breakers.pol.rnd = rnd
	}
	t.router = newRouter(cfg.Upstreams, t.breakers, t.emit)
	deps := pacerDeps{emit: t.emit, breakerState: t.breakers.state, noBreaker: t.breakers == nil}
	if t.router != nil {
		deps.breakerState, deps.skipped = t.breakerState, t.router.skipped
	}
	t.pacer = newPacer(cfg.Pacing, deps)
	if fb, ok := cfg.Pacing.Store.(store.RetryBudget); ok && !cfg.Pacing.Disabled && t.budget != nil {
		t.fleetBudget = fb
	}
	return t
}

// breakerChanged is what a change of an upstream's circuit does beyond
// its event: an opened circuit opens the fleet's too (with a Store).
func (t *Transport) breakerChanged(ev Event) {
	if ev.Kind == EventBreakerState && ev.To == BreakerOpen {
		t.pacer.storeBreakerOpen(ev.Upstream, ev.Wait)
	}
}

// defaultBase is a clone of http.DefaultTransport tuned for LLM calls.
func defaultBase() http.RoundTripper {
	dt, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	tr := dt.Clone()
	tr.ResponseHeaderTimeout = 10 * time.Minute
	tr.MaxIdleConnsPerHost = 64
	if tr.MaxIdleConns != 0 && tr.MaxIdleConns < 256 {
		tr.MaxIdleConns = 256
	}
	return tr
}

// BreakerState reports the circuit breaker state of upstream, written
// "scheme://host" as in [Event.Upstream], or the Name of one of
// [Config.Upstreams]. An upstream steady has not seen is closed.
func (t *Transport) BreakerState(upstream string) BreakerState {
	if t == nil {
		return BreakerClosed
	}
	return t.breakerState(upstream)
}

// RoundTrip implements [http.RoundTripper]. It never modifies req; a
// retry sends a clone whose body comes from req.GetBody.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.do(req, nil)
}

// Middleware has the signature of option.Middleware:
// openai.NewClient(option.WithMiddleware(t.Middleware)). A final error is
// returned together with a response carrying "X-Should-Retry: false", which
// makes the SDK return the error at once instead of retrying it. That
// response is synthetic (status 503, empty body, "X-Steady-Give-Up" set);
// only the error matters. A Transport whose Config.Base is set refuses
// every Middleware call, sending nothing.
// Among several middlewares, the first is outermost: give steady first
// place and each of its retries goes through the others.
func (t *Transport) Middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	return t.do(req, next)
}

// maxDrain bounds what is read of a discarded response body.
const maxDrain = 64 << 10

// do runs the attempts of one request. next is the rest of the SDK's
// middleware chain, or nil to send through t.base. Each attempt is
// prepared, admitted (circuit breaker, then pacing), sent and judged; a
// retry then waits. Every place a request ends is in this function.
func (t *Transport) do(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	if err := t.check(req, next); err != nil {
		return fail(req, next, err, strings.TrimPrefix(err.Error(), "steady: "))
	}
	c := t.start(req, next)
	if t.router != nil {
		if err := c.startRouting(t.router); err != nil {
			return fail(req, next, err, strings.TrimPrefix(err.Error(), "steady: "))
		}
	}
	for c.attempt = 1; ; c.attempt++ {
		if c.rc != nil {
			if err := c.route(); err != nil {
				return c.unroutable(err) // no upstream, or none before the deadline
			}
		}
		a, err := c.admit()
		if err != nil {
			if c.rc != nil && c.reroute(err) {
				c.attempt-- // not sent: routed again
				continue
			}
			return c.refused(err) // circuit open, pacing refused, context done
		}
		r, err := c.prepare(a)
		if err != nil {
			return c.giveUpLast("request body cannot be rewound: " + err.Error())
		}
		resp, err := c.send(r, a)
		v := c.judge(resp, err)
		if v.final {
			return v.resp, v.err // success, give-up, or context done
		}
		if err := c.wait(v.wait); err != nil {
			return c.canceled(err)
		}
	}
}

// check refuses what cannot be sent at all.
func (t *Transport) check(req *http.Request, next option.MiddlewareNext) error {
	switch {
	case req == nil:
		return errNilRequest
	case t == nil || t.base == nil:
		closeBody(req)
		return errNotNew
	case req.URL == nil:
		closeBody(req)
		return errNilURL
	case next != nil && t.cfg.Base != nil:
		closeBody(req)
		return errBaseWithMiddleware
	case t.router != nil && t.router.err != nil:
		closeBody(req)
		return t.router.err
	}
	return nil
}

// call is one request on its way through its attempts.
type call struct {
	t          *Transport
	req        *http.Request // the caller's
	out        *http.Request // what the attempts send: req, or its copy for an upstream
	next       option.MiddlewareNext
	ctx        context.Context
	br         *breaker
	hasBody    bool
	replayable bool // the body can be sent again
	upstream   string

	attempt     int            // 1 for the first attempt
	uncounted   int            // failed probes not counted as retries (Hold)
	probeFailed bool           // the current attempt was a probe that failed
	discovered  bool           // the current attempt's partition is paced by a discovered rate
	last        *http.Response // last failed response, body buffered
	lastErr     error          // or last transport error
	lastF       Failure
	prevWait    time.Duration
	body        bodyInfo    // what pacing read of the body, once
	hdr         respHeaders // the headers of the current attempt's response, read once (send)
	rc          *routing    // nil when not routed (no Config.Upstreams)
}

func (t *Transport) start(req *http.Request, next option.MiddlewareNext) call {
	c := call{t: t, req: req, out: req, next: next, ctx: req.Context()}
	c.hasBody = req.Body != nil && req.Body != http.NoBody
	c.replayable = !c.hasBody || req.GetBody != nil
	if t.router == nil {
		c.br = t.breakers.get(req.URL)
	}
	if c.br != nil {
		c.upstream = c.br.upstream
	} else {
		c.upstream = upstreamKey{req.URL.Scheme, req.URL.Host}.String()
	}
	return c
}

// prepare returns the request of this attempt, once admitted (pacing has
// read what it needs of the body): req itself when its body was not read,
// else a copy whose body comes from GetBody. A GetBody that fails or
// returns no body means the body cannot be replayed: the admission is
// then given back.
func (c *call) prepare(a admission) (*http.Request, error) {
	r, err := attemptRequest(c.ctx, c.out, c.attempt)
	if err != nil {
		a.pm.cancel()
		c.br.report(a.slot, errBreakerExcluded)
		return nil, err
	}
	return r, nil
}

// admission is what an admitted attempt holds until it is sent: its
// pacing permit and its breaker slot.
type admission struct {
	pm   *permit
	slot breakerSlot
	wait time.Duration // how long admission took, when observed
}

// admit waits until r may be sent: the circuit must let it through, and
// pacing give it its turn. The circuit is asked again at the moment of
// sending, after the pacing wait, which ends early if the circuit opens
// meanwhile. A half-open probe goes ahead of the pacing queue. On error, r
// is closed and nothing is held.
func (c *call) admit() (admission, error) {
	if !c.t.observed() {
		return c.admitNow()
	}
	start := time.Now()
	a, err := c.admitNow()
	a.wait = time.Since(start)
	return a, err
}

// admitNow is admit, unobserved.
func (c *call) admitNow() (admission, error) {
	r := c.out
	for {
		v := c.br.look()
		switch {
		case v.state == BreakerClosed:
			o := admitOpts{stop: v.opened, body: &c.body}
			if c.rc != nil {
				o.stop, o.route = c.rc.stop, c.rc.cur.name
				if !c.rc.probe {
					o.move = c.rc.sooner
				}
			}
			pm, err := c.t.pacer.acquire(c.ctx, r, o)
			if c.rc != nil {
				if err != errMoved {
					c.rc.moveTo = nil // it did not move
				}
				switch {
				case err == errStopped:
					return admission{}, errReroute // its key was refused or its circuit opened meanwhile
				case err == errMoved:
					return admission{}, err // another upstream sends it sooner
				}
			}
			if err == errStopped {
				continue // the circuit opened during the wait
			}
			if fo, ok := err.(*fleetOpenError); ok {
				// Another process of the fleet opened the circuit:
				// decided as if this one were open.
				err = c.hold(view{state: BreakerOpen, until: fo.until})
				if err == nil {
					continue
				}
			}
			if err != nil {
				closeFirst(r, c.attempt)
				return admission{}, err
			}
			s, err := c.br.allow()
			if err != nil {
				pm.cancel() // the circuit changed during the wait
				continue
			}
			return admission{pm: pm, slot: s}, nil
		case v.probeFree:
			s, err := c.br.allow()
			if err != nil {
				continue // another request took the probe
			}
			return c.admitProbe(s)
		}
		if err := c.hold(v); err != nil {
			closeFirst(r, c.attempt)
			return admission{}, err
		}
	}
}

// admitProbe takes r's pacing turn ahead of the queue. The breaker slot s
// is given back if pacing refuses r or panics.
func (c *call) admitProbe(s breakerSlot) (admission, error) {
	r := c.out
	admitted := false
	defer func() {
		if !admitted {
			c.br.report(s, errBreakerExcluded)
		}
	}()
	o := admitOpts{urgent: true, body: &c.body}
	if c.rc != nil {
		o.route = c.rc.cur.name
	}
	pm, err := c.t.pacer.acquire(c.ctx, r, o)
	if err != nil {
		closeFirst(r, c.attempt)
		return admission{}, err
	}
	admitted = true
	return admission{pm: pm, slot: s}, nil
}

// hold waits for the circuit to change, when the request may wait, and
// returns nil; or returns the error that ends the request. A half-open
// circuit's waiters wait for the probe's verdict; an open circuit's fail
// at once unless BreakerConfig.Hold is set and their deadline lies beyond
// the next probe's verdict. A request whose deadline comes before the
// verdict it waits for fails at once, with an error that matches both
// ErrCircuitOpen and context.DeadlineExceeded: before its deadline, so
// that the SDK's own check of the context cannot replace it.
func (c *call) hold(v view) error {
	if c.rc != nil {
		return errReroute // another upstream may take it
	}
	var timer, late <-chan time.Time
	dl, hasDL := c.ctx.Deadline()
	if v.state == BreakerOpen {
		if !c.br.pol.hold {
			return fmt.Errorf("%w: %s", ErrCircuitOpen, c.upstream)
		}
		tm := time.NewTimer(time.Until(v.until))
		defer tm.Stop()
		timer = tm.C
	}
	if hasDL && (v.state == BreakerOpen || !v.verdict.IsZero()) {
		if !v.verdict.IsZero() && dl.Before(v.verdict) || dl.Before(v.until) {
			return c.heldPastDeadline(v)
		}
		// A verdict later than expected: fail just before the
		// deadline rather than at it.
		tm := time.NewTimer(lastMoment(dl))
		defer tm.Stop()
		late = tm.C
	}
	select {
	case <-v.changed:
		return nil
	case <-timer:
		return nil
	case <-late:
		return c.heldPastDeadline(v)
	case <-c.ctx.Done():
		return fmt.Errorf("%w: %s: %w", ErrCircuitOpen, c.upstream, c.ctx.Err())
	}
}

// heldPastDeadline is the error of a held request whose deadline comes
// before the verdict of the probe it would wait for.
func (c *call) heldPastDeadline(v view) error {
	next := "the next probe's verdict"
	if v.state != BreakerOpen {
		next = "the probe's verdict"
	}
	d := time.Until(maxTime(v.verdict, v.until)).Round(time.Millisecond)
	return fmt.Errorf("%w: %s: deadline before %s in %v: %w", ErrCircuitOpen, c.upstream, next, d, context.DeadlineExceeded)
}

// send makes one upstream attempt and gives back what admit took
// (reservation, breaker slot) whatever the base does: if it panics, they
// are released before the panic goes on.
func (c *call) send(r *http.Request, a admission) (resp *http.Response, err error) {
	released := false
	var cancel context.CancelFunc
	defer func() {
		if !released {
			if cancel != nil {
				cancel()
			}
			a.pm.settle(nil, errPanicked)
			c.br.report(a.slot, errBreakerExcluded)
		}
	}()
	if c.attempt == 1 {
		c.t.budget.deposit()
		if c.t.fleetBudget != nil {
			c.t.budget.earnFor(c.upstream)
		}
	}
	observed := c.t.observed()
	var sentAt time.Time
	if observed {
		sentAt = time.Now()
	}
	guarded := !c.t.guard.off && r.Method == http.MethodPost
	// Only a request that may be a stream pays for the context of its
	// own (a body that asks for one, or one not inspected): the success
	// path of every other POST stays as it was.
	if guarded && (!c.body.done || c.body.stream) {
		// The attempt has a context of its own, canceled when its body
		// is closed: the stream guard's read ahead, which closes the body
		// when it gives up, then ends even where Close alone does not end
		// a Read that blocks.
		var actx context.Context
		actx, cancel = context.WithCancel(r.Context())
		r = r.WithContext(actx)
	}
	if c.next != nil {
		resp, err = c.next(r)
	} else {
		resp, err = c.t.base.RoundTrip(r)
	}
	if resp == nil && err == nil {
		err = errNoResponse
	}
	if resp != nil && resp.Body == nil {
		// net/http does the same for a RoundTripper that returns no
		// body; every later step may then close it.
		resp.Body = http.NoBody
	}
	if cancel != nil {
		if resp == nil || resp.Body == http.NoBody {
			cancel()
		} else {
			resp.Body = &cancelBody{rc: resp.Body, cancel: cancel}
		}
	}
	if err == nil && resp.StatusCode/100 == 2 && guarded && isEventStream(resp.Header) {
		// Read ahead to the first content: an error or a stall before it
		// is judged as the status it stands for (stream.go).
		resp, _, err = guardStream(c.ctx, c.t.guard, resp)
	}
	if resp != nil {
		// The headers are read once, here, for pacing, classification
		// (judge) and the event; what only those last two need is read
		// for a failure or when observed.
		others := observed || resp.StatusCode >= 400
		if a.pm != nil || others {
			c.hdr.read(resp.Header, others)
		}
	}
	a.pm.settleRead(resp, err, &c.hdr.rl)
	if err == nil && resp.StatusCode/100 == 2 {
		// The body settles the tokens it says were used, when something
		// uses them.
		watch(resp, a.pm, c.br, c.t.byUsage || observed)
	}
	c.discovered = a.pm.discoveredPace()
	outcome := c.outcome(resp, err)
	if !deferReport(resp, a.slot, outcome) {
		c.br.report(a.slot, outcome)
	}
	c.probeFailed = a.slot.probe && outcome == errBreakerFailure
	released = true
	if observed {
		ev := c.event(EventAttempt, Failure{}, safeErr(err))
		ev.Time = time.Now()
		ev.Duration = ev.Time.Sub(sentAt)
		if resp != nil {
			ev.Status = resp.StatusCode
			ev.RequestID = c.hdr.requestID()
		}
		if a.slot.probe {
			ev.Reason, ev.To = "half-open probe", BreakerHalfOpen
		}
		ev.Wait = a.wait
		if a.pm != nil {
			ev.Partition = a.pm.pt.label
		}
		c.t.emit(ev)
	}
	return resp, err
}

// outcome is what an attempt tells the breaker: server failures count
// against the upstream, the caller's cancellation not at all.
func (c *call) outcome(resp *http.Response, err error) error {
	switch {
	case err != nil && c.ctx.Err() != nil:
		return errBreakerExcluded
	case err != nil, resp.StatusCode >= 500:
		return errBreakerFailure
	}
	return nil
}

// verdict is what follows an attempt: the request ends (final) with resp
// and err, or is retried after wait.
type verdict struct {
	final bool
	resp  *http.Response
	err   error
	wait  time.Duration
}

// judge decides what follows an attempt. The rules that say whether and
// when to retry are in decide.
func (c *call) judge(resp *http.Response, err error) verdict {
	if err == nil && resp.StatusCode < 400 {
		if c.rc != nil {
			c.routeSucceeded()
		}
		return verdict{final: true, resp: resp}
	}
	if c.last != nil {
		c.last.Body.Close()
		c.last = nil
	}
	var f Failure
	if err != nil {
		stop := false
		if resp != nil {
			// An inner layer handed back a response with its error;
			// respect its verdict, then let it go.
			stop = resp.Header.Get("X-Should-Retry") == "false"
			discard(resp)
			resp = nil
		}
		if c.ctx.Err() != nil {
			return verdict{final: true, err: err}
		}
		f = ClassifyError(err)
		if stop {
			f.Retryable, f.Reason = false, "an inner layer said not to retry"
		}
	} else {
		f = c.classify(resp)
	}
	var wait time.Duration
	var reason string
	if c.rc != nil {
		wait, reason = c.routeDecide(f)
	} else {
		wait, reason = c.decide(f)
	}
	if reason != "" {
		resp, err = c.giveUp(resp, err, f, c.attempt, reason)
		return verdict{final: true, resp: resp, err: err}
	}
	ev := c.event(EventRetry, f, safeErr(err))
	ev.Wait = wait
	c.t.emit(ev)
	if resp != nil {
		bufferBody(resp)
	}
	c.last, c.lastErr, c.lastF, c.prevWait = resp, err, f, wait
	return verdict{wait: wait}
}

// wait waits d before the next attempt.
func (c *call) wait(d time.Duration) error { return retryWait(c.ctx, d) }

// canceled ends a request whose context ended during a retry wait.
func (c *call) canceled(err error) (*http.Response, error) {
	ev := c.event(EventGiveUp, c.lastF, err)
	ev.Reason = "context done while waiting"
	c.t.emit(ev)
	if c.last != nil {
		c.last.Body.Close()
	}
	return nil, err
}

// refused ends a request that admit did not let through. A retry hands
// back the failure of the attempt before it, unless it was held and its
// deadline comes before the circuit's next verdict; a first attempt fails
// with err.
func (c *call) refused(err error) (*http.Response, error) {
	circuit := errors.Is(err, ErrCircuitOpen)
	reason := "circuit open"
	if !circuit {
		reason = strings.TrimPrefix(err.Error(), "steady: ")
		if !strings.HasPrefix(reason, "pacing") {
			reason = "pacing: " + reason
		}
	}
	held := circuit && errors.Is(err, context.DeadlineExceeded)
	if c.attempt > 1 && c.ctx.Err() == nil && !held {
		return c.giveUpLast(reason)
	}
	if held && c.last != nil {
		// The reason is the circuit, not the failure before it: the
		// error says both.
		err = fmt.Errorf("%w (after %s)", err, c.lastF.Reason)
		c.last.Body.Close()
		c.last = nil
	}
	if circuit {
		ev := c.event(EventRejected, Failure{}, err)
		ev.Reason = reason
		c.t.emit(ev)
	}
	return fail(c.req, c.next, err, reason)
}

// giveUpLast hands back the failure of the previous attempt.
func (c *call) giveUpLast(reason string) (*http.Response, error) {
	return c.giveUp(c.last, c.lastErr, c.lastF, c.attempt-1, reason)
}

// giveUp hands a failure back: a response marked so that no outer retry
// loop retries it, or the error (with such a response when called as
// middleware).
func (c *call) giveUp(resp *http.Response, err error, f Failure, attempt int, reason string) (*http.Response, error) {
	reason = giveUpValue(reason) // may quote an error's text: bounded
	ev := c.event(EventGiveUp, f, safeErr(err))
	ev.Attempt, ev.Reason = attempt, reason
	c.t.emit(ev)
	if resp != nil {
		if resp.Header == nil {
			resp.Header = make(http.Header, 2)
		}
		markGiveUp(resp.Header, reason)
		return resp, nil
	}
	if err == nil {
		err = errors.New("steady: " + reason)
	}
	return fail(c.req, c.next, gaveUp(err, reason), reason)
}

// event returns an event of kind about this request's current attempt.
func (c *call) event(kind EventKind, f Failure, err error) Event {
	return Event{
		Kind:      kind,
		Upstream:  c.upstream,
		Model:     c.body.model,
		Method:    c.req.Method,
		Path:      c.req.URL.Path,
		RequestID: f.RequestID,
		Status:    f.Status,
		Attempt:   c.attempt,
		Reason:    f.Reason,
		Err:       err,
		Context:   c.ctx,
		Priority:  priorityOf(c.ctx),
	}
}

// markGiveUp marks a response steady hands back after deciding not to
// retry it: "X-Should-Retry: false" stops outer retry loops, and
// "X-Steady-Give-Up" says why, for [ClassifyResponse].
func markGiveUp(h http.Header, reason string) {
	h.Set("X-Should-Retry", "false")
	h.Set(giveUpHeader, cmp.Or(printable(reason, maxGiveUpReason), "gave up"))
}

// maxGiveUpReason bounds the X-Steady-Give-Up header.
const maxGiveUpReason = 128

// fail returns a final error. As middleware it comes with a response
// carrying "X-Should-Retry: false" and "X-Steady-Give-Up": the OpenAI SDK
// then returns err to its caller at once instead of retrying.
func fail(req *http.Request, next option.MiddlewareNext, err error, reason string) (*http.Response, error) {
	if next == nil {
		return nil, err
	}
	resp := &http.Response{
		Status:     "503 Service Unavailable",
		StatusCode: http.StatusServiceUnavailable,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, 2),
		Body:       http.NoBody,
		Request:    req,
	}
	markGiveUp(resp.Header, reason)
	return resp, err
}

// safeErr drops the URL of a *url.Error, which may carry a key in its
// query, keeping the cause.
func safeErr(err error) error {
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// closeBody closes the body of a request that will not be sent.
func closeBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
}

// discard drains (bounded in bytes and time) and closes a response so its
// connection can be reused: an error body longer than 64 KiB past what
// classification read, or one that drips, costs its connection.
func discard(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	drainClose(resp.Body, maxDrain)
}

// bufferBody replaces resp's body with an in-memory copy of at most
// maxDrain bytes and releases the connection, so that resp can still be
// handed back after a later attempt fails before being sent. A read error
// is kept: the copy returns it after the bytes read before it.
func bufferBody(resp *http.Response) {
	if resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	b, err := keepErrorBody(resp.Body, maxDrain)
	var r io.Reader = bytes.NewReader(b)
	if err != nil {
		r = io.MultiReader(r, errReader{err})
		resp.ContentLength = -1
	} else {
		resp.ContentLength = int64(len(b))
	}
	resp.Body = io.NopCloser(r)
}

// errReader is a reader that fails with its error.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
