package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/steady-go/steady"
)

// phase is a stretch of the workload.
type phase uint8

const (
	phaseOverload phase = iota // offered load well above the limit
	phaseOutage                // the provider answers 500 to everything
	phaseRecovery              // the provider is healthy again
	numPhases
)

func (p phase) String() string {
	switch p {
	case phaseOverload:
		return "overload"
	case phaseOutage:
		return "outage"
	case phaseRecovery:
		return "recovery"
	}
	return "unknown"
}

// period is a stretch of time, as offsets from the start of the run.
type period struct{ From, To time.Duration }

// recorder collects what one client's workload did: calls and their
// latency, upstream attempts and their statuses, and its breaker's states.
// It is safe for concurrent use.
type recorder struct {
	name   string
	start  time.Time
	bucket time.Duration // width of one accepted-per-bucket slot

	mu sync.Mutex
	// guarded by mu:
	phase        phase
	calls        int
	ok           int
	failed       int
	okAt         []time.Duration // when each successful call ended
	failedIn     [numPhases]int  // failed calls, by the phase they started in
	latencies    []time.Duration // of successful calls
	attempts     int
	firstTries   int // calls that reached the upstream at least once
	rateLimited  int
	serverErrors int
	attemptsIn   [numPhases]int
	accepted     []int // 2xx upstream responses per bucket
	sentPer      []int // upstream attempts per bucket
	limitedPer   []int // 429s per bucket
	breaker      string
	openSince    time.Duration
	open         bool
	openPeriods  []period
}

func newRecorder(name string, start time.Time, bucket time.Duration) *recorder {
	if bucket <= 0 {
		bucket = time.Second
	}
	return &recorder{name: name, start: start, bucket: bucket}
}

func (r *recorder) since(t time.Time) time.Duration { return t.Sub(r.start) }

// setPhase marks the start of phase p.
func (r *recorder) setPhase(p phase) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
}

// callDone records one finished call.
func (r *recorder) callDone(latency time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err != nil {
		r.failed++
		r.failedIn[r.phase]++
		return
	}
	r.ok++
	r.okAt = append(r.okAt, r.since(time.Now()))
	r.latencies = append(r.latencies, latency)
}

// attempt records one upstream attempt that ended at t.
func (r *recorder) attempt(t time.Time, first bool, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	r.attemptsIn[r.phase]++
	if first {
		r.firstTries++
	}
	i := max(int(r.since(t)/r.bucket), 0)
	count(&r.sentPer, i)
	switch {
	case status == http.StatusTooManyRequests:
		r.rateLimited++
		count(&r.limitedPer, i)
	case status >= 500 || status == 0:
		r.serverErrors++
	case status >= 200 && status < 300:
		count(&r.accepted, i)
	}
}

// count adds one to bucket i of *per, growing it as needed.
func count(per *[]int, i int) {
	for len(*per) <= i {
		*per = append(*per, 0)
	}
	(*per)[i]++
}

// breakerEvent records a breaker state change reported at t.
func (r *recorder) breakerEvent(t time.Time, to steady.BreakerState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.breaker = to.String()
	at := r.since(t)
	switch {
	case to == steady.BreakerOpen && !r.open:
		r.open, r.openSince = true, at
	case to != steady.BreakerOpen && r.open:
		r.open = false
		r.openPeriods = append(r.openPeriods, period{r.openSince, at})
	}
}

// event is an OnEvent hook for steady.
func (r *recorder) event(ev steady.Event) {
	if ev.Kind == steady.EventBreakerState {
		t := ev.Time
		if t.IsZero() {
			t = time.Now()
		}
		r.breakerEvent(t, ev.To)
	}
}

// progress is a point-in-time view of a recorder for the live line.
type progress struct {
	Name        string
	Calls       int
	OK          int
	Failed      int
	RateLimited int
	Retries     int
	Rate        float64 // successful upstream responses per second, recently
	Breaker     string  // "" when the client has no breaker
}

// progress returns the recorder's state at now.
func (r *recorder) progress(now time.Time) progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := progress{
		Name: r.name, Calls: r.calls, OK: r.ok, Failed: r.failed,
		RateLimited: r.rateLimited, Retries: r.attempts - r.firstTries,
		Breaker: r.breaker,
	}
	// Rate over the last full buckets, up to three of them.
	cur := int(r.since(now) / r.bucket)
	n, sum := 0, 0
	for i := cur - 1; i >= 0 && i >= cur-3; i-- {
		if i < len(r.accepted) {
			sum += r.accepted[i]
		}
		n++
	}
	if n > 0 {
		p.Rate = float64(sum) / (float64(n) * r.bucket.Seconds())
	}
	return p
}

// timeline says when each phase started and when the run ended, as
// offsets from the start. A phase that never started has a negative start.
type timeline struct {
	Start [numPhases]time.Duration
	End   time.Duration
}

// span returns how long phase p lasted.
func (tl timeline) span(p phase) time.Duration {
	from := tl.Start[p]
	if from < 0 || from >= tl.End {
		return 0
	}
	to := tl.End
	for q := p + 1; q < numPhases; q++ {
		if tl.Start[q] >= 0 {
			to = min(tl.Start[q], tl.End)
			break
		}
	}
	return max(to-from, 0)
}

// summary is one client's row in the final table.
type summary struct {
	Name           string
	Calls          int
	OK             int
	Failed         int
	FailedIn       [numPhases]int // failed calls, by the phase they ended in
	Goodput        float64        // successful calls per second over the whole windows of the overload phase
	Limit          float64        // the provider's requests limit, per second
	Attempts       int
	RateLimited    int
	ServerErrors   int
	Retries        int
	OutageAttempts int
	OutageCalls    bool // whether the run reached the outage
	P50, P99       time.Duration
	MaxInWindow    int64 // most requests the provider admitted in one window
	OpenPeriods    []period
	Accepted       []int         // 2xx upstream responses per bucket
	FirstOKAfter   time.Duration // from the end of the outage to the first successful call; -1 none
	AttemptsPer    []int         // upstream attempts per bucket
	LimitedPer     []int         // 429s per bucket
}

// summarize returns r's row for a run that followed tl against a limit of
// limit requests per second counted over windows of length window.
//
// Goodput is measured over the whole windows that fit in the overload
// phase (or over all of it when not even one fits): a window-counted limit
// admits its full quota in any window, so a stretch that ends inside a
// window would credit part of a window's quota twice.
func (r *recorder) summarize(tl timeline, limit float64, window time.Duration) summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := summary{
		Name: r.name, Calls: r.calls, OK: r.ok, Failed: r.failed, FailedIn: r.failedIn, Limit: limit,
		Attempts: r.attempts, RateLimited: r.rateLimited, ServerErrors: r.serverErrors,
		Retries: r.attempts - r.firstTries, OutageAttempts: r.attemptsIn[phaseOutage],
		OutageCalls: tl.span(phaseOutage) > 0,
		Accepted:    slices.Clone(r.accepted),
		AttemptsPer: slices.Clone(r.sentPer),
		LimitedPer:  slices.Clone(r.limitedPer),
		OpenPeriods: slices.Clone(r.openPeriods),
	}
	n := int((tl.End + r.bucket - 1) / r.bucket)
	for _, per := range []*[]int{&s.Accepted, &s.AttemptsPer, &s.LimitedPer} {
		for len(*per) < n {
			*per = append(*per, 0)
		}
	}
	if r.open {
		s.OpenPeriods = append(s.OpenPeriods, period{r.openSince, tl.End})
	}
	if d := tl.span(phaseOverload); d > 0 {
		if window > 0 && d >= window {
			d = d / window * window
		}
		from, to, n := tl.Start[phaseOverload], tl.Start[phaseOverload]+d, 0
		for _, at := range r.okAt {
			if at >= from && at < to {
				n++
			}
		}
		s.Goodput = float64(n) / d.Seconds()
	}
	s.FirstOKAfter = -1
	if from := tl.Start[phaseRecovery]; from >= 0 {
		for _, at := range r.okAt {
			if at >= from && (s.FirstOKAfter < 0 || at-from < s.FirstOKAfter) {
				s.FirstOKAfter = at - from
			}
		}
	}
	lat := slices.Clone(r.latencies)
	slices.Sort(lat)
	s.P50, s.P99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return s
}

// percentile returns the q-quantile of sorted (nearest rank), or 0 when
// sorted is empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// callKey carries a call's *callMark through the SDK and steady to the
// counting transport.
type callKey struct{}

// callMark tells the counting transport whether a call has been sent
// upstream before.
type callMark struct {
	mu   sync.Mutex
	sent bool
}

func withCall(ctx context.Context) context.Context {
	return context.WithValue(ctx, callKey{}, &callMark{})
}

// counting sits between a client and its upstream and records every
// attempt that reaches the upstream.
type counting struct {
	next http.RoundTripper
	rec  *recorder
}

// RoundTrip implements http.RoundTripper.
func (c *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	first := false
	if m, ok := req.Context().Value(callKey{}).(*callMark); ok {
		m.mu.Lock()
		first, m.sent = !m.sent, true
		m.mu.Unlock()
	}
	resp, err := c.next.RoundTrip(req)
	status := 0
	if err == nil {
		status = resp.StatusCode
	} else if errors.Is(err, context.Canceled) {
		status = -1 // the caller gave up; not the upstream's failure
	}
	c.rec.attempt(time.Now(), first, status)
	return resp, err
}
