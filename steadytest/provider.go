package steadytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Algorithm is how a [Provider] counts its limits.
type Algorithm int

const (
	// SlidingWindow admits a request when fewer than the limit were
	// admitted in the last window-long span (and as many tokens). It never
	// admits more than the limit in any window.
	SlidingWindow Algorithm = iota
	// TokenBucket refills each limit continuously, the full limit per
	// window, and lets a full bucket go out in a burst: up to about twice
	// the limit can be admitted in one window-long span.
	TokenBucket
	// FixedWindow counts each limit in consecutive windows aligned to the
	// Unix epoch (a one-minute window starts at every whole minute, a
	// one-second window at every whole second) and forgets the count when
	// a window ends: up to twice the limit can be admitted in one
	// window-long span that straddles two windows. Resets are the end of
	// the current window.
	FixedWindow
)

// String returns "sliding-window", "token-bucket" or "fixed-window".
func (a Algorithm) String() string {
	switch a {
	case SlidingWindow:
		return "sliding-window"
	case TokenBucket:
		return "token-bucket"
	case FixedWindow:
		return "fixed-window"
	}
	return "Algorithm(" + strconv.Itoa(int(a)) + ")"
}

// ProviderConfig configures a [Provider]. The zero value is an unlimited
// provider speaking [DialectOpenAI].
type ProviderConfig struct {
	// RequestsPerWindow is the requests limit. Zero means unlimited.
	RequestsPerWindow int
	// TokensPerWindow is the tokens limit. Zero means unlimited.
	TokensPerWindow int
	// Window is the limits' period. Zero means one minute.
	Window time.Duration
	// Algorithm is how the limits are counted. Zero means SlidingWindow.
	Algorithm Algorithm
	// Dialect is how the limits are announced and errors shaped. Zero
	// means DialectOpenAI.
	Dialect Dialect
	// Latency is added before every response. Zero means none.
	Latency time.Duration
	// TruncateResets truncates resets announced in whole seconds (Heroku's
	// Unix timestamps, Anthropic's RFC 3339 times) to the second instead
	// of rounding them up, as some providers do: they then read up to a
	// second early.
	TruncateResets bool
	// ChunkDelay is the time between two chunks of a streamed response.
	// Zero means 10ms; negative means none.
	ChunkDelay time.Duration
	// Answer is the canned text of every completion. Empty means
	// "Hello from steadytest."
	Answer string
	// Models is what /models lists. Nil means one model,
	// "steady-test-model".
	Models []string
	// Faults are the failures injected. Change them while running with
	// SetFaults.
	Faults Faults
	// Limiter, if set, decides every request in place of
	// RequestsPerWindow and TokensPerWindow, and announces nothing: see
	// [Limiter] and [LeakyBucket].
	Limiter Limiter
	// OutputTokens, when its upper bound is positive, is the range of
	// tokens each chat or responses completion really generates, drawn
	// uniformly (seeded by Faults.Seed) and cut to the request's
	// max_tokens: the answer is that long (in words of four tokens, one a
	// stream event) and its usage says so. Zero means the canned Answer.
	OutputTokens [2]int
	// CountUsage counts a request against the tokens limit by its prompt
	// and the tokens its completion really generates, times n (as
	// gateways that charge usage do), instead of its prompt and its
	// max_tokens (as OpenAI counts a request on arrival).
	CountUsage bool
}

// answer is the canned completion text.
func (c *ProviderConfig) answer() string {
	if c.Answer == "" {
		return "Hello from steadytest."
	}
	return c.Answer
}

func (c *ProviderConfig) window() time.Duration {
	if c.Window <= 0 {
		return time.Minute
	}
	return c.Window
}

// Faults are the failures a [Provider] injects. They are checked before the
// limits, in this order: ResetRatio, Outage, InsufficientQuota, ErrorRatio,
// OverloadRatio; a request failed by a fault does not count against the
// limits. The zero value injects none.
type Faults struct {
	// ErrorRatio is the fraction of requests answered with ErrorStatus
	// instead of being served.
	ErrorRatio float64
	// ErrorStatus is the status of injected errors. Zero means 503.
	ErrorStatus int
	// Outage answers every request with ErrorStatus: a sustained outage.
	Outage bool
	// OverloadRatio is the fraction of requests answered with 529
	// (overloaded).
	OverloadRatio float64
	// InsufficientQuota answers every request with a 429 saying the
	// account is out of credit (OpenAI's insufficient_quota; Anthropic's
	// enforced_spend_limit_reached), which must not be retried.
	InsufficientQuota bool
	// ResetRatio is the fraction of requests whose connection is reset:
	// RoundTrip returns an error for which errors.Is(err,
	// syscall.ECONNRESET) holds, and ServeHTTP drops the connection.
	ResetRatio float64
	// HostileHeaders replaces every rate-limit and retry header, on every
	// response, with malformed, huge, negative or NaN values.
	HostileHeaders bool
	// StreamErrorRatio is the fraction of streamed responses (200, with
	// their headers) whose stream carries an overloaded error event (in
	// the dialect's shape: Anthropic's "event: error", an
	// OpenAI-compatible server's {"error": ...}) after StreamErrorAfter
	// content events, and ends there.
	StreamErrorRatio float64
	// StreamErrorAfter is how many content events come before the error
	// event (a chat stream's first is the chunk of its role); zero means
	// before the first.
	StreamErrorAfter int
	// Seed seeds the random draws of the ratios, so that runs repeat.
	Seed int64
}

func (f *Faults) errorStatus() int {
	if f.ErrorStatus == 0 {
		return http.StatusServiceUnavailable
	}
	return f.ErrorStatus
}

// Stats are a [Provider]'s counters. Every request that arrived and was
// answered is counted once in Accepted, RateLimited, Faulted or
// ClientErrors.
type Stats struct {
	// Requests is every request that arrived.
	Requests int64
	// Accepted is the requests admitted and served.
	Accepted int64
	// RateLimited is the requests refused with 429 by the limits.
	RateLimited int64
	// Faulted is the requests failed by Faults before the limits: the
	// connections reset (ResetRatio), the 5xx and 529 answers (Outage,
	// ErrorRatio, OverloadRatio) and the 429s of InsufficientQuota. The
	// faults a test sets say which they were.
	Faulted int64
	// ClientErrors is the 400, 404 and 405 responses.
	ClientErrors int64
	// TokensAccepted is the tokens the admitted requests counted against
	// the tokens limit.
	TokensAccepted int64
	// InFlight is the requests being answered now.
	InFlight int
	// PeakConcurrency is the most requests ever answered at once, from
	// arrival to the end of the response (a stream's end).
	PeakConcurrency int
	// MaxRequestsInWindow is the most requests admitted in any window-long
	// span: a test states "never exceeded the limit" with
	// MaxRequestsInWindow <= RequestsPerWindow. With a Limiter, the span
	// is the Limiter's Window() when it has that method (every [Limit]
	// does), else ProviderConfig.Window.
	MaxRequestsInWindow int64
	// MaxTokensInWindow is the most tokens admitted in any window-long
	// span, counted as MaxRequestsInWindow is.
	MaxTokensInWindow int64
	// StreamErrors is the streams failed by Faults.StreamErrorRatio.
	StreamErrors int64
}

// Provider simulates an OpenAI-compatible API that enforces requests and
// tokens limits, announces them in a [Dialect], and injects [Faults].
//
// It serves, under any path prefix: POST .../chat/completions (plain, or
// server-sent events when "stream" is true, with a final usage chunk when
// stream_options.include_usage is set), POST .../responses (plain or
// streamed), POST .../embeddings, and GET .../models. Answers are canned;
// the protocol is what is real.
//
// A request counts against the tokens limit with its prompt (about four
// characters a token over message contents, input and instructions) plus
// its completion budget (max_completion_tokens, max_tokens or
// max_output_tokens), all times n. A request is admitted only if both
// limits allow it; otherwise it gets a 429 with the dialect's headers and
// body and a Retry-After (seconds, rounded up) until it would fit. A
// request larger than the whole tokens limit gets a 429 without
// Retry-After.
//
// Every response carries the dialect's rate-limit headers, a request id
// and a Date. Time is read with time.Now and waited with timers only, so
// inside a testing/synctest bubble it is fake. A Provider starts no
// goroutines except the writers of streamed bodies through RoundTrip.
//
// A Provider is safe for concurrent use.
type Provider struct {
	mu       sync.Mutex
	cfg      ProviderConfig // guarded by mu
	rng      *rand.Rand     // guarded by mu
	lim      limits         // guarded by mu
	stats    Stats          // guarded by mu
	inFlight int            // guarded by mu
}

var (
	_ http.Handler      = (*Provider)(nil)
	_ http.RoundTripper = (*Provider)(nil)
)

// NewProvider returns a Provider configured by cfg.
func NewProvider(cfg ProviderConfig) *Provider {
	cfg.Models = append([]string(nil), cfg.Models...)
	return &Provider{cfg: cfg, rng: newRand(cfg.Faults.Seed)}
}

func newRand(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
}

// SetFaults replaces the injected faults, from the next request on, and
// restarts the random draws from f.Seed.
func (p *Provider) SetFaults(f Faults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg.Faults = f
	p.rng = newRand(f.Seed)
}

// Stats returns a copy of the counters.
func (p *Provider) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.InFlight = p.inFlight
	s.MaxRequestsInWindow = p.lim.maxReq
	s.MaxTokensInWindow = p.lim.maxTok
	return s
}

// reply is the provider's answer before it is put on a wire.
type reply struct {
	status int
	header http.Header
	body   []byte
	frames []string // a stream: each frame sent ChunkDelay after the previous
	reset  bool     // drop the connection instead
	delay  time.Duration
}

// arrive counts a request in; the caller must call leave when its answer
// is complete.
func (p *Provider) arrive() (cfg ProviderConfig, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Requests++
	p.inFlight++
	p.stats.PeakConcurrency = max(p.stats.PeakConcurrency, p.inFlight)
	return p.cfg, p.stats.Requests
}

func (p *Provider) leave() {
	p.mu.Lock()
	p.inFlight--
	p.mu.Unlock()
}

// serve answers one request. It returns an error only when ctx ends during
// the added latency.
func (p *Provider) serve(ctx context.Context, method, path string, body []byte, cfg ProviderConfig, n int64) (*reply, error) {
	if err := wait(ctx, cfg.Latency, nil); err != nil {
		return nil, err
	}
	ep := route(path)
	var req apiRequest
	var parseErr error
	if ep != epUnknown && method == ep.method() {
		req, parseErr = parseRequest(ep, body)
	}
	reqID := fmt.Sprintf("req_%012x", n)

	p.mu.Lock()
	now := time.Now()
	cfg = p.cfg
	if lo, hi := max(cfg.OutputTokens[0], 0), cfg.OutputTokens[1]; hi > 0 && (ep == epChat || ep == epResponses) && parseErr == nil {
		out := int64(lo + p.rng.IntN(max(hi-lo, 0)+1))
		if req.maxTokens > 0 {
			out = min(out, req.maxTokens)
		}
		req.output = out
	}
	f := &cfg.Faults
	streamFail := false
	var (
		status  int
		fail    failure
		msg     string
		dec     decision
		retryIn time.Duration
	)
	draw := func(ratio float64) bool { return ratio > 0 && p.rng.Float64() < ratio }
	switch {
	case draw(f.ResetRatio):
		p.stats.Faulted++
		p.mu.Unlock()
		return &reply{reset: true}, nil
	case f.Outage:
		status, fail, msg = f.errorStatus(), failServer, "The service is unavailable (simulated outage)."
	case f.InsufficientQuota:
		status, fail, msg = http.StatusTooManyRequests, failQuota, "You exceeded your current quota, please check your plan and billing details."
	case draw(f.ErrorRatio):
		status, fail, msg = f.errorStatus(), failServer, "The server had an error while processing your request (simulated)."
	case draw(f.OverloadRatio):
		status, fail, msg = 529, failOverloaded, "Overloaded (simulated)."
	case ep == epUnknown:
		status, fail, msg = http.StatusNotFound, failNotFound, "Unknown request URL: "+method+" "+path+"."
	case method != ep.method():
		status, fail, msg = http.StatusMethodNotAllowed, failMethod, "Method "+method+" is not allowed for "+path+"; use "+ep.method()+"."
	case parseErr != nil:
		status, fail, msg = http.StatusBadRequest, failBadRequest, strings.TrimPrefix(parseErr.Error(), errBadRequest.Error()+": ")
	}
	switch {
	case fail == failServer || fail == failOverloaded || fail == failQuota:
		p.stats.Faulted++
	case fail != 0:
		p.stats.ClientErrors++
	}
	if fail != 0 {
		dec = p.lim.decide(now, &cfg, 0, false)
	} else {
		cost := req.cost()
		if cfg.CountUsage {
			cost = req.usageCost(cfg.answer())
		}
		if cfg.Limiter != nil {
			dec = limiterDecision(cfg.Limiter, now)
			if dec.admit {
				p.lim.count(now, limiterWindow(&cfg), cost)
			}
		} else {
			dec = p.lim.decide(now, &cfg, cost, true)
		}
		switch {
		case dec.admit:
			p.stats.Accepted++
			p.stats.TokensAccepted += cost
			status = http.StatusOK
			if req.stream && draw(f.StreamErrorRatio) {
				streamFail = true
				p.stats.StreamErrors++
			}
		case dec.tooLarge:
			p.stats.RateLimited++
			status, fail = http.StatusTooManyRequests, failTooLarge
			msg = fmt.Sprintf("Request too large for %s: limit %d tokens per %v, requested %d.", req.model, cfg.TokensPerWindow, cfg.window(), cost)
		default:
			p.stats.RateLimited++
			status, fail, retryIn = http.StatusTooManyRequests, failRequests, dec.wait
			limit, used := int64(cfg.RequestsPerWindow), int64(cfg.RequestsPerWindow)-dec.req.remaining
			if dec.which == "tokens" {
				fail, limit, used = failTokens, int64(cfg.TokensPerWindow), int64(cfg.TokensPerWindow)-dec.tok.remaining
			}
			requested := int64(1)
			if dec.which == "tokens" {
				requested = cost
			}
			msg = fmt.Sprintf("Rate limit reached for %s on %s per %v: Limit %d, Used %d, Requested %d. Please try again in %v.",
				req.model, dec.which, cfg.window(), limit, used, requested, durationString(dec.wait))
			if cfg.Limiter != nil {
				msg = "Rate limit exceeded."
			}
		}
	}
	p.mu.Unlock()

	h := http.Header{}
	h.Set("Date", now.UTC().Format(http.TimeFormat))
	h.Set(cfg.Dialect.requestIDHeader(), reqID)
	h.Set("Content-Type", "application/json")
	cfg.Dialect.setHeaders(h, now, &dec, cfg.TruncateResets)
	if retryIn > 0 {
		h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(retryIn), 1), 10))
	}
	if cfg.Faults.HostileHeaders {
		setHostile(h, n)
	}
	if fail != 0 {
		return &reply{status: status, header: h, body: cfg.Dialect.errorBody(status, fail, msg, reqID)}, nil
	}

	answer := cfg.answer()
	r := &reply{status: http.StatusOK, header: h, delay: cfg.ChunkDelay}
	if r.delay == 0 {
		r.delay = 10 * time.Millisecond
	}
	switch ep {
	case epChat:
		id := "chatcmpl-" + strconv.FormatInt(n, 10)
		if req.stream {
			for _, e := range chatEvents(id, answer, &req) {
				r.frames = append(r.frames, "data: "+e+"\n\n")
			}
		} else {
			r.body = chatBody(id, answer, &req)
		}
	case epResponses:
		id := "resp_" + strconv.FormatInt(n, 10)
		if req.stream {
			r.frames = responsesEvents(id, answer, &req)
		} else {
			r.body = mustJSON(responseObject(id, answer, &req, true))
		}
	case epEmbeddings:
		r.body = embeddingsBody(&req)
	case epModels:
		models := cfg.Models
		if len(models) == 0 {
			models = []string{defaultModel}
		}
		r.body = modelsBody(models)
	}
	if streamFail && len(r.frames) > 0 {
		// A chat stream's first event is its role's chunk, a responses
		// stream's response.created (no content).
		at := max(cfg.Faults.StreamErrorAfter, 0)
		if ep == epResponses {
			at++
		}
		at = min(at, len(r.frames))
		r.frames = append(r.frames[:at:at], cfg.Dialect.streamError(reqID))
	}
	if r.frames != nil {
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
	}
	return r, nil
}

// RoundTrip answers req in memory, without a network: the provider as a
// transport for an http.Client, fit for testing/synctest bubbles. It reads
// and closes req's body. A streamed body is written by a goroutine, a
// chunk every ChunkDelay; closing the body or ending the request's context
// stops it.
func (p *Provider) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := readRequestBody(req)
	if err != nil {
		return nil, err
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	path := ""
	if req.URL != nil {
		path = req.URL.Path
	}
	cfg, n := p.arrive()
	r, err := p.serve(ctx, method, path, body, cfg, n)
	if err != nil {
		p.leave()
		return nil, err
	}
	if r.reset {
		p.leave()
		return nil, ConnReset().Err
	}
	resp := Response{Status: r.status, header: r.header, Body: string(r.body)}
	for i, f := range r.frames {
		c := Chunk{Data: f}
		if i > 0 && r.delay > 0 {
			c.Delay = r.delay
		}
		resp.Chunks = append(resp.Chunks, c)
	}
	return respond(req, resp, p.leave)
}

// ServeHTTP answers r: the provider as an http.Handler, for an
// httptest.Server or a real listener.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg, n := p.arrive()
	defer p.leave()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 32<<20))
	if err != nil {
		p.mu.Lock()
		p.stats.ClientErrors++
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write(cfg.Dialect.errorBody(http.StatusBadRequest, failBadRequest, "reading the body: "+err.Error(), ""))
		return
	}
	rep, err := p.serve(r.Context(), r.Method, r.URL.Path, body, cfg, n)
	if err != nil {
		return // the client has gone
	}
	if rep.reset {
		resetConn(w)
		return
	}
	for k, v := range rep.header {
		w.Header()[k] = v
	}
	if rep.frames == nil {
		w.Header().Set("Content-Length", strconv.Itoa(len(rep.body)))
		w.WriteHeader(rep.status)
		w.Write(rep.body)
		return
	}
	w.WriteHeader(rep.status)
	rc := http.NewResponseController(w)
	for i, f := range rep.frames {
		if i > 0 && rep.delay > 0 {
			if wait(r.Context(), rep.delay, nil) != nil {
				return
			}
		}
		if _, err := io.WriteString(w, f); err != nil {
			return
		}
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return
		}
	}
}

// resetConn drops the connection under w, with a TCP reset where it can.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // close with RST instead of FIN
	}
	conn.Close()
}
