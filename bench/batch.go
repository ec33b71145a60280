package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// limitKind is how a limit counts requests.
type limitKind int

const (
	// kindSliding admits a request when fewer than the limit were admitted in
	// the last window-long span.
	kindSliding limitKind = iota
	// kindBucket is a token bucket, full at the start, refilled with the limit
	// once per window.
	kindBucket
	// kindFixed counts requests in fixed windows aligned on multiples of the
	// window since the Unix epoch; each window's quota is usable at once.
	kindFixed
	// kindLeaky is a leaky bucket (GCRA): one request per window/limit, up to
	// Burst more at once; it announces nothing and answers bare 429s.
	kindLeaky
)

// String returns the kind's name for tables.
func (k limitKind) String() string {
	switch k {
	case kindSliding:
		return "sliding window"
	case kindBucket:
		return "token bucket"
	case kindFixed:
		return "fixed window"
	case kindLeaky:
		return "leaky bucket"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// countedBySteadytest maps the kinds steadytest's Provider counts itself
// to its algorithms; the other kinds are counted by bench's gate in front
// of an unlimited Provider. When steadytest counts a kind itself, adding
// it here is one line.
var countedBySteadytest = map[limitKind]steadytest.Algorithm{
	kindSliding: steadytest.SlidingWindow,
	kindBucket:  steadytest.TokenBucket,
}

// limitSpec is a provider's rate limit: Requests per Window, counted as Kind,
// announced in Dialect (a leaky bucket announces nothing), answering an
// admitted request after Latency.
type limitSpec struct {
	Kind     limitKind
	Requests int
	Window   time.Duration
	// Burst, for Leaky only, is how many requests are admitted at once
	// beyond the first, as nginx's limit_req burst with nodelay (GCRA with
	// a tolerance of Burst intervals): a full bucket admits Burst+1.
	Burst   int
	Dialect steadytest.Dialect
	Latency time.Duration
	// TruncateResets, for the kinds steadytest counts (Sliding, Bucket),
	// truncates whole-second resets instead of rounding them up: they read
	// up to a second early.
	TruncateResets bool
}

// String describes l for tables, e.g. "fixed window 20/1s, heroku-seed".
func (l limitSpec) String() string {
	s := fmt.Sprintf("%s %d/%s", l.Kind, l.Requests, fmtDur(l.Window))
	if l.Kind == kindLeaky {
		s += fmt.Sprintf(" burst %d", l.Burst)
	}
	if l.Kind == kindLeaky || l.Dialect == steadytest.DialectNone {
		return s + ", no headers"
	}
	if l.TruncateResets {
		return s + ", " + l.Dialect.String() + " headers, resets truncated"
	}
	return s + ", " + l.Dialect.String() + " headers"
}

// batchUpstream is a fresh provider with a limit: in memory as an
// http.RoundTripper, on a loopback server as an http.Handler.
type batchUpstream interface {
	http.RoundTripper
	http.Handler
}

// upstream returns a fresh provider counting l.
func (l limitSpec) upstream() batchUpstream {
	if a, ok := countedBySteadytest[l.Kind]; ok {
		return steadytest.NewProvider(steadytest.ProviderConfig{
			RequestsPerWindow: l.Requests, Window: l.Window, Algorithm: a,
			Dialect: l.Dialect, Latency: l.Latency, TruncateResets: l.TruncateResets,
		})
	}
	return newGate(l)
}

// admitAt is the earliest time after start at which the quota can admit
// the i-th request of a batch (from 0), for a client that knows the limit
// exactly and sends every request at the first moment the limit allows.
func (l limitSpec) admitAt(i int, start time.Time) time.Duration {
	n, w := l.Requests, l.Window
	switch l.Kind {
	case kindSliding:
		return time.Duration(i/n) * w
	case kindFixed:
		if i < n {
			return 0
		}
		phase := time.Duration(start.UnixNano() % int64(w))
		return time.Duration(i/n)*w - phase
	case kindBucket:
		if i < n {
			return 0
		}
		return time.Duration(i-n+1) * w / time.Duration(n)
	case kindLeaky:
		if i <= l.Burst {
			return 0
		}
		return time.Duration(i-l.Burst) * w / time.Duration(n)
	}
	panic(fmt.Sprintf("bench: no quota schedule for %s", l.Kind))
}

// pattern is how a batch's callers make their calls.
type pattern struct {
	Name string
	// Workers is how many callers share the batch, each making one call
	// after another. Zero launches every call at once.
	Workers int
	// Deadline is each call's deadline, from the moment it starts. Zero
	// means none (context.Background), unless Relative is set.
	Deadline time.Duration
	// Relative, when Deadline is zero, sets each call's deadline to this
	// multiple of the batch's quota minimum.
	Relative float64
	// CancelOnError cancels every call on the first failure, as a caller
	// using errgroup.WithContext does.
	CancelOnError bool
}

// batch is a finite batch of chat completions against one limit.
type batch struct {
	Limit   limitSpec
	Pattern pattern
	Calls   int
	// Processes is how many independent clients (each its own SDK client
	// and, for steady, its own Transport) share the batch and the
	// provider's limit, as processes of a fleet would; calls go to them in
	// turn. Zero means one.
	Processes int
	// Cap bounds a run: calls still out then are cancelled and counted
	// unfinished. Zero means four times the minimum plus five minutes.
	Cap time.Duration
}

// Minimum is the batch's physical minimum makespan from start: the time at
// which the quota can admit the last call, plus one answer's latency, and
// no less than the workers need to make the calls one after another.
func (b batch) Minimum(start time.Time) time.Duration {
	if b.Calls <= 0 {
		return 0
	}
	m := b.Limit.admitAt(b.Calls-1, start) + b.Limit.Latency
	if w := b.Pattern.Workers; w > 0 {
		m = max(m, time.Duration((b.Calls+w-1)/w)*b.Limit.Latency)
	}
	return m
}

// deadline is each call's deadline, or zero for none.
func (b batch) deadline(start time.Time) time.Duration {
	if b.Pattern.Deadline > 0 {
		return b.Pattern.Deadline
	}
	if b.Pattern.Relative > 0 {
		return time.Duration(b.Pattern.Relative * float64(b.Minimum(start)))
	}
	return 0
}

// Servable is how many of the batch's calls the quota can serve before
// their deadline: every call when there is none.
func (b batch) Servable(start time.Time) int {
	d := b.deadline(start)
	if d <= 0 || b.Pattern.Workers > 0 {
		// Workers start each call afresh: a deadline bounds one call,
		// not the batch.
		return b.Calls
	}
	n := 0
	for i := range b.Calls {
		if b.Limit.admitAt(i, start)+b.Limit.Latency <= d {
			n++
		}
	}
	return n
}

func (b batch) cap(start time.Time) time.Duration {
	if b.Cap > 0 {
		return b.Cap
	}
	return 4*b.Minimum(start) + 5*time.Minute
}

// batchResult is what one peer did with a batch.
type batchResult struct {
	Peer       string
	Start      time.Time     // when the batch began
	Minimum    time.Duration // the quota's minimum makespan from Start
	Servable   int           // calls the quota could serve before their deadline
	Calls      int
	OK         int
	Failed     int
	Unfinished int           // calls still out at the run's cap
	Makespan   time.Duration // from Start until the last call returned
	Attempts   int           // requests that reached the provider
	Limited    int           // of those, answered 429
	Why        map[string]int
}

// Ratio is the makespan as a multiple of the quota minimum.
func (r batchResult) Ratio() float64 {
	if r.Minimum <= 0 {
		return 0
	}
	return r.Makespan.Seconds() / r.Minimum.Seconds()
}

// LimitedShare is the share of upstream attempts answered 429.
func (r batchResult) LimitedShare() float64 {
	if r.Attempts == 0 {
		return 0
	}
	return float64(r.Limited) / float64(r.Attempts)
}

// Lost is how many calls failed that the quota could have served before
// their deadline.
func (r batchResult) Lost() int {
	return max(0, r.Servable-r.OK)
}

// TopWhy returns the most common reason calls failed and its count.
func (r batchResult) TopWhy() (string, int) {
	best, n := "", 0
	for k, c := range r.Why {
		if c > n || c == n && k < best {
			best, n = k, c
		}
	}
	return best, n
}

// batchRun is how runBatch runs.
type batchRun struct {
	// Loopback serves each peer's provider on its own 127.0.0.1 server,
	// through real connections; otherwise in memory.
	Loopback bool
	// Sequential runs the peers one after another instead of at the same
	// time. Each peer has its own fresh provider either way.
	Sequential bool
}

// runBatch runs b once per peer, each against its own fresh provider, and
// returns one result per peer. In memory inside a testing/synctest bubble
// it runs in fake time.
func runBatch(ctx context.Context, b batch, peers []peerSpec, how batchRun) ([]batchResult, error) {
	if b.Calls <= 0 || b.Limit.Requests <= 0 || b.Limit.Window <= 0 || b.Limit.Burst < 0 {
		return nil, errors.New("bench: a batch needs calls, and a limit with positive requests and window")
	}
	out := make([]batchResult, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		run := func() { out[i] = runOne(ctx, b, p, how.Loopback) }
		if how.Sequential {
			run()
		} else {
			wg.Go(run)
		}
	}
	wg.Wait()
	return out, ctx.Err()
}

// runOne runs b through one peer against a fresh provider.
func runOne(ctx context.Context, b batch, p peerSpec, loopback bool) batchResult {
	up := b.Limit.upstream()
	t := &tally{}
	url := "http://provider.invalid/v1/"
	var base http.RoundTripper = &counter{next: up, t: t}
	if loopback {
		srv := httptest.NewServer(up)
		defer srv.Close()
		tr := &http.Transport{MaxIdleConnsPerHost: 1024, ForceAttemptHTTP2: false}
		defer tr.CloseIdleConnections()
		url = srv.URL + "/v1/"
		base = &counter{next: tr, t: t}
	}
	sdks := make([]openai.Client, max(b.Processes, 1))
	for i := range sdks {
		sdks[i] = newClient(p, url, base)
	}
	var turn atomic.Int64

	// A fixed window's quota depends on where in the window the batch
	// starts: start on a boundary, as a batch started long after the last
	// one would find a fresh window.
	if b.Limit.Kind == kindFixed {
		w := b.Limit.Window
		sleepUntil(ctx, time.Now().Truncate(w).Add(w))
	}
	start := time.Now()
	res := batchResult{Peer: p.Name, Start: start, Minimum: b.Minimum(start), Servable: b.Servable(start), Calls: b.Calls, Why: map[string]int{}}
	deadline := b.deadline(start)
	// The cap cancels the calls without a deadline they could see: a call
	// "without a deadline" must look like one on context.Background().
	capCtx, capCancel := context.WithCancel(ctx)
	defer capCancel()
	capTimer := time.AfterFunc(b.cap(start), capCancel)
	defer capTimer.Stop()
	shared, cancelShared := context.WithCancel(capCtx)
	defer cancelShared()

	var mu sync.Mutex
	var last time.Time
	one := func() {
		cctx, cancel := shared, context.CancelFunc(func() {})
		if deadline > 0 {
			cctx, cancel = context.WithTimeout(shared, deadline)
		}
		sdk := sdks[int(turn.Add(1)-1)%len(sdks)]
		_, err := sdk.Chat.Completions.New(cctx, batchParams)
		cancel()
		end := time.Now()
		if err != nil && b.Pattern.CancelOnError {
			cancelShared()
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			res.OK++
		case capCtx.Err() != nil:
			return // unfinished at the cap; not counted in the makespan
		default:
			res.Failed++
			res.Why[failureKind(err)]++
		}
		if end.After(last) {
			last = end
		}
	}
	var wg sync.WaitGroup
	if w := b.Pattern.Workers; w > 0 {
		var next atomic.Int64
		for range w {
			wg.Go(func() {
				for int(next.Add(1)) <= b.Calls && capCtx.Err() == nil {
					one()
				}
			})
		}
	} else {
		for range b.Calls {
			wg.Go(one)
		}
	}
	wg.Wait()
	res.Unfinished = b.Calls - res.OK - res.Failed
	if res.Unfinished > 0 {
		last = start.Add(b.cap(start))
	}
	if !last.IsZero() {
		res.Makespan = last.Sub(start)
	}
	t.mu.Lock()
	res.Attempts, res.Limited = t.attempts, t.rateLimited
	t.mu.Unlock()
	return res
}

var batchParams = openai.ChatCompletionNewParams{
	Model:               "gpt-4o-mini",
	MaxCompletionTokens: openai.Int(16),
	Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say ok.")},
}

var (
	digits    = regexp.MustCompile(`[0-9][0-9.]*(ms|µs|ns|h|m|s)*`)
	urlPrefix = regexp.MustCompile(`^[A-Z]+ "?https?://[^ "]*"?:? `)
)

// failureKind names why a call failed, for counting: the status and, when
// steady gave up, its reason; circuit open; the caller's own deadline or
// cancellation; or the error's text with numbers masked.
func failureKind(err error) string {
	var apiErr *openai.Error
	switch {
	case errors.As(err, &apiErr):
		s := "HTTP " + strconv.Itoa(apiErr.StatusCode)
		if apiErr.Response != nil {
			if why := apiErr.Response.Header.Get("X-Steady-Give-Up"); why != "" {
				s += ", steady gave up: " + why
			}
		}
		return s
	case errors.Is(err, steady.ErrCircuitOpen):
		return "circuit open"
	case errors.As(err, new(*steady.WaitError)) && errors.Is(err, steady.ErrWaitTooLong):
		return "pacing wait beyond MaxWait"
	case errors.As(err, new(*steady.WaitError)):
		return "pacing wait past the deadline"
	case errors.Is(err, context.DeadlineExceeded):
		return "the call's deadline"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	for inner := errors.Unwrap(err); inner != nil; inner = errors.Unwrap(inner) {
		err = inner
	}
	msg := urlPrefix.ReplaceAllString(err.Error(), "")
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return digits.ReplaceAllString(msg, "N")
}
