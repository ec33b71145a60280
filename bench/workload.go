package bench

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/steady-go/steady/steadytest"
)

// scenario is the workload every peer runs: a stretch offered well above
// the rate limit, an outage, then recovery.
type scenario struct {
	Requests    int           // provider limit: requests per window
	Tokens      int           // provider limit: tokens per window; 0 means none
	Window      time.Duration // provider limit window
	Latency     time.Duration // provider time to answer
	Dialect     steadytest.Dialect
	Algorithm   steadytest.Algorithm
	Concurrency int           // callers per peer
	Offered     float64       // offered load as a multiple of the requests limit
	Overload    time.Duration // length of the overload stretch
	Outage      time.Duration // length of the outage (every request answered 503)
	Recovery    time.Duration // length of the stretch after the outage
	CallTimeout time.Duration // deadline of one call
	MaxTokens   int64         // max_completion_tokens of each call
}

// limitSpec returns the requests limit per second.
func (sc scenario) Limit() float64 { return float64(sc.Requests) / sc.Window.Seconds() }

// result is what one peer did in a scenario.
type result struct {
	Peer           string
	Calls          int           // calls finished
	OK             int           // calls that succeeded
	Failed         int           // calls that returned an error
	FailedOverload int           // failed calls that ended during the overload
	FailedOutage   int           // failed calls that ended during the outage
	FailedRecovery int           // failed calls that ended after the outage
	FailFast       time.Duration // median time to fail of calls started during the outage
	Goodput        float64       // successful calls per second during the overload, as a fraction of the limit
	Recovery       float64       // successful calls per second during the recovery, as a fraction of the limit
	Attempts       int           // requests that reached the provider
	RateLimited    int           // of those, answered 429
	OutageAttempts int           // requests that reached the provider during the outage
	// Reopened is the time from the upstream's recovery to the first
	// attempt it answered 200: how long callers are kept from a healthy
	// upstream. Negative when no attempt succeeded after the outage.
	Reopened time.Duration
	// LastFailure is the time from the upstream's recovery to the end of
	// the last call that failed after it; negative when none did.
	LastFailure time.Duration
	// WhyOverload, WhyOutage and WhyRecovery count why calls failed in
	// each phase (see failureKind).
	WhyOverload, WhyOutage, WhyRecovery map[string]int
	P50, P99                            time.Duration // latency of successful calls
	MaxInWindow                         int64         // most requests the provider admitted in one window
}

// RateLimitedShare returns the share of upstream attempts answered 429.
func (r result) RateLimitedShare() float64 {
	if r.Attempts == 0 {
		return 0
	}
	return float64(r.RateLimited) / float64(r.Attempts)
}

// tally counts one peer's calls and upstream attempts. Safe for concurrent
// use.
type tally struct {
	mu          sync.Mutex
	phase       int // 0 overload, 1 outage, 2 recovery
	calls, ok   int
	failed      int
	okIn        [3]int // successful calls, by the phase they ended in
	failedIn    [3]int // failed calls, by the phase they ended in
	latencies   []time.Duration
	failOutage  []time.Duration // time to fail of calls started during the outage
	attempts    int
	rateLimited int
	outage      int
	recovered   time.Time // when the outage ended
	firstOK     time.Time // first attempt answered 200 after it
	lastFail    time.Time // last call failed after it
	why         [3]map[string]int
}

func (t *tally) setPhase(p int) {
	t.mu.Lock()
	t.phase = p
	if p == 2 {
		t.recovered = time.Now()
	}
	t.mu.Unlock()
}

func (t *tally) currentPhase() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.phase
}

func (t *tally) call(started int, latency time.Duration, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls++
	if err != nil {
		t.failed++
		t.failedIn[t.phase]++
		if t.why[t.phase] == nil {
			t.why[t.phase] = map[string]int{}
		}
		t.why[t.phase][failureKind(err)]++
		if t.phase == 2 {
			t.lastFail = time.Now()
		}
		if started == 1 {
			t.failOutage = append(t.failOutage, latency)
		}
		return
	}
	t.ok++
	t.okIn[t.phase]++
	t.latencies = append(t.latencies, latency)
}

func (t *tally) attempt(status int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.attempts++
	if t.phase == 1 {
		t.outage++
	}
	if status == http.StatusTooManyRequests {
		t.rateLimited++
	}
	if t.phase == 2 && status == http.StatusOK && t.firstOK.IsZero() {
		t.firstOK = time.Now()
	}
}

// counter sits between a peer and its provider and counts every request
// that reaches the provider.
type counter struct {
	next http.RoundTripper
	t    *tally
}

func (c *counter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	c.t.attempt(status)
	return resp, err
}

// runScenario runs sc through every peer at once, each against its own simulated
// provider with the same limits, and returns one result per peer. Inside a
// testing/synctest bubble it runs in fake time.
func runScenario(ctx context.Context, sc scenario, peers []peerSpec) ([]result, error) {
	type side struct {
		peer peerSpec
		up   simUpstream
		sdk  openai.Client
		t    *tally
	}
	if sc.Offered <= 0 || sc.Overload < 0 || sc.Outage < 0 || sc.Recovery < 0 || sc.CallTimeout <= 0 {
		return nil, errors.New("bench: a scenario needs a positive offered load and call timeout, and no negative phase")
	}
	sides := make([]*side, len(peers))
	for i, p := range peers {
		up, err := newUpstream(sc)
		if err != nil {
			return nil, err
		}
		s := &side{peer: p, up: up, t: &tally{}}
		s.sdk = newClient(p, "http://provider.invalid/v1/", &counter{next: up, t: s.t})
		sides[i] = s
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	total := sc.Overload + sc.Outage + sc.Recovery
	workers := max(sc.Concurrency, 1)
	interval := time.Duration(float64(workers) / (sc.Offered * sc.Limit()) * float64(time.Second))
	var wg sync.WaitGroup

	wg.Go(func() {
		defer cancel() // end of the run: calls in flight are abandoned
		// Phase 1 is the outage, phase 2 the recovery; a zero-length
		// outage goes straight to the recovery.
		for phase, at := range []time.Duration{sc.Overload, sc.Overload + sc.Outage} {
			if phase == 0 && sc.Outage <= 0 {
				continue
			}
			if !sleepUntil(ctx, start.Add(at)) {
				return
			}
			for _, s := range sides {
				s.t.setPhase(phase + 1)
				s.up.SetOutage(phase == 0)
			}
		}
		sleepUntil(ctx, start.Add(total))
	})
	for _, s := range sides {
		for w := range workers {
			next := start.Add(interval * time.Duration(w) / time.Duration(workers))
			wg.Go(func() {
				for sleepUntil(ctx, next) {
					call(ctx, s.sdk, sc, s.t)
					next = next.Add(interval)
					if now := time.Now(); next.Before(now) {
						next = now
					}
				}
			})
		}
	}
	wg.Wait()

	out := make([]result, len(sides))
	for i, s := range sides {
		t := s.t
		t.mu.Lock()
		lat := slices.Clone(t.latencies)
		slices.Sort(lat)
		fails := slices.Clone(t.failOutage)
		slices.Sort(fails)
		out[i] = result{
			Peer: s.peer.Name, Calls: t.calls, OK: t.ok, Failed: t.failed,
			FailedOverload: t.failedIn[0], FailedOutage: t.failedIn[1], FailedRecovery: t.failedIn[2],
			FailFast: percentile(fails, 0.5),
			Attempts: t.attempts, RateLimited: t.rateLimited, OutageAttempts: t.outage,
			P50: percentile(lat, 0.50), P99: percentile(lat, 0.99),
			MaxInWindow: s.up.MaxInWindow(),
			Reopened:    -1,
			LastFailure: -1,
			WhyOverload: t.why[0],
			WhyOutage:   t.why[1],
			WhyRecovery: t.why[2],
		}
		if !t.lastFail.IsZero() {
			out[i].LastFailure = t.lastFail.Sub(t.recovered)
		}
		if !t.firstOK.IsZero() {
			out[i].Reopened = t.firstOK.Sub(t.recovered)
		}
		if sc.Overload > 0 {
			out[i].Goodput = float64(t.okIn[0]) / sc.Overload.Seconds() / sc.Limit()
		}
		if sc.Recovery > 0 {
			out[i].Recovery = float64(t.okIn[2]) / sc.Recovery.Seconds() / sc.Limit()
		}
		t.mu.Unlock()
	}
	return out, nil
}

// call makes one chat completion and counts it, unless the run ended
// while it was in flight.
func call(ctx context.Context, sdk openai.Client, sc scenario, t *tally) {
	start := time.Now()
	phase := t.currentPhase()
	cctx, cancel := context.WithTimeout(ctx, sc.CallTimeout)
	defer cancel()
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say ok.")},
	}
	if sc.MaxTokens > 0 {
		params.MaxCompletionTokens = openai.Int(sc.MaxTokens)
	}
	_, err := sdk.Chat.Completions.New(cctx, params)
	if ctx.Err() != nil {
		return
	}
	t.call(phase, time.Since(start), err)
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

// sleepUntil waits until t or until ctx is done, and reports whether it
// reached t with ctx still live.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return ctx.Err() == nil
	}
}
