package bench

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	fleets    = flag.Bool("fleets", false, "with -report: run the full fleet matrix of real processes on loopback (minutes a row) into the report; alone: run it and log its table (TestFleetMatrix)")
	fleetRows = flag.String("fleet-rows", "", "run only the fleet matrix's rows whose description matches this regular expression")
	fleetDur  = flag.Duration("fleet-duration", 0, "run the fleet matrix's rows under sustained load this long instead of their own duration")
)

func TestMain(m *testing.M) {
	if code, ok := fleetWorker(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// fleetKnownMisses are the short rows that miss their target today, by
// description. These rows run real processes in real time, so their
// figures vary from run to run: a listed row that meets its target is
// logged, not failed; an unlisted row that misses fails.
var fleetKnownMisses = map[string]string{
	"fixed 10 s, Heroku (epoch-second resets): 4× steady (middleware), no store, deploy":  "uncoordinated shares: calls refused with a pacing wait past the deadline (issue 18)",
	"fixed 10 s, Heroku (epoch-second resets): 16× steady (middleware), no store, deploy": "uncoordinated shares: 429s over 5% and calls refused with a pacing wait past the deadline (issue 18)",
	"fixed 10 s, Heroku (epoch-second resets): 4× steady (transport), store, deploy":      "the store's cold start: 429s over 0.5% in the first windows (issue 18)",
	"fixed 10 s, Heroku (epoch-second resets): 16× steady (middleware), store, deploy":    "the store's cold start: calls failed on their deadline (issue 18)",
}

// runFleetCases runs cs one after another and logs each outcome.
func runFleetCases(t *testing.T, cs []fleetCase) []fleetOutcome {
	var filter *regexp.Regexp
	if *fleetRows != "" {
		filter = regexp.MustCompile(*fleetRows)
	}
	var out []fleetOutcome
	for _, c := range cs {
		desc := c.Name + ": " + c.describe()
		if filter != nil && !filter.MatchString(desc) {
			continue
		}
		if *fleetDur > 0 && c.Calls == 0 {
			c.Duration = *fleetDur
		}
		if c.Store != noStore {
			if err := fleetRedisReady(c.Fault); err != nil {
				if os.Getenv("STEADY_REQUIRE_REDIS") == "1" {
					t.Errorf("%s: %v (STEADY_REQUIRE_REDIS=1)", desc, err)
				} else {
					t.Logf("SKIPPED %s: %v; start one (redis-server --port 6379 --save '' --appendonly no) to run it", desc, err)
				}
				continue
			}
		}
		var logs lockedBuffer
		o, err := runFleet(t.Context(), c, &logs)
		if err != nil {
			t.Errorf("%s: %v\n%s", desc, err, logs.String())
			continue
		}
		t.Logf("%s: %s", desc, o.summary())
		out = append(out, o)
	}
	return out
}

// summary is an outcome in one line.
func (o fleetOutcome) summary() string {
	s := fmt.Sprintf("429s %s (%d of %d), goodput %.3f, failed %d of %d, spread ±%.1f%%, took %s",
		pct(o.LimitedShare()), o.RateLimited, o.Attempts, o.Goodput, o.Failed, o.Calls, 100*o.Spread, o.Wall.Round(time.Second))
	if o.Minimum > 0 {
		s += fmt.Sprintf(", makespan %s = %.2f× the minimum %s", fmtDur(o.Makespan), o.Ratio(), fmtDur(o.Minimum))
	}
	if o.Outside != nil {
		s += fmt.Sprintf(", outside: %d ok, 429s %d of %d", o.Outside.OK, o.Outside.RateLimited, o.Outside.Attempts)
	}
	if len(o.Errors) > 0 {
		s += fmt.Sprintf(", failures %v", o.Errors)
	}
	return s
}

// TestFleetShort runs the short fleet rows (real processes, real time,
// tens of seconds each) and checks the harness's own bookkeeping against
// the provider's, and each row's target.
func TestFleetShort(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes in real time: not with -short")
	}
	for _, o := range runFleetCases(t, fleetShort()) {
		c := o.Case
		desc := c.Name + ": " + c.describe()
		// The provider's samples and the workers' tallies agree.
		var req, limited int64
		for _, s := range o.Samples {
			req += s.Requests
			limited += s.RateLimited
		}
		if o.Attempts == 0 || o.OK == 0 {
			t.Errorf("%s: %d attempts, %d ok", desc, o.Attempts, o.OK)
		}
		if req < int64(o.Attempts)*95/100 || req > int64(o.Attempts) {
			t.Errorf("%s: the provider sampled %d requests, the workers counted %d attempts", desc, req, o.Attempts)
		}
		if o.Goodput <= 0.5 || o.Goodput > 1.05 {
			t.Errorf("%s: goodput %.3f of the limit is not plausible", desc, o.Goodput)
		}
		if o.OK+o.Failed != o.Calls {
			t.Errorf("%s: ok %d + failed %d != calls %d", desc, o.OK, o.Failed, o.Calls)
		}
		if len(o.Processes) != c.processes() {
			t.Errorf("%s: %d processes reported", desc, len(o.Processes))
		}
		max429, ok := fleetTarget(c)
		if !ok {
			continue
		}
		met := o.LimitedShare() <= max429 && o.Failed == 0
		why, known := fleetKnownMisses[desc]
		switch {
		case !met && !known:
			t.Errorf("%s: target at most %s 429s and no call failed: %s", desc, pct(max429), o.summary())
		case met && known:
			// Real processes in real time: a row's figures vary from run
			// to run, so a listed row that meets its target this time is
			// logged (the list is reviewed from these lines), not failed.
			t.Logf("known miss met its target this run, %s: %s: %s", desc, why, o.summary())
		case !met:
			t.Logf("known miss, %s: %s", desc, why)
		}
	}
}

// TestFleetMatrix runs the full fleet matrix and logs its table; with
// -report the report runs it instead.
func TestFleetMatrix(t *testing.T) {
	if !*fleets || *report {
		t.Skip("run with -fleets (hours; -fleet-rows to pick rows) to run the full fleet matrix")
	}
	out := runFleetCases(t, fleetMatrix())
	var b strings.Builder
	benchReport{Procs: out}.writeProcs(func(format string, a ...any) { fmt.Fprintf(&b, format, a...) })
	t.Logf("\n%s", b.String())
}

// lockedBuffer collects workers' stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
