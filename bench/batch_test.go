package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// runMatrix runs every limit with every pattern in fake time.
func runMatrix(t *testing.T, peers []peerSpec, limits []batchLimit, patterns []pattern) ([]batchRow, time.Duration) {
	start := time.Now()
	var batches []batch
	for _, bl := range limits {
		for _, p := range patterns {
			batches = append(batches, batch{Limit: bl.Limit, Calls: bl.Calls, Pattern: p})
		}
	}
	return runBatches(t, peers, batches), time.Since(start)
}

// runBatches runs each batch in fake time.
func runBatches(t *testing.T, peers []peerSpec, batches []batch) []batchRow {
	var rows []batchRow
	for _, b := range batches {
		synctest.Test(t, func(t *testing.T) {
			res, err := runBatch(t.Context(), b, peers, batchRun{})
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, batchRow{Batch: b, Results: res})
		})
	}
	return rows
}

// runLoopback runs the real-time batches on loopback.
func runLoopback(t *testing.T, peers []peerSpec, cases []loopbackCase, sequential bool) ([]loopbackRow, time.Duration) {
	start := time.Now()
	var rows []loopbackRow
	for _, c := range cases {
		res, err := runBatch(t.Context(), c.Batch, peers, batchRun{Loopback: true, Sequential: sequential})
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, loopbackRow{Case: c, Results: res})
		t.Logf("%s, %s: done after %s", c.Name, c.Batch.Pattern.Name, time.Since(start).Round(time.Second))
	}
	return rows, time.Since(start)
}

// TestLoopback runs the real-time batches on loopback and logs their
// table. It runs only with -loopback (the report runs them too).
func TestLoopback(t *testing.T) {
	if !*loopback {
		t.Skip("run with -loopback to run the real-time batches")
	}
	r := benchReport{LoopbackPeers: batchPeers(), LoopbackSequential: *sequential}
	r.Loopback, r.LoopbackWall = runLoopback(t, r.LoopbackPeers, loopbackCases(), *sequential)
	var b bytes.Buffer
	r.writeLoopback(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) })
	t.Logf("\n%s", b.String())
}

func TestMinimum(t *testing.T) {
	epoch := time.Unix(1_000_000_000, 0) // on a boundary of 1 s, 10 s and 1 min windows
	for _, c := range []struct {
		b     batch
		start time.Time
		want  time.Duration
	}{
		// Sliding: a window's quota per window, the last batch one
		// window after the previous.
		{batch{Limit: limitSpec{Kind: kindSliding, Requests: 60, Window: time.Minute, Latency: time.Second}, Calls: 200}, epoch, 3*time.Minute + time.Second},
		{batch{Limit: limitSpec{Kind: kindSliding, Requests: 60, Window: time.Minute}, Calls: 60}, epoch, 0},
		// Fixed windows: the next boundary, wherever the batch starts.
		{batch{Limit: limitSpec{Kind: kindFixed, Requests: 20, Window: time.Second}, Calls: 120}, epoch, 5 * time.Second},
		{batch{Limit: limitSpec{Kind: kindFixed, Requests: 20, Window: time.Second}, Calls: 120}, epoch.Add(300 * time.Millisecond), 4700 * time.Millisecond},
		// Token bucket: the full bucket, then one per refill.
		{batch{Limit: limitSpec{Kind: kindBucket, Requests: 60, Window: time.Minute}, Calls: 200}, epoch, 140 * time.Second},
		// Leaky bucket 20/s burst 10: 11 at once, then one per 50 ms.
		{batch{Limit: limitSpec{Kind: kindLeaky, Requests: 20, Window: time.Second, Burst: 10, Latency: 50 * time.Millisecond}, Calls: 300}, epoch, 14500 * time.Millisecond},
		// Workers bound it too: 16 workers, 100 ms each, no limit to speak of.
		{batch{Limit: limitSpec{Kind: kindSliding, Requests: 1000, Window: time.Second, Latency: 100 * time.Millisecond}, Calls: 160, Pattern: pattern{Workers: 16}}, epoch, time.Second},
	} {
		if got := c.b.Minimum(c.start); got != c.want {
			t.Errorf("%s, %d calls: minimum %s, want %s", c.b.Limit, c.b.Calls, got, c.want)
		}
	}
	b := batch{Limit: limitSpec{Kind: kindSliding, Requests: 60, Window: time.Minute}, Calls: 200, Pattern: pattern{Relative: 0.5}}
	if got := b.Servable(epoch); got != 120 {
		t.Errorf("servable in half of 3 minutes at 60/min: %d, want 120", got)
	}
}

// TestGate checks the gate's fixed windows and leaky bucket against their
// definitions, through its in-memory transport.
func TestGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGate(limitSpec{Kind: kindFixed, Requests: 3, Window: time.Second, Dialect: steadytest.DialectHerokuSeed})
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 400*time.Millisecond)))
		var statuses []int
		var last http.Header
		for range 4 {
			resp := post(t, g)
			statuses = append(statuses, resp.StatusCode)
			last = resp.Header
		}
		if want := []int{200, 200, 200, 429}; !slices.Equal(statuses, want) {
			t.Fatalf("fixed window of 3: statuses %v, want %v", statuses, want)
		}
		reset := time.Now().Truncate(time.Second).Add(time.Second).Unix()
		if got := last.Get("X-Ratelimit-Reset-Requests"); got != strconv.FormatInt(reset, 10) {
			t.Errorf("reset %q, want the window's end %d", got, reset)
		}
		if got := last.Get("Retry-After"); got != "1" {
			t.Errorf("Retry-After %q, want 1", got)
		}
		time.Sleep(600 * time.Millisecond) // the next window
		if resp := post(t, g); resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining-Requests") != "2" {
			t.Errorf("next window: status %d, remaining %q", resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining-Requests"))
		}

		l := newGate(limitSpec{Kind: kindLeaky, Requests: 20, Window: time.Second, Burst: 2})
		statuses = statuses[:0]
		for range 4 {
			resp := post(t, l)
			statuses = append(statuses, resp.StatusCode)
			for k := range resp.Header {
				if strings.Contains(strings.ToLower(k), "ratelimit") || k == "Retry-After" {
					t.Errorf("leaky bucket sent %s", k)
				}
			}
		}
		if want := []int{200, 200, 200, 429}; !slices.Equal(statuses, want) {
			t.Fatalf("leaky bucket burst 2: statuses %v, want %v", statuses, want)
		}
		time.Sleep(50 * time.Millisecond) // one interval
		if resp := post(t, l); resp.StatusCode != 200 {
			t.Errorf("after one interval: status %d", resp.StatusCode)
		}
		if resp := post(t, l); resp.StatusCode != 429 {
			t.Errorf("twice in one interval: status %d", resp.StatusCode)
		}
	})
}

// TestBatch runs two small batches through every peer in fake time and
// checks what runBatch counts.
func TestBatch(t *testing.T) {
	for _, b := range []batch{
		{Limit: limitSpec{Kind: kindFixed, Requests: 10, Window: time.Second, Dialect: steadytest.DialectHerokuSeed, Latency: 50 * time.Millisecond}, Calls: 30, Pattern: pattern{Workers: 4}},
		{Limit: limitSpec{Kind: kindLeaky, Requests: 10, Window: time.Second, Burst: 2, Latency: 50 * time.Millisecond}, Calls: 20, Pattern: pattern{CancelOnError: true}},
		{Limit: limitSpec{Kind: kindSliding, Requests: 10, Window: 10 * time.Second, Latency: 50 * time.Millisecond}, Calls: 30, Pattern: pattern{Relative: 0.5}},
		{Limit: limitSpec{Kind: kindBucket, Requests: 10, Window: time.Second, Latency: 50 * time.Millisecond}, Calls: 30, Pattern: pattern{Workers: 8}, Processes: 3},
	} {
		synctest.Test(t, func(t *testing.T) {
			res, err := runBatch(t.Context(), b, batchPeers(), batchRun{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				t.Logf("%s: %s", r.Peer, batchCell(r))
				if r.OK+r.Failed+r.Unfinished != b.Calls {
					t.Errorf("%s: %d ok, %d failed, %d unfinished of %d calls", r.Peer, r.OK, r.Failed, r.Unfinished, b.Calls)
				}
				if r.Attempts < r.OK || r.Limited > r.Attempts {
					t.Errorf("%s: %d ok from %d attempts, %d of them 429", r.Peer, r.OK, r.Attempts, r.Limited)
				}
				if r.OK > r.Servable {
					t.Errorf("%s: %d ok, more than the %d the quota can serve", r.Peer, r.OK, r.Servable)
				}
				if r.OK == b.Calls && r.Makespan < r.Minimum {
					t.Errorf("%s: every call served in %s, under the quota minimum %s", r.Peer, r.Makespan, r.Minimum)
				}
			}
		})
	}
}

func TestWorseThanBare(t *testing.T) {
	bare := batchResult{Peer: "bare SDK", Calls: 200, Servable: 200, OK: 180, Failed: 20, Minimum: time.Minute, Makespan: 2 * time.Minute, Attempts: 400, Limited: 200}
	slow := batchResult{Peer: "steady", Calls: 200, Servable: 200, OK: 118, Failed: 82, Minimum: time.Minute, Makespan: time.Minute, Attempts: 118,
		Why: map[string]int{"steady: pacing wait exceeds the maximum": 82}}
	got := worseThanBare(slow, bare)
	for _, want := range []string{"failed 82 calls the quota could serve in time (bare SDK: 20)", `82 of its failures: "steady: pacing wait exceeds the maximum"`} {
		if !strings.Contains(got, want) {
			t.Errorf("worseThanBare = %q, lacks %q", got, want)
		}
	}
	if strings.Contains(got, "429") || strings.Contains(got, "took") {
		t.Errorf("worseThanBare = %q: names a figure where steady is not worse", got)
	}
	bare.OK, bare.Failed, bare.Makespan, bare.Limited = 200, 0, 61*time.Second, 10
	fine := batchResult{Peer: "steady", Calls: 200, Servable: 200, OK: 200, Minimum: time.Minute, Makespan: 62 * time.Second, Attempts: 200}
	if got := worseThanBare(fine, bare); got != "" {
		t.Errorf("worseThanBare = %q for a result no worse", got)
	}
	fine.Makespan, fine.Limited = 90*time.Second, 20
	got = worseThanBare(fine, bare)
	for _, want := range []string{"took 1m30s (1.5× the minimum) where the bare SDK took 1m1s", "429s were 10.0% of its attempts"} {
		if !strings.Contains(got, want) {
			t.Errorf("worseThanBare = %q, lacks %q", got, want)
		}
	}
}

func TestFailureKind(t *testing.T) {
	for err, want := range map[error]string{
		context.DeadlineExceeded: "the call's deadline",
		steady.ErrCircuitOpen:    "circuit open",
		errors.New(`POST "http://127.0.0.1:4711/v1/chat/completions": read: connection reset after 12ms`): "read: connection reset after N",
	} {
		if got := failureKind(err); got != want {
			t.Errorf("failureKind(%v) = %q, want %q", err, got, want)
		}
	}
}

func post(t *testing.T, rt http.RoundTripper) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://provider.invalid/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestMainWorse(t *testing.T) {
	bare := result{Peer: "bare SDK", Goodput: 1, FailedOutage: 100, FailFast: 2 * time.Second, OutageAttempts: 5000, Reopened: 20 * time.Millisecond, Recovery: 1, P50: 200 * time.Millisecond, P99: 40 * time.Second}
	s := result{Peer: "steady", Goodput: 0.983, FailedOutage: 3000, OutageAttempts: 40, Reopened: 5 * time.Second, Recovery: 0.9,
		FailedRecovery: 50, LastFailure: 30 * time.Second, WhyOutage: map[string]int{"circuit open": 3000}, WhyRecovery: map[string]int{"circuit open": 49, "HTTP 503": 1},
		P50: 3 * time.Second, P99: 3 * time.Second}
	got := strings.Join(benchReport{}.mainWorse(s, bare), "\n")
	for _, want := range []string{
		"goodput during the overload: 0.983 against 1.000, within the 2% of every limit steady keeps unused",
		"failed calls during the outage: 3000 against 100; 3000 of them: \"circuit open\"",
		"That is fail-fast",
		"first success after the recovery: 5s after it against 20ms",
		"failed calls after the outage: 50 against 0, the last 30s after the recovery; 49 of them: \"circuit open\"",
		"goodput after the outage: 0.900 against 1.000, 10.0% below",
		"Calls wait their turn in steady's queue",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("mainWorse lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "\n429s:") || strings.Contains(got, "upstream attempts during the outage:") {
		t.Errorf("mainWorse names a figure where steady is not worse:\n%s", got)
	}
}

func TestBatchTable(t *testing.T) {
	lim := limitSpec{Kind: kindSliding, Requests: 60, Window: time.Minute}
	row := batchRow{Batch: batch{Limit: lim, Calls: 200, Pattern: pattern{Name: "all at once, no deadline"}}, Results: []batchResult{
		{Peer: "bare SDK", Calls: 200, Servable: 200, OK: 180, Failed: 20, Minimum: 3 * time.Minute, Makespan: 2 * time.Minute, Attempts: 400, Limited: 200},
		{Peer: "steady (middleware)", Calls: 200, Servable: 200, OK: 200, Minimum: 3 * time.Minute, Makespan: 189 * time.Second, Attempts: 200},
		{Peer: "steady (transport)", Calls: 200, Servable: 200, OK: 118, Failed: 82, Minimum: 3 * time.Minute, Makespan: 2 * time.Minute, Attempts: 118, Why: map[string]int{"steady: pacing wait exceeds the maximum": 82}},
	}}
	peers := []peerSpec{{Name: "bare SDK"}, {Name: "steady (middleware)"}, {Name: "steady (transport)"}}
	var b bytes.Buffer
	batchTable(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, peers, []batchRow{row})
	steadySummary(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, peers, []batchRow{row})
	out := b.String()
	for _, want := range []string{
		"| sliding window 60/1m0s, openai headers | all at once, no deadline | 200 | 3m0s | 0.667× (2m0s), 180 ok / 20 failed, 50.0% 429 | **1.05× (3m9s), 200 ok, 0% 429** |",
		"Where steady did worse than the bare SDK (1 of 1 rows)",
		"- sliding window 60/1m0s, openai headers, all at once, no deadline: steady (transport): failed 82 calls the quota could serve in time (bare SDK: 20)",
		"**steady (middleware)**: lost 0 calls",
		"served every call within 1.05× the minimum on 0 of the 1 rows",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "steady (middleware): failed") {
		t.Errorf("names steady (middleware) as worse:\n%s", out)
	}
}

// TestBatchLoopback runs a small batch with a limit it never reaches
// through every peer and a real loopback server: the harness's network
// path, not its timing.
func TestBatchLoopback(t *testing.T) {
	b := batch{Limit: limitSpec{Kind: kindLeaky, Requests: 100000, Window: time.Second, Burst: 1000}, Calls: 20, Pattern: pattern{Workers: 4}}
	res, err := runBatch(t.Context(), b, batchPeers(), batchRun{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		t.Logf("%s: %s %v", r.Peer, batchCell(r), r.Why)
		if r.OK != b.Calls || r.Attempts != b.Calls || r.Limited != 0 {
			t.Errorf("%s: %d ok from %d attempts (%d answered 429), want %d of each and no 429", r.Peer, r.OK, r.Attempts, r.Limited, b.Calls)
		}
	}
}

func TestTargets(t *testing.T) {
	lim := limitSpec{Kind: kindSliding, Requests: 60, Window: time.Minute}
	good := batchResult{Peer: "steady (middleware)", Calls: 100, Servable: 100, OK: 100, Minimum: time.Minute, Makespan: 62 * time.Second, Attempts: 100}
	r := benchReport{
		MatrixPeers: []peerSpec{{Name: "bare SDK"}, {Name: "steady (middleware)"}},
		Matrix: []batchRow{
			{Batch: batch{Limit: lim, Calls: 100}, Results: []batchResult{{Peer: "bare SDK"}, good}},
			{Batch: batch{Limit: lim, Calls: 100, Pattern: pattern{Relative: 0.5}}, Results: []batchResult{{Peer: "bare SDK"}, {Peer: "steady (middleware)", Calls: 100, Servable: 50, OK: 45, Failed: 55, Minimum: time.Minute, Makespan: 30 * time.Second, Attempts: 45}}},
		},
		Results: []result{{Peer: "steady", OutageAttempts: 12, Reopened: 11 * time.Second}},
	}
	var b bytes.Buffer
	r.writeTargets(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) })
	out := b.String()
	for _, want := range []string{
		"3 of 6 met",
		"| 8 | steady (middleware): no call fails that the quota could serve before its deadline (batch matrix) | 5 calls lost on 1 of 2 rows | **no** |",
		"| 8 | steady (middleware): makespan at most 1.05× the quota minimum (batch matrix) | 1 of the 1 rows whose every call the quota can serve in time | yes |",
		"| 9 | steady: upstream attempts during the 2-minute outage at most 15 | 12 | yes |",
		"| 9 | steady: circuit closed within 10 s of the upstream's recovery (first success) | 11s | **no** |",
		"| 20 | steady: first success at most 5 s after the upstream heals | 11s | **no** |",
		"Not measured: hold mode",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("targets lack %q:\n%s", want, out)
		}
	}
}

// TestRouting runs the routing batch (real time, loopback) and logs its
// table, whose last column says whether steady with two keys met its
// target (within 1.05 times the two keys' minimum, none failed). It runs
// only with -loopback (the report runs it too).
func TestRouting(t *testing.T) {
	if !*loopback {
		t.Skip("run with -loopback to run the real-time batches")
	}
	r := benchReport{Routing: runRouting(t.Context())}
	var b bytes.Buffer
	r.writeRouting(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) })
	t.Logf("\n%s", b.String())
}
