package steady_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// Callers: how a scenario's finite batch is launched.
const (
	callWorkers  = "workers"        // 16 workers share the batch
	callBurst    = "burst"          // every call at once, no deadline
	callLong     = "burst-deadline" // every call at once, deadlines past the quota's need
	callShort    = "short-deadline" // every call at once, deadlines a little over one window
	matrixLat    = 20 * time.Millisecond
	matrixOffset = 37 // percent of a window the batch starts into it
)

// scenario is one row of the pacing matrix: a simulated provider, the
// processes sharing its key (one Transport each, uncoordinated) and how
// the batch is launched, through the real SDK in one of its two forms.
type scenario struct {
	algo    steadytest.Algorithm
	window  time.Duration
	dialect steadytest.Dialect
	callers string
	procs   int
	form    string // "middleware" or "roundtripper"
	limit   int    // requests per window
	calls   int    // the batch
	// truncate has the provider truncate whole-second resets rather than
	// round them up.
	truncate bool
}

func (s scenario) name() string {
	announced := "unannounced"
	if s.dialect == steadytest.DialectIETF {
		announced = "announced"
	}
	name := fmt.Sprintf("%s/%v/%s/%s/%s/procs=%d/%s", s.algo, s.window, announced, s.dialect, s.callers, s.procs, s.form)
	if s.calls%s.limit == 0 && s.calls > s.limit {
		name += fmt.Sprintf("/fit=%d", s.calls/s.limit)
	}
	if s.truncate {
		name += "/truncated"
	}
	return name
}

// scenarioResult is what one row achieved.
type scenarioResult struct {
	ok, failed, failedAtOnce int // failedAtOnce: before their deadline
	attempts, rejected       int64
	makespan, quotaMin       time.Duration
	servable                 int // short deadlines: what the quota admits before them
}

func (r scenarioResult) ratio() float64 {
	return float64(r.makespan) / float64(r.quotaMin)
}

func (r scenarioResult) rejectedShare() float64 {
	if r.attempts == 0 {
		return 0
	}
	return float64(r.rejected) / float64(r.attempts)
}

// quotaMin is the least time, from start, until the last of n requests is
// answered: the provider's quota admitting requests as fast as it can,
// plus one response's latency.
func (s scenario) quotaMin(start time.Time) time.Duration {
	n, l, p := s.calls, s.limit, s.window
	var d time.Duration
	switch s.algo {
	case steadytest.SlidingWindow:
		d = time.Duration((n+l-1)/l-1) * p
	case steadytest.FixedWindow:
		if n > l {
			end := windowEnd(start, p)
			d = end.Sub(start) + time.Duration((n+l-1)/l-2)*p
		}
	case steadytest.TokenBucket:
		d = time.Duration(float64(max(n-l, 0)) * float64(p) / float64(l))
	}
	return d + matrixLat
}

// servable is how many requests the quota admits from start until the
// deadline d later, less 2% headroom per window, answered by then.
func (s scenario) servable(start time.Time, d time.Duration) int {
	l, p := s.limit, s.window
	per := l - int(math.Floor(float64(l)*0.02))
	d -= matrixLat
	var n int
	switch s.algo {
	case steadytest.SlidingWindow:
		n = per * (1 + int(d/p))
	case steadytest.FixedWindow:
		n = per
		for end := windowEnd(start, p); !end.After(start.Add(d)); end = end.Add(p) {
			n += per
		}
	case steadytest.TokenBucket:
		n = per + int(float64(d)*float64(per)/float64(p))
	}
	return min(n, s.calls)
}

// windowEnd is the end of the epoch-aligned window of length p holding t.
func windowEnd(t time.Time, p time.Duration) time.Time {
	ns := t.UnixNano()
	return time.Unix(0, ns-ns%int64(p)+int64(p))
}

// run launches the batch and measures it; trace, if not nil, records
// every answer. It must run in a synctest bubble.
func (s scenario) run(t *testing.T, trace *answers) scenarioResult {
	steady.SeedRandom(1)
	prov := inOrder{steadytest.NewProvider(steadytest.ProviderConfig{
		RequestsPerWindow: s.limit, Window: s.window, Algorithm: s.algo, Dialect: s.dialect, Latency: matrixLat,
		TruncateResets: s.truncate,
	})}
	var wire http.RoundTripper = prov
	if trace != nil {
		wire = trace
		trace.rt = prov
	}
	clients := make([]openai.Client, s.procs)
	for i := range clients {
		clients[i], _ = clientForms[s.form](steady.Config{}, wire)
	}
	// Start part of the way into a window, as a batch would.
	time.Sleep(time.Duration(int64(s.window) * matrixOffset / 100))
	start := time.Now()
	res := scenarioResult{quotaMin: s.quotaMin(start)}
	var deadline time.Time
	switch s.callers {
	case callLong:
		deadline = start.Add(2*res.quotaMin + s.window)
	case callShort:
		deadline = start.Add(s.window + s.window/5)
		res.servable = s.servable(start, deadline.Sub(start))
	}
	var mu sync.Mutex
	var last time.Time
	call := func(i int) {
		ctx := context.Background()
		if !deadline.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		began := time.Now()
		_, err := clients[i%s.procs].Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
		}, callNumber(i))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.failed++
			if !deadline.IsZero() && time.Now().Before(deadline) {
				res.failedAtOnce++
			}
			if s.callers != callShort && res.failed <= 2 {
				t.Logf("call %d failed after %v: %v", i, time.Since(began), err)
			}
			return
		}
		res.ok++
		last = time.Now()
	}
	launch(s.callers, s.calls, call)
	st := prov.Stats()
	res.attempts, res.rejected = st.Requests, st.RateLimited
	res.makespan = last.Sub(start)
	return res
}

// matrix is the scenario matrix: window kind × length × callers, with the
// dialect and the form of plugging steady in taking turns; every dialect
// on a per-second fixed window; and 4 and 16 processes sharing a key.
func matrix() []scenario {
	dialects := []steadytest.Dialect{
		steadytest.DialectOpenAI, steadytest.DialectHerokuSeed, steadytest.DialectAnthropic,
		steadytest.DialectIETF, steadytest.DialectHerokuDocs,
	}
	limits := map[time.Duration]int{time.Second: 20, 10 * time.Second: 100, time.Minute: 60, time.Hour: 120}
	forms := []string{"middleware", "roundtripper"}
	var rows []scenario
	i := 0
	for _, a := range []steadytest.Algorithm{steadytest.FixedWindow, steadytest.SlidingWindow, steadytest.TokenBucket} {
		for _, w := range []time.Duration{time.Second, 10 * time.Second, time.Minute, time.Hour} {
			for _, c := range []string{callWorkers, callBurst, callLong, callShort} {
				l := limits[w]
				rows = append(rows, scenario{algo: a, window: w, dialect: dialects[i%len(dialects)], callers: c, procs: 1, form: forms[i%2], limit: l, calls: l * 5 / 2})
				i++
			}
		}
	}
	for _, d := range dialects {
		rows = append(rows, scenario{algo: steadytest.FixedWindow, window: time.Second, dialect: d, callers: callWorkers, procs: 1, form: forms[i%2], limit: 20, calls: 120})
		i++
	}
	for _, a := range []steadytest.Algorithm{steadytest.FixedWindow, steadytest.SlidingWindow, steadytest.TokenBucket} {
		for _, procs := range []int{4, 16} {
			for _, w := range []time.Duration{10 * time.Second, time.Minute} {
				rows = append(rows, scenario{algo: a, window: w, dialect: dialects[i%len(dialects)], callers: callBurst, procs: procs, form: forms[i%2], limit: 240, calls: 600})
				i++
			}
		}
	}
	// Lengths and limits the rows above never use, as a user's provider
	// might have them: 37 a window of 5 s, 30 s or 2 min, a batch that is
	// no multiple of the limit, everything at once with no deadline, one
	// process and three.
	for _, a := range []steadytest.Algorithm{steadytest.FixedWindow, steadytest.SlidingWindow, steadytest.TokenBucket} {
		for _, w := range []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute} {
			for _, procs := range []int{1, 3} {
				rows = append(rows, scenario{algo: a, window: w, dialect: dialects[i%len(dialects)], callers: callBurst, procs: procs, form: forms[i%2], limit: 37, calls: 101})
				i++
			}
		}
	}
	// Exact fits: a batch of several whole windows' worth, launched at
	// once with no deadline, one process, in every reset format (durations,
	// epoch seconds, RFC 3339 rounded up and truncated, IETF seconds): the
	// headroom must cost no window.
	for _, a := range []steadytest.Algorithm{steadytest.FixedWindow, steadytest.SlidingWindow} {
		for _, w := range []time.Duration{10 * time.Second, time.Minute} {
			l := limits[w]
			for _, d := range dialects {
				for _, truncate := range []bool{false, true} {
					if truncate && d != steadytest.DialectHerokuSeed && d != steadytest.DialectAnthropic {
						continue // no whole-second timestamps to truncate
					}
					rows = append(rows, scenario{algo: a, window: w, dialect: d, callers: callBurst, procs: 1, form: forms[i%2], limit: l, calls: l * 3, truncate: truncate})
					i++
				}
			}
		}
	}
	rows = append(rows,
		scenario{algo: steadytest.FixedWindow, window: time.Minute, dialect: steadytest.DialectOpenAI, callers: callBurst, procs: 1, form: "middleware", limit: 60, calls: 300},
		scenario{algo: steadytest.FixedWindow, window: time.Minute, dialect: steadytest.DialectAnthropic, callers: callBurst, procs: 1, form: "roundtripper", limit: 60, calls: 300, truncate: true},
		scenario{algo: steadytest.SlidingWindow, window: 10 * time.Second, dialect: steadytest.DialectHerokuSeed, callers: callBurst, procs: 1, form: "middleware", limit: 100, calls: 300},
		scenario{algo: steadytest.SlidingWindow, window: 10 * time.Second, dialect: steadytest.DialectOpenAI, callers: callBurst, procs: 1, form: "roundtripper", limit: 100, calls: 300},
	)
	return rows
}

// TestPacingMatrix runs the scenario matrix in fake time and holds each
// row to the pacing targets: no call fails that the quota could serve
// before its deadline; a finite batch takes at most 1.05 times the quota's
// minimum (1.02 times for one process on a fixed or sliding window of
// 10 s or more); 429s are at most 1% of attempts for one process (0.5% on
// such a window) and 3% for several uncoordinated ones. A row that misses
// a target is listed in knownMisses (misses_test.go). STEADY_MATRIX=1
// prints the table.
func TestPacingMatrix(t *testing.T) {
	var table strings.Builder
	fmt.Fprintf(&table, "%-70s %5s %6s %6s %8s %9s %9s %6s\n", "row", "ok", "failed", "429%", "attempts", "makespan", "quotamin", "ratio")
	for _, s := range matrix() {
		t.Run(s.name(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := s.run(t, nil)
				line := fmt.Sprintf("%-70s %5d %6d %5.2f%% %8d %9v %9v %6.3f", s.name(), r.ok, r.failed, 100*r.rejectedShare(), r.attempts,
					r.makespan.Round(time.Millisecond), r.quotaMin.Round(time.Millisecond), r.ratio())
				if s.callers == callShort {
					line += fmt.Sprintf(" servable %d, failed before the deadline %d of %d", r.servable, r.failedAtOnce, r.failed)
				}
				t.Log(line)
				table.WriteString(line + "\n")
				maxRejected, maxRatio := 0.01, 1.05
				if s.procs > 1 {
					maxRejected = 0.03
				}
				if s.procs == 1 && s.window >= 10*time.Second && s.algo != steadytest.TokenBucket {
					// One process at the physical limit (issue 20): the
					// headroom and whole-second resets cost no window.
					maxRejected, maxRatio = 0.005, 1.02
				}
				atMost(t, "429s", "%.2f%%", 100*r.rejectedShare(), 100*maxRejected)
				if s.callers == callShort {
					atLeast(t, "served", "%.0f", float64(r.ok), float64(r.servable-1))
					return
				}
				atMost(t, "failed", "%.0f", float64(r.failed), 0)
				atMost(t, "makespan", "%.3f×", r.ratio(), maxRatio)
			})
		})
	}
	if os.Getenv("STEADY_MATRIX") != "" {
		fmt.Print(table.String())
	}
}

// answers records every answer of the provider: when it came (since the
// first), to which call, and its status.
type answers struct {
	rt    http.RoundTripper
	mu    sync.Mutex
	first time.Time
	log   []string // guarded by mu
}

func (a *answers) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.rt.RoundTrip(req)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.first.IsZero() {
		a.first = now
	}
	a.log = append(a.log, fmt.Sprintf("+%v call %s: %d %v", now.Sub(a.first), req.Header.Get(callHeader), status, err))
	return resp, err
}

// TestPacingMatrixRepeatable runs each row of the matrix whose result
// once varied from run to run in fake time twice, and requires the same
// answers, at the same instants, to the same calls: rows of several
// uncoordinated processes (attempts of two processes reached the
// provider at one instant, and were answered in the scheduler's order,
// until inOrder ordered them), and rows through the RoundTripper form
// with deadlines (the SDK's own retries of steady's errors drew their
// jitter from a source no test seeds, until the matrix turned them off).
// One run's variation of another shows here, answer by answer, where
// their results may agree by chance.
func TestPacingMatrixRepeatable(t *testing.T) {
	for _, s := range matrix() {
		if s.procs == 1 && (s.form != "roundtripper" || s.callers != callShort) {
			continue
		}
		t.Run(s.name(), func(t *testing.T) {
			var runs [2]*answers
			for i := range runs {
				runs[i] = &answers{}
				synctest.Test(t, func(t *testing.T) { s.run(t, runs[i]) })
			}
			a, b := runs[0].log, runs[1].log
			for i := range max(len(a), len(b)) {
				if i >= len(a) || i >= len(b) || a[i] != b[i] {
					t.Fatalf("the second run differs from the first at answer %d of %d and %d:\n%s\nagainst\n%s", i, len(a), len(b), at(a, i), at(b, i))
				}
			}
		})
	}
}

// at is log[i], or a note that there is none.
func at(log []string, i int) string {
	if i < len(log) {
		return log[i]
	}
	return "(none)"
}
