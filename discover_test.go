package steady

import (
	"container/heap"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/steadytest"
)

func TestDiscovererColdStart(t *testing.T) {
	var d discoverer
	now := simEpoch
	if r, warm := d.estimate(); r != discoverInitRate || warm {
		t.Fatalf("zero discoverer: pace %v warm %v, want %v and cold", r, warm, discoverInitRate)
	}
	// A first success without headers paces the next request, and one
	// success is not evidence.
	d.sent(now)
	d.onAccepted(now.Add(50 * time.Millisecond))
	if d.warm() {
		t.Fatal("warm after one success")
	}
	if gap := d.next(now).Sub(now); gap <= 0 || gap > time.Second {
		t.Fatalf("next request %v after the first, want a slot of the initial pace", gap)
	}
	for i := range discoverWarm {
		d.onAccepted(now.Add(time.Duration(i) * 100 * time.Millisecond))
	}
	if !d.warm() {
		t.Fatalf("cold after %d successes", discoverWarm+1)
	}
}

func TestDiscovererWindowPause(t *testing.T) {
	var d discoverer
	now := simEpoch
	for range 20 {
		d.sent(now)
		now = now.Add(10 * time.Millisecond)
		d.onAccepted(now)
	}
	// A 429 with a long Retry-After is a window: nothing goes before it
	// reopens, and a stale 429 (sent before the cut) changes nothing more.
	d.onThrottled(now.Add(-time.Millisecond), now, 30*time.Second, true)
	if got := d.next(now).Sub(now); got != 30*time.Second {
		t.Fatalf("next after a 30 s Retry-After: %v", got)
	}
	r, _ := d.estimate()
	d.onThrottled(now.Add(-time.Millisecond), now.Add(time.Millisecond), 0, false)
	if r2, _ := d.estimate(); r2 != r {
		t.Fatalf("stale 429 changed the pace %v -> %v", r, r2)
	}
	// A short Retry-After (a per-second bucket's, rounded up) only cuts
	// the pace.
	var e discoverer
	for range 20 {
		now = e.next(now)
		e.sent(now)
		e.onAccepted(now.Add(10 * time.Millisecond))
	}
	before, _ := e.estimate()
	e.onThrottled(now, now.Add(time.Millisecond), time.Second, true)
	after, warm := e.estimate()
	if got := e.next(now).Sub(now); got > time.Second/2 || after >= before || !warm {
		t.Fatalf("after a 1 s Retry-After: next in %v, pace %v -> %v, warm %v", got, before, after, warm)
	}
}

// TestDiscovererHostile feeds what no server should send: negative and
// huge Retry-After, times out of order. Nothing panics, the pace stays
// finite and positive, and no pause is longer than discoverMaxGate.
func TestDiscovererHostile(t *testing.T) {
	var d discoverer
	now := simEpoch
	hints := []time.Duration{-time.Hour, 0, math.MaxInt64, time.Duration(math.MinInt64), time.Nanosecond}
	for i := range 200 {
		t1 := now.Add(time.Duration(i%7-3) * time.Second)
		switch i % 3 {
		case 0:
			d.onAccepted(t1)
		default:
			d.onThrottled(t1.Add(-time.Millisecond), t1, hints[i%len(hints)], i%2 == 0)
		}
		d.sent(t1)
		r, _ := d.estimate()
		if math.IsNaN(r) || math.IsInf(r, 0) || r < discoverMinRate {
			t.Fatalf("step %d: pace %v", i, r)
		}
		if wait := d.next(now).Sub(now); wait > discoverMaxGate+10*time.Second {
			t.Fatalf("step %d: next in %v", i, wait)
		}
	}
}

// The discoverer is tested in closed loop: a simulated pacer drives it
// against the header-less limiters of steadytest, on a simulated clock.
// Every request takes simLatency: the limiter decides at half of it, the
// answer arrives at the end. A 429's request goes back to the head of the
// queue and waits its turn at the discovered pace.

const simLatency = 50 * time.Millisecond

// simColdInFlight is how many requests a cold partition has in flight.
const simColdInFlight = 4

var simEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// simScenario is one closed-loop run.
type simScenario struct {
	name    string
	limit   func() *steadytest.Limit
	n       int // requests in the batch
	workers int // 0: all queued at once
	// changes scale the limit at the given times: halving then doubling.
	changes []simChange
}

type simChange struct {
	at     time.Duration
	factor float64
}

// simResult is what one run measured.
type simResult struct {
	makespan  time.Duration // last answer of the batch
	minimum   time.Duration // the limit's own minimum for the batch
	attempts  int
	throttled int
	found     []time.Duration // per change: until the new rate was found; -1: never
	finalRate float64
}

func (r simResult) ratio() float64 { return r.makespan.Seconds() / r.minimum.Seconds() }
func (r simResult) share429() float64 {
	return float64(r.throttled) / float64(max(r.attempts, 1))
}

type simEvent struct {
	at     time.Duration
	arrive bool // the request reaches the limiter; else its answer arrives
	ok     bool
	retry  time.Duration
	hasRA  bool
	sent   time.Duration
}

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].arrive && !q[j].arrive
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// simulate runs sc with the discoverer pacing a queue of sc.n requests.
func simulate(sc simScenario) simResult {
	return simulateWith(sc, new(discoverer))
}

// simPacer is what the simulated pacer asks of a rate controller.
type simPacer interface {
	next(now time.Time) time.Time
	sent(now time.Time)
	onAccepted(now time.Time)
	onThrottled(sent, now time.Time, retryAfter time.Duration, hasRetryAfter bool)
	warm() bool
}

// simulateWith runs sc with d pacing a queue of sc.n requests.
func simulateWith(sc simScenario, d simPacer) simResult {
	lim := sc.limit()
	var (
		q        simQueue
		res      simResult
		now      time.Duration
		pending  = sc.n // requests not yet accepted and not in flight
		inflight int
		done     int
		sends    []time.Duration // every attempt's send time
		changeI  int
	)
	res.found = make([]time.Duration, len(sc.changes))
	for i := range res.found {
		res.found[i] = -1
	}
	at := func(t time.Duration) time.Time { return simEpoch.Add(t) }
	capacity := func() int {
		c := math.MaxInt
		if sc.workers > 0 {
			c = sc.workers
		}
		if !d.warm() {
			c = min(c, simColdInFlight)
		}
		return c
	}
	for done < sc.n {
		// The next thing to happen: an answer, or the queue's head going.
		var sendAt time.Duration = -1
		if pending > 0 && inflight < capacity() {
			sendAt = max(d.next(at(now)).Sub(simEpoch), now)
		}
		if sendAt < 0 && q.Len() == 0 {
			panic("simulation stalled")
		}
		if q.Len() > 0 && (sendAt < 0 || q[0].at <= sendAt) {
			e := heap.Pop(&q).(simEvent)
			now = e.at
			for changeI < len(sc.changes) && sc.changes[changeI].at <= now {
				lim.Scale(sc.changes[changeI].factor)
				changeI++
			}
			if e.arrive {
				ok, wait := lim.Admit(at(now))
				// Retry-After as a server sends it: whole seconds, rounded up.
				ra := time.Duration(math.Ceil(wait.Seconds())) * time.Second
				heap.Push(&q, simEvent{at: now + simLatency - simLatency/2, ok: ok, retry: ra, hasRA: wait > 0, sent: e.sent})
				continue
			}
			inflight--
			if e.ok {
				d.onAccepted(at(now))
				done++
				res.makespan = now
			} else {
				res.throttled++
				d.onThrottled(at(e.sent), at(now), e.retry, e.hasRA)
				pending++
			}
		} else {
			now = sendAt
			for changeI < len(sc.changes) && sc.changes[changeI].at <= now {
				lim.Scale(sc.changes[changeI].factor)
				changeI++
			}
			d.sent(at(now))
			pending--
			inflight++
			res.attempts++
			sends = append(sends, now)
			heap.Push(&q, simEvent{at: now + simLatency/2, arrive: true, sent: now})
		}
		// Was the new rate found? Sends over a trailing interval (a second,
		// or the window) that began after the change, within 20% of the
		// new limit.
		for i, c := range sc.changes {
			if res.found[i] >= 0 || now < c.at {
				continue
			}
			if i+1 < len(sc.changes) && now >= sc.changes[i+1].at {
				continue
			}
			span := max(time.Second, lim.Window())
			if now-span < c.at {
				continue
			}
			want := lim.Rate() * span.Seconds()
			got := float64(countSince(sends, now-span))
			if got >= 0.8*want && got <= 1.2*want {
				res.found[i] = now - c.at
			}
		}
	}
	if dd, ok := d.(*discoverer); ok {
		res.finalRate, _ = dd.estimate()
	}
	res.minimum = simMinimum(sc)
	return res
}

func countSince(ts []time.Duration, from time.Duration) int {
	n := 0
	for i := len(ts) - 1; i >= 0 && ts[i] > from; i-- {
		n++
	}
	return n
}

// simMinimum is the makespan of a sender that knows the limit exactly:
// each request goes the moment the limiter would admit it.
func simMinimum(sc simScenario) time.Duration {
	lim := sc.limit()
	var t time.Duration
	changeI := 0
	for range sc.n {
		for {
			for changeI < len(sc.changes) && sc.changes[changeI].at <= t+simLatency/2 {
				lim.Scale(sc.changes[changeI].factor)
				changeI++
			}
			ok, wait := lim.Admit(simEpoch.Add(t + simLatency/2))
			if ok {
				break
			}
			if wait <= 0 {
				wait = time.Millisecond
			}
			t += wait
		}
	}
	return t + simLatency
}

func simScenarios() []simScenario {
	leaky := func(r float64, b int) func() *steadytest.Limit {
		return func() *steadytest.Limit { return steadytest.LeakyBucket(r, b) }
	}
	return []simScenario{
		{name: "leaky 20/s burst 10", limit: leaky(20, 10), n: 300},
		{name: "leaky 20/s burst 10, 16 workers", limit: leaky(20, 10), n: 300, workers: 16},
		{name: "leaky 20/s burst 10, bare 429", limit: func() *steadytest.Limit { return steadytest.LeakyBucket(20, 10).WithoutRetryAfter() }, n: 300},
		{name: "leaky 20/s no burst", limit: leaky(20, 0), n: 300},
		{name: "leaky 20/s no burst, bare 429", limit: func() *steadytest.Limit { return steadytest.LeakyBucket(20, 0).WithoutRetryAfter() }, n: 300},
		{name: "leaky 1/s no burst (60/min)", limit: leaky(1, 0), n: 200},
		{name: "token bucket 20/1s", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.TokenBucket, 20, time.Second) }, n: 300},
		{name: "token bucket 100/10s", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.TokenBucket, 100, 10*time.Second) }, n: 500},
		{name: "fixed window 20/1s", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.FixedWindow, 20, time.Second) }, n: 300},
		{name: "sliding window 20/1s", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.SlidingWindow, 20, time.Second) }, n: 300},
		{name: "fixed window 100/10s", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.FixedWindow, 100, 10*time.Second) }, n: 500},
		{name: "sliding window 100/10s", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.SlidingWindow, 100, 10*time.Second) }, n: 500},
		{name: "fixed window 600/1m", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.FixedWindow, 600, time.Minute) }, n: 3000},
		{name: "sliding window 600/1m", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.SlidingWindow, 600, time.Minute) }, n: 3000},
		{name: "leaky 20/s burst 10, halved at 20s, doubled at 40s", limit: leaky(20, 10), n: 1100,
			changes: []simChange{{20 * time.Second, 0.5}, {40 * time.Second, 2}}},
		{name: "leaky 20/s no burst, halved at 20s, doubled at 40s", limit: leaky(20, 0), n: 1100,
			changes: []simChange{{20 * time.Second, 0.5}, {40 * time.Second, 2}}},
		{name: "fixed window 100/10s, halved at 60s, doubled at 120s", limit: func() *steadytest.Limit { return steadytest.NewLimit(steadytest.FixedWindow, 100, 10*time.Second) }, n: 1500,
			changes: []simChange{{60 * time.Second, 0.5}, {120 * time.Second, 2}}},
	}
}

// TestDiscoverClosedLoop drives the discoverer against every header-less
// limiter and checks the targets: makespan within 1.25× the limit's
// minimum, at most 5% of attempts throttled, and a halved or doubled limit
// found within 5 s (per-second limits) or two windows.
func TestDiscoverClosedLoop(t *testing.T) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-55s %9s %9s %6s %9s %6s %-12s | %s\n", "limit", "makespan", "minimum", "ratio", "attempts", "429s", "found after", "AWS adaptive: ratio, 429s, found after")
	for _, sc := range simScenarios() {
		r := simulate(sc)
		var found []string
		for _, f := range r.found {
			found = append(found, f.Round(100*time.Millisecond).String())
		}
		aws := simulateWith(sc, new(awsAdaptive))
		var awsFound []string
		for _, f := range aws.found {
			awsFound = append(awsFound, f.Round(100*time.Millisecond).String())
		}
		fmt.Fprintf(&b, "%-55s %9s %9s %6.2f %9d %5.1f%% %-12s | %5.2f %5.1f%% %s\n", sc.name, r.makespan.Round(100*time.Millisecond), r.minimum.Round(100*time.Millisecond),
			r.ratio(), r.attempts, 100*r.share429(), strings.Join(found, ", "), aws.ratio(), 100*aws.share429(), strings.Join(awsFound, ", "))
		t.Run(sc.name, func(t *testing.T) {
			AtMost(t, "makespan", "%.2f×", r.ratio(), 1.25)
			AtMost(t, "429s", "%.1f%%", 100*r.share429(), 5)
			lim := sc.limit()
			within := 5 * time.Second
			if w := lim.Window(); w > time.Second {
				within = 2 * w
			}
			for i, f := range r.found {
				if f < 0 || f > within {
					t.Errorf("change %d (×%g at %v): new rate found after %v, want within %v", i, sc.changes[i].factor, sc.changes[i].at, f, within)
				}
			}
		})
	}
	t.Log(b.String())
}

// TestDiscoverThroughProvider runs the discoverer as a pacer would, with a
// goroutine per request, against steadytest's simulated provider behind a
// header-less leaky bucket (20/s, burst 10), in a synctest bubble: real
// HTTP responses, Retry-After read from their headers.
func TestDiscoverThroughProvider(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := steadytest.LeakyBucket(20, 10)
		p := steadytest.NewProvider(steadytest.ProviderConfig{Limiter: lim, Dialect: steadytest.DialectNone, Latency: simLatency})
		var (
			mu       sync.Mutex
			d        discoverer
			inflight int
			wake     = make(chan struct{}, 1)
			attempts int
			refused  int
		)
		const n = 300
		start := time.Now()
		// admit waits for the request's turn: a cold partition keeps a few
		// in flight, and every request goes at the discovered pace.
		admit := func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			for {
				now := time.Now()
				if !d.warm() && inflight >= simColdInFlight {
					mu.Unlock()
					<-wake
					mu.Lock()
					continue
				}
				if at := d.next(now); at.After(now) {
					mu.Unlock()
					time.Sleep(at.Sub(now))
					mu.Lock()
					continue
				}
				d.sent(now)
				inflight++
				attempts++
				return now
			}
		}
		body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for {
					sent := admit()
					req, _ := http.NewRequest("POST", "http://provider/v1/chat/completions", strings.NewReader(body))
					resp, err := p.RoundTrip(req)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					now := time.Now()
					mu.Lock()
					inflight--
					ok := resp.StatusCode == http.StatusOK
					if ok {
						d.onAccepted(now)
					} else {
						refused++
						ra, has := ratelimit.ParseRetryAfter(resp.Header, now)
						d.onThrottled(sent, now, ra, has)
					}
					mu.Unlock()
					select {
					case wake <- struct{}{}:
					default:
					}
					if ok {
						return
					}
				}
			})
		}
		wg.Wait()
		makespan := time.Since(start)
		minimum := simMinimum(simScenario{limit: func() *steadytest.Limit { return steadytest.LeakyBucket(20, 10) }, n: n})
		rate, warm := d.estimate()
		t.Logf("%d requests: makespan %v (minimum %v, %.2f×), %d attempts, %d refused (%.1f%%), pace %.1f/s, warm %v",
			n, makespan.Round(time.Millisecond), minimum, makespan.Seconds()/minimum.Seconds(), attempts, refused, 100*float64(refused)/float64(attempts), rate, warm)
		if r := makespan.Seconds() / minimum.Seconds(); r > 1.25 {
			t.Errorf("makespan %v is %.2f× the minimum %v", makespan, r, minimum)
		}
		if share := float64(refused) / float64(attempts); share > 0.05 {
			t.Errorf("%d of %d attempts refused", refused, attempts)
		}
		if st := p.Stats(); st.Accepted != n {
			t.Errorf("provider accepted %d, want %d", st.Accepted, n)
		}
	})
}

// BenchmarkDiscoverer measures the discoverer's cost per request: a slot,
// a send, an outcome.
func BenchmarkDiscoverer(b *testing.B) {
	var d discoverer
	now := simEpoch
	b.ReportAllocs()
	for i := range b.N {
		at := d.next(now)
		d.sent(at)
		now = at.Add(simLatency)
		if i%50 == 49 {
			d.onThrottled(at, now, time.Second, true)
		} else {
			d.onAccepted(now)
		}
	}
}

// awsAdaptive is the AWS SDKs' adaptive retry rate limiter as they
// document and implement it, for comparison: the client's sending rate is
// measured in half-second buckets (smoothed 0.8); a throttle sets the
// last maximum to the lesser of that rate and the bucket's fill rate, cuts
// the fill rate to 0.7 of it and turns the token bucket on; successes
// grow it along the cubic 0.4·(t−K)³ + last maximum, never above twice the
// measured rate. Until the first throttle nothing is paced. It ignores
// Retry-After.
type awsAdaptive struct {
	enabled          bool
	fill, calc       float64
	tokens, capacity float64
	refilled         time.Time
	measured, bucket float64
	count            float64
	lastMax          float64
	lastThrottle     time.Time
	window           float64
	started          bool
}

func (a *awsAdaptive) init(now time.Time) {
	if !a.started {
		a.started = true
		a.bucket = math.Floor(float64(now.UnixNano())/1e9*2) / 2
		a.lastThrottle = now
	}
}

func (a *awsAdaptive) refill(now time.Time) {
	if a.refilled.IsZero() {
		a.refilled = now
		return
	}
	a.tokens = math.Min(a.capacity, a.tokens+now.Sub(a.refilled).Seconds()*a.fill)
	a.refilled = now
}

func (a *awsAdaptive) next(now time.Time) time.Time {
	a.init(now)
	if !a.enabled {
		return now
	}
	a.refill(now)
	if a.tokens >= 1 {
		return now
	}
	return now.Add(time.Duration((1 - a.tokens) / math.Max(a.fill, 0.5) * 1e9))
}

func (a *awsAdaptive) sent(now time.Time) {
	if a.enabled {
		a.refill(now)
		a.tokens--
	}
}

func (a *awsAdaptive) warm() bool { return true }

func (a *awsAdaptive) update(now time.Time, throttled bool) {
	a.init(now)
	b := math.Floor(float64(now.UnixNano())/1e9*2) / 2
	a.count++
	if b > a.bucket {
		cur := a.count / (b - a.bucket)
		a.measured = cur*0.8 + a.measured*0.2
		a.count, a.bucket = 0, b
	}
	if throttled {
		use := a.measured
		if a.enabled {
			use = math.Min(a.measured, a.fill)
		}
		a.lastMax = use
		a.window = math.Cbrt(a.lastMax * (1 - 0.7) / 0.4)
		a.lastThrottle = now
		a.calc = use * 0.7
		a.enabled = true
	} else {
		a.window = math.Cbrt(a.lastMax * (1 - 0.7) / 0.4)
		dt := now.Sub(a.lastThrottle).Seconds()
		a.calc = 0.4*math.Pow(dt-a.window, 3) + a.lastMax
	}
	rate := math.Min(a.calc, 2*a.measured)
	a.refill(now)
	a.fill = math.Max(rate, 0.5)
	a.capacity = math.Max(rate, 1)
	a.tokens = math.Min(a.tokens, a.capacity)
}

func (a *awsAdaptive) onAccepted(now time.Time) { a.update(now, false) }

func (a *awsAdaptive) onThrottled(_, now time.Time, _ time.Duration, _ bool) {
	a.update(now, true)
}
