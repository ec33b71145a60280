package steady

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// A target an issue sets that steady does not meet yet stays the target in
// its test: the row that misses it calls AtMost or AtLeast with the target
// and what it measured, and is listed in knownMisses (and in the README's
// "Known misses"). A listed row that misses logs "KNOWN MISS" and passes;
// a row that misses and is not listed fails; a listed row that meets its
// target fails too, so that the table stays true. Under -v the run ends
// with the table of the misses it saw.

// knownMiss is one row of the known-miss table.
type knownMiss struct {
	row     string // the test's full name, as t.Name() gives it
	measure string // what is measured, as the test names it to AtMost or AtLeast
	why     string
}

// The reasons, shared by the rows they explain.
const (
	whyWholeSecond1s  = "resets in whole seconds: in a one-second window each refill is read up to a second late"
	whyWholeSecond    = "resets in whole seconds (epoch seconds, RFC 3339): each refill of a sliding window is read up to a second late"
	whyIETFSeconds    = "issue 20: IETF resets in delta seconds, rounded up: each refill of a fixed window is read up to a second late"
	whyTruncated      = "issue 20: resets truncated to the second come up to a second early; at each, one request goes first to see whether the window refilled, and on a sliding window it draws one 429 a window (all recovered) and the wait for the hint (before: 39.5% 429s)"
	whyWorkers        = "issue 20: each use of a sliding window comes back a response's latency and p/200 after its period, and 16 workers send no sooner"
	whyBucket1s       = "a one-second bucket is nearly empty before its kind shows in the headers: the batch waits for its reset once"
	whyFleet          = "uncoordinated processes learn of each other only from how fast remaining falls: their first requests and ramps overlap; a store (steadyredis) is the remedy"
	whySmallFleet     = "a small limit shared by uncoordinated processes: their cold starts (4 in flight each) and first ramps take much of one window before any of them sees the others; a store (steadyredis) is the remedy"
	whyColdShort      = "from a cold start nothing tells the rate before the first 429: slow start takes about a second to reach 20/s, and a window's quota is then paced evenly, where a sender that knows the limit sends it the moment the window opens; with deadlines at half the batch's minimum that costs up to a third of what the limit could serve by then"
	whyColdBucket     = "a token bucket's stored burst, drained in slow start, costs a few more 429s before the rate is found"
	whyProbeGap       = "issue 20: steady first sees the outage at the window's reset (60 s: the window was spent before the outage began, and nothing is sent until it refills); the circuit opens then and probes 1, 3, 7 and 15 s later (open periods of 1, 2, 4, 8 s less jitter), so the healing at 70 s falls in the fourth period (7.76 s), whose end is met by the first caller after it 0.34 s later (fail-fast callers back off a second); probing more often would cost the outage more attempts (TestOutageCost)"
	whyOutageCost     = "issue 20: a 2-minute outage under load costs 5 attempts to trip the circuit (5 failures in a row; 16 with the former default of 10) and 15 probes (open periods of 1, 2, 4, 8 s, then 7.5–10 s: Breaker.OpenTimeout); at most 15 leaves 10 probes after the trip, a gap of 12 s or more between two, so that a healing at the worst moment would be seen 12 s or more late against the 5 s target (a probe every 5 s is 24 in 2 minutes): the two targets cannot both hold at every moment of healing"
	whyUncoord        = "issue 18: at zero latency, as with 50 ms (whyUncoordLatency), no 429s and 16 processes split evenly; 4 do not: a share falls at once to the process's part of what was spent and its burst at each reset is its share of the window, so a process that got little gets little again and refuses calls whose paced turn passes their 2-minute deadline"
	whyUncoordLatency = "issue 18: with 50 ms of latency none is answered 429 (a shared window that refills at its reset is held to what its latest answer allows until that reset, and a share rises only when an epoch ends), and 16 processes split evenly; 4 do not: a share falls at once to the process's part of what was spent and its burst at each reset is its share of the window, so a process that got little gets little again, the shares settle unequal, and the one at the smallest refuses calls whose paced turn passes their 2-minute deadline (falling only at the epoch's end too was tried: fairer, but 1.6-6% 429s)"
	whySliding10s     = "not analysed yet: 1.24 times when the batch was launched in the scheduler's order, 1.28 times in the order of its calls"
	whyBatchKeep      = "issue 21: the batch leaves one request of the window free for interactive calls and 10% in its first window, and is sent evenly; about 1% more is lost that is not analysed yet (96.7% and 96.8% measured)"
)

// knownMisses is the table. Keep it sorted by test, then row.
var knownMisses = []knownMiss{
	// TestDiscoverClosedLoop: the discoverer against a simulated clock.
	{"TestDiscoverClosedLoop/sliding_window_100/10s", "makespan", "the first window fills in slow start (3.5 s) and the slots free in that pattern; Retry-After rounds up to whole seconds"},
	{"TestDiscoverClosedLoop/token_bucket_100/10s", "429s", "slow start drains the 100-request bucket at ~120/s: ~18 429s before the 10/s refill is measured"},
	// TestDiscoverSDK: nothing announced.
	{"TestDiscoverSDK/fixed_window_100/10s/short-deadline/roundtripper", "served", whyColdShort},
	{"TestDiscoverSDK/fixed_window_20/1s/short-deadline/roundtripper", "served", whyColdShort},
	{"TestDiscoverSDK/fixed_window_60/1m0s/short-deadline/roundtripper", "served", whyColdShort},
	{"TestDiscoverSDK/leaky_20/s_burst_0/short-deadline/roundtripper", "served", whyColdShort},
	{"TestDiscoverSDK/leaky_20/s_burst_10,_no_Retry-After/short-deadline/roundtripper", "served", whyColdShort},
	{"TestDiscoverSDK/leaky_20/s_burst_10/short-deadline/roundtripper", "served", whyColdShort},
	{"TestDiscoverSDK/sliding_window_100/10s/burst-deadline/middleware", "makespan", whySliding10s},
	{"TestDiscoverSDK/sliding_window_100/10s/burst/roundtripper", "makespan", whySliding10s},
	{"TestDiscoverSDK/sliding_window_100/10s/workers/middleware", "makespan", whySliding10s},
	{"TestDiscoverSDK/sliding_window_20/1s/short-deadline/roundtripper", "served", whyColdShort},
	{"TestDiscoverSDK/token_bucket_100/10s/short-deadline/roundtripper", "429s", whyColdBucket},
	{"TestDiscoverSDK/token_bucket_100/10s/short-deadline/roundtripper", "served", whyColdShort},
	// TestPacingMatrix.
	{"TestPacingMatrix/fixed-window/10s/announced/ietf/burst/procs=1/middleware/fit=3", "makespan", whyIETFSeconds},
	{"TestPacingMatrix/fixed-window/10s/announced/ietf/burst/procs=4/roundtripper", "makespan", whyFleet},
	{"TestPacingMatrix/fixed-window/1s/announced/ietf/workers/procs=1/roundtripper/fit=6", "makespan", whyWholeSecond1s},
	{"TestPacingMatrix/sliding-window/10s/unannounced/anthropic/burst-deadline/procs=1/middleware", "makespan", whyWholeSecond},
	{"TestPacingMatrix/sliding-window/10s/unannounced/anthropic/burst/procs=1/middleware/fit=3", "makespan", whyWholeSecond},
	{"TestPacingMatrix/sliding-window/10s/unannounced/anthropic/burst/procs=1/roundtripper/fit=3/truncated", "429s", whyTruncated},
	{"TestPacingMatrix/sliding-window/10s/unannounced/anthropic/burst/procs=1/roundtripper/fit=3/truncated", "makespan", whyTruncated},
	{"TestPacingMatrix/sliding-window/10s/unannounced/anthropic/burst/procs=4/roundtripper", "makespan", whyFleet},
	{"TestPacingMatrix/sliding-window/10s/unannounced/heroku-seed/burst/procs=1/middleware/fit=3", "makespan", whyWholeSecond},
	{"TestPacingMatrix/sliding-window/10s/unannounced/heroku-seed/burst/procs=1/middleware/fit=3#01", "makespan", whyWholeSecond},
	{"TestPacingMatrix/sliding-window/10s/unannounced/heroku-seed/burst/procs=1/roundtripper", "makespan", whyWholeSecond},
	{"TestPacingMatrix/sliding-window/10s/unannounced/heroku-seed/burst/procs=1/roundtripper/fit=3/truncated", "429s", whyTruncated},
	{"TestPacingMatrix/sliding-window/10s/unannounced/heroku-seed/burst/procs=1/roundtripper/fit=3/truncated", "makespan", whyTruncated},
	{"TestPacingMatrix/sliding-window/10s/unannounced/openai/workers/procs=1/middleware", "makespan", whyWorkers},
	{"TestPacingMatrix/sliding-window/1m0s/unannounced/anthropic/burst/procs=1/middleware/fit=3/truncated", "429s", whyTruncated},
	{"TestPacingMatrix/sliding-window/1m0s/unannounced/heroku-seed/burst/procs=1/middleware/fit=3/truncated", "429s", whyTruncated},
	{"TestPacingMatrix/sliding-window/1s/unannounced/anthropic/burst/procs=1/roundtripper", "makespan", whyWholeSecond1s},
	{"TestPacingMatrix/sliding-window/1s/unannounced/heroku-seed/workers/procs=1/middleware", "makespan", whyWholeSecond1s},
	{"TestPacingMatrix/sliding-window/5s/unannounced/anthropic/burst/procs=3/middleware", "makespan", whySmallFleet},
	{"TestPacingMatrix/sliding-window/5s/unannounced/heroku-seed/burst/procs=1/roundtripper", "makespan", whyWholeSecond},
	{"TestPacingMatrix/token-bucket/1s/announced/ietf/burst/procs=1/roundtripper", "makespan", whyBucket1s},
	{"TestPacingMatrix/token-bucket/1s/unannounced/anthropic/workers/procs=1/middleware", "makespan", whyBucket1s},
	// TestPriorityLanes.
	{"TestPriorityLanes/600-per-minute/middleware", "batch use", whyBatchKeep},
	{"TestPriorityLanes/60-per-minute/roundtripper", "batch use", whyBatchKeep},
	// TestUncoordinatedFleet: issue 18's fleets without a store, in fake time.
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/heroku-seed/middleware/latency=50ms", "failed", whyUncoordLatency},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/heroku-seed/middleware/latency=50ms", "spread", whyUncoordLatency},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/heroku-seed/roundtripper/latency=50ms", "failed", whyUncoordLatency},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/heroku-seed/roundtripper/latency=50ms", "spread", whyUncoordLatency},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/openai/middleware/latency=50ms", "failed", whyUncoordLatency},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/openai/middleware/latency=50ms", "spread", whyUncoordLatency},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/openai/roundtripper/latency=50ms", "failed", whyUncoordLatency},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/openai/roundtripper/latency=50ms", "spread", whyUncoordLatency},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/heroku-seed/middleware", "failed", whyUncoord},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/heroku-seed/middleware", "spread", whyUncoord},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/heroku-seed/roundtripper", "failed", whyUncoord},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/heroku-seed/roundtripper", "spread", whyUncoord},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/openai/middleware", "failed", whyUncoord},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/openai/middleware", "spread", whyUncoord},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/openai/roundtripper", "failed", whyUncoord},
	{"TestUncoordinatedFleet/procs=4/callers=64/120-per-1m0s/openai/roundtripper", "spread", whyUncoord},
	// TestOutageCost: a 2-minute outage under load.
	{"TestOutageCost/middleware", "attempts", whyOutageCost},
	{"TestOutageCost/roundtripper", "attempts", whyOutageCost},
	// TestOutageWindowSpent: the first success after a 60 s outage.
	{"TestOutageWindowSpent/middleware", "first success", whyProbeGap},
	{"TestOutageWindowSpent/roundtripper", "first success", whyProbeGap},
}

// missKey names one measure of one row.
type missKey struct{ row, measure string }

// misses records what the run checked and the misses it saw.
var misses struct {
	sync.Mutex
	checked map[missKey]bool
	seen    []missSeen
}

// missSeen is a known miss as a run saw it.
type missSeen struct {
	missKey
	got, target string
}

// listed returns the known miss of row's measure, if table holds it.
func listed(table []knownMiss, row, measure string) (knownMiss, bool) {
	for _, k := range table {
		if k.row == row && k.measure == measure {
			return k, true
		}
	}
	return knownMiss{}, false
}

// AtMost holds what a row measured to a target it must not exceed:
// measure names it ("429s", "makespan"), and format prints got and target
// (for example "%.2f%%", given shares times 100). It and AtLeast are
// exported to the package's external tests (steady_test), in test builds
// only.
func AtMost(t testing.TB, measure, format string, got, target float64) {
	t.Helper()
	hold(t, measure, got <= target, fmt.Sprintf(format, got), "<= "+fmt.Sprintf(format, target))
}

// AtLeast holds what a row measured to a target it must reach.
func AtLeast(t testing.TB, measure, format string, got, target float64) {
	t.Helper()
	hold(t, measure, got >= target, fmt.Sprintf(format, got), ">= "+fmt.Sprintf(format, target))
}

// hold judges one measure of the running row against its target and the
// known-miss table, and records it for TestMain.
func hold(t testing.TB, measure string, met bool, got, target string) {
	t.Helper()
	key := missKey{t.Name(), measure}
	k, isListed := listed(knownMisses, key.row, key.measure)
	misses.Lock()
	if misses.checked == nil {
		misses.checked = map[missKey]bool{}
	}
	misses.checked[key] = true
	if !met && isListed {
		misses.seen = append(misses.seen, missSeen{key, got, target})
	}
	misses.Unlock()
	judge(t, k, isListed, measure, met, got, target)
}

// judge passes or fails a measure: k is its known miss, if isListed.
func judge(t testing.TB, k knownMiss, isListed bool, measure string, met bool, got, target string) {
	t.Helper()
	switch {
	case met && isListed:
		t.Errorf("%s %s meets its target %s: remove it from the known misses (misses_test.go, README.md)", measure, got, target)
	case met:
	case isListed:
		t.Logf("KNOWN MISS %s %s, target %s: %s", measure, got, target, k.why)
	default:
		t.Errorf("%s %s, want %s", measure, got, target)
	}
}

// TestKnownMissRules: a miss that is listed passes and says so; one that
// is not fails; a listed row that meets its target fails; a row that
// meets and is not listed passes silently.
func TestKnownMissRules(t *testing.T) {
	k := knownMiss{row: "r", measure: "429s", why: "because"}
	for _, tc := range []struct {
		name             string
		k                knownMiss
		listed, met      bool
		wantErr, wantLog string
	}{
		{"listed miss", k, true, false, "", "KNOWN MISS 429s 5%, target <= 3%: because"},
		{"unlisted miss", k, false, false, "429s 5%, want <= 3%", ""},
		{"listed and met", k, true, true, "remove it from the known misses", ""},
		{"unlisted and met", k, false, true, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &tbRecorder{TB: t}
			judge(rec, tc.k, tc.listed, "429s", tc.met, "5%", "<= 3%")
			if got := strings.Join(rec.errs, "\n"); (tc.wantErr == "") != (got == "") || !strings.Contains(got, tc.wantErr) {
				t.Errorf("errors %q, want %q", got, tc.wantErr)
			}
			if got := strings.Join(rec.logs, "\n"); (tc.wantLog == "") != (got == "") || !strings.Contains(got, tc.wantLog) {
				t.Errorf("logs %q, want %q", got, tc.wantLog)
			}
		})
	}
}

// tbRecorder records what a test reports instead of reporting it.
type tbRecorder struct {
	testing.TB
	errs, logs []string
}

func (r *tbRecorder) Helper() {}
func (r *tbRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *tbRecorder) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

// TestMain seeds the shared random source (SeedRandom), runs the tests,
// then prints the table of the known misses the run saw (go test shows
// it under -v, or when a test fails). A run of every test (no -run,
// -skip or -short) also fails when a listed row was never measured: it
// was renamed or removed, and the table must follow.
func TestMain(m *testing.M) {
	SeedRandom(1) // no test draws from an unseeded source
	code := m.Run()
	misses.Lock()
	defer misses.Unlock()
	if len(misses.seen) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "\nknown misses seen in this run (misses_test.go):\n")
		seen := map[missKey]bool{}
		for _, s := range misses.seen {
			if seen[s.missKey] {
				continue
			}
			seen[s.missKey] = true
			fmt.Fprintf(&b, "  %-90s %-9s %12s, target %s\n", s.row, s.measure, s.got, s.target)
		}
		fmt.Print(b.String())
	}
	if code == 0 && fullRun() {
		var stale []string
		for _, k := range knownMisses {
			if !misses.checked[missKey{k.row, k.measure}] {
				stale = append(stale, k.row+" ("+k.measure+")")
			}
		}
		if len(stale) > 0 {
			slices.Sort(stale)
			fmt.Printf("FAIL: the known-miss table lists rows no test measured (renamed or removed?):\n  %s\n", strings.Join(stale, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

// fullRun reports whether every test of the package ran: no -run, -skip
// or -short.
func fullRun() bool {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return !testing.Short()
}
