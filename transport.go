package steady

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3/option"
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
)

// Config configures a [Transport]. The zero value gives production
// defaults.
type Config struct {
	// Base sends each attempt. Nil means a tuned clone of
	// http.DefaultTransport: a 10-minute response-header timeout (as the
	// OpenAI SDK's own client has) and up to 64 idle connections per host
	// (instead of 2, which throttles concurrent calls). Through
	// [Transport.Middleware], Base is not used: the rest of the SDK's
	// middleware chain and its HTTP client send each attempt.
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

	// Logger, if set, receives the same events as OnEvent, at Debug level
	// for waits and Info or Warn for retries, give-ups and breaker changes.
	Logger *slog.Logger
}

// Transport is an [http.RoundTripper] that paces, retries and guards
// requests to LLM APIs. It is safe for concurrent use and starts no
// goroutines.
//
// Every error response (status 400 or above) it hands back carries
// "X-Should-Retry: false", so that a client's own retry loop (the OpenAI
// SDK's, for one) does not retry it again. Through [Transport.Middleware],
// a final error (circuit open, pacing deadline, retries exhausted on a
// transport failure) also stops the SDK's retry loop at once. Through the
// RoundTripper form, an error cannot carry that header: give the SDK
// option.WithMaxRetries(0), or transport failures are retried by both.
//
// Make a Transport with [New]. A Transport that New did not make (a zero
// value, or a nil pointer) sends nothing: every request fails with an
// error that says so.
type Transport struct {
	cfg      Config
	base     http.RoundTripper
	retry    retryPolicy
	budget   *budget   // nil: unlimited
	breakers *breakers // nil: disabled
	pacer    *pacer

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
		budget: newBudget(cfg.Retry.Budget),
	}
	if t.base == nil {
		t.base = defaultBase()
	}
	t.breakers = newBreakers(cfg.Breaker, t.emit)
	t.pacer = newPacer(cfg.Pacing, t.emit, t.breakers.state)
	return t
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
// "scheme://host" as in [Event.Upstream]. An upstream steady has not seen
// is closed.
func (t *Transport) BreakerState(upstream string) BreakerState {
	if t == nil {
		return BreakerClosed
	}
	return t.breakers.state(upstream)
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
// response is synthetic (status 503, empty body); only the error matters.
// Among several middlewares, the first is outermost: give steady first
// place and each of its retries goes through the others.
func (t *Transport) Middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	return t.do(req, next)
}

// positiveOr returns v, or d when v is zero or negative: the rule of every
// Config field whose zero (and negative) value means its default. Fields
// where only zero means the default, and a negative value something else,
// use cmp.Or.
func positiveOr[T ~int | ~int64 | ~uint32](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// maxDrain bounds what is read of a discarded response body.
const maxDrain = 64 << 10

// do runs the attempts of one request. next is the rest of the SDK's
// middleware chain, or nil to send through t.base.
func (t *Transport) do(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	switch {
	case req == nil:
		return t.fail(req, next, errNilRequest)
	case t == nil || t.base == nil:
		closeBody(req)
		return t.fail(req, next, errNotNew)
	case req.URL == nil:
		closeBody(req)
		return t.fail(req, next, errNilURL)
	}
	ctx := req.Context()
	hasBody := req.Body != nil && req.Body != http.NoBody
	replayable := !hasBody || req.GetBody != nil
	br := t.breakers.get(req.URL)

	var (
		last     *http.Response // last failed response, body buffered
		lastErr  error          // or last transport error
		lastF    Failure
		prevWait time.Duration
	)
	for attempt := 1; ; attempt++ {
		r := req
		if attempt > 1 {
			r = req.Clone(ctx)
			if hasBody {
				body, err := req.GetBody()
				if err != nil {
					return t.giveUp(req, next, last, lastErr, lastF, attempt-1, "request body cannot be rewound: "+err.Error())
				}
				r.Body = body
			}
		}

		done, err := br.allow()
		if err != nil {
			closeBody(r)
			if attempt > 1 {
				return t.giveUp(req, next, last, lastErr, lastF, attempt-1, "circuit open")
			}
			err = fmt.Errorf("%w: %s", ErrCircuitOpen, br.upstream)
			t.emit(Event{Kind: EventRejected, Upstream: br.upstream, Method: req.Method, Path: req.URL.Path, Attempt: attempt, Reason: "circuit open", Err: err})
			return t.fail(req, next, err)
		}

		pm, err := t.pacer.acquire(ctx, r, admitOpts{})
		if err != nil {
			br.report(done, errBreakerExcluded)
			closeBody(r)
			if attempt > 1 && ctx.Err() == nil {
				return t.giveUp(req, next, last, lastErr, lastF, attempt-1, "pacing: "+err.Error())
			}
			return t.fail(req, next, err)
		}

		if attempt == 1 {
			t.budget.deposit()
		}
		var resp *http.Response
		sentAt := time.Now()
		if next != nil {
			resp, err = next(r)
		} else {
			resp, err = t.base.RoundTrip(r)
		}
		if resp == nil && err == nil {
			err = errNoResponse
		}
		if t.observed() {
			ev := Event{Kind: EventAttempt, Upstream: upstreamOf(br, req.URL), Method: req.Method, Path: req.URL.Path, Attempt: attempt, Err: safeErr(err), Context: ctx}
			ev.Time = time.Now()
			ev.Duration = ev.Time.Sub(sentAt)
			if resp != nil {
				ev.Status = resp.StatusCode
				ev.RequestID = requestID(resp.Header)
			}
			t.emit(ev)
		}
		if resp != nil && resp.Body == nil {
			// net/http does the same for a RoundTripper that returns no
			// body; every later step may then close it.
			resp.Body = http.NoBody
		}
		pm.settle(resp, err)

		if err == nil && resp.StatusCode < 400 {
			br.report(done, nil)
			return resp, nil
		}
		if last != nil {
			last.Body.Close()
			last = nil
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
			if ctx.Err() != nil {
				br.report(done, errBreakerExcluded)
				return nil, err
			}
			br.report(done, errBreakerFailure)
			f = ClassifyError(err)
			if stop {
				f.Retryable, f.Reason = false, "an inner layer said not to retry"
			}
		} else {
			if resp.StatusCode >= 500 {
				br.report(done, errBreakerFailure)
			} else {
				br.report(done, nil)
			}
			f = ClassifyResponse(resp)
		}

		reason := ""
		switch {
		case !f.Retryable:
			reason = f.Reason
			if reason == "" {
				reason = "not retryable"
			}
		case attempt > t.retry.maxRetries:
			reason = "retries exhausted"
		case !replayable:
			reason = "request body cannot be replayed"
		}
		var wait time.Duration
		if reason == "" {
			if f.HasRetryAfter {
				wait = max(f.RetryAfter, 0)
				if t.retry.maxRetryAfter > 0 && wait > t.retry.maxRetryAfter {
					reason = "retry hint " + wait.String() + " above cap " + t.retry.maxRetryAfter.String()
				}
			} else {
				wait = t.retry.backoff(attempt, prevWait)
			}
		}
		if reason == "" {
			if dl, ok := ctx.Deadline(); ok && !time.Now().Add(wait).Before(dl) {
				reason = "deadline before retry in " + wait.String()
			}
		}
		if reason == "" && !t.budget.withdraw() {
			reason = "retry budget exhausted"
		}
		if reason != "" {
			return t.giveUp(req, next, resp, err, f, attempt, reason)
		}

		t.emit(Event{
			Kind:      EventRetry,
			Upstream:  upstreamOf(br, req.URL),
			Method:    req.Method,
			Path:      req.URL.Path,
			RequestID: f.RequestID,
			Status:    f.Status,
			Attempt:   attempt,
			Wait:      wait,
			Reason:    f.Reason,
			Err:       safeErr(err),
		})
		if resp != nil {
			bufferBody(resp)
		}
		last, lastErr, lastF, prevWait = resp, err, f, wait

		if werr := retryWait(ctx, wait); werr != nil {
			t.emit(Event{Kind: EventGiveUp, Upstream: upstreamOf(br, req.URL), Method: req.Method, Path: req.URL.Path, Attempt: attempt, Reason: "context done while waiting", Err: werr})
			if last != nil {
				last.Body.Close()
			}
			return nil, werr
		}
	}
}

// giveUp hands the last failure back: a response marked so that no outer
// retry loop retries it, or the error (with such a response when called as
// middleware).
func (t *Transport) giveUp(req *http.Request, next option.MiddlewareNext, resp *http.Response, err error, f Failure, attempt int, reason string) (*http.Response, error) {
	t.emit(Event{
		Kind:      EventGiveUp,
		Upstream:  upstreamOf(nil, req.URL),
		Method:    req.Method,
		Path:      req.URL.Path,
		RequestID: f.RequestID,
		Status:    f.Status,
		Attempt:   attempt,
		Reason:    reason,
		Err:       safeErr(err),
	})
	if resp != nil {
		if resp.Header == nil {
			resp.Header = make(http.Header, 1)
		}
		resp.Header.Set("X-Should-Retry", "false")
		return resp, nil
	}
	if err == nil {
		err = errors.New("steady: " + reason)
	}
	return t.fail(req, next, err)
}

// fail returns a final error. As middleware it comes with a response
// carrying "X-Should-Retry: false": the OpenAI SDK then returns err to its
// caller at once instead of retrying.
func (t *Transport) fail(req *http.Request, next option.MiddlewareNext, err error) (*http.Response, error) {
	if next == nil {
		return nil, err
	}
	return &http.Response{
		Status:     "503 Service Unavailable",
		StatusCode: http.StatusServiceUnavailable,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"X-Should-Retry": {"false"}},
		Body:       http.NoBody,
		Request:    req,
	}, err
}

func upstreamOf(br *breaker, u *url.URL) string {
	if br != nil {
		return br.upstream
	}
	return upstreamKey{u.Scheme, u.Host}.String()
}

// safeErr drops the URL of a *url.Error, which may carry a key in its
// query, keeping the cause.
func safeErr(err error) error {
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

// discard drains (bounded) and closes a response so its connection can be
// reused.
func discard(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	io.CopyN(io.Discard, resp.Body, maxDrain)
	resp.Body.Close()
}

// bufferBody replaces resp's body with an in-memory copy of at most
// maxDrain bytes and releases the connection, so that resp can still be
// handed back after a later attempt fails before being sent. A read error
// is kept: the copy returns it after the bytes read before it.
func bufferBody(resp *http.Response) {
	if resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDrain))
	discard(resp)
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
