package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/steady-go/steady/steadytest"
)

var (
	report     = flag.Bool("report", false, "run the full workload, the batch matrix, the loopback batches and the overhead benchmarks, and write ../BENCHMARKS.md")
	loopback   = flag.Bool("loopback", false, "run the real-time batches on loopback and log their table (TestLoopback)")
	sequential = flag.Bool("sequential", false, "run the peers of each loopback batch one after another instead of at the same time")
)

// reportCommand reproduces BENCHMARKS.md, from inside bench/.
const reportCommand = "go test -count=1 -run 'TestReport$' -report ."

// fullScenario is the workload of BENCHMARKS.md: ten minutes of simulated
// traffic with a 600-requests-per-minute limit.
var fullScenario = scenario{
	Requests: 600, Window: time.Minute, Latency: 200 * time.Millisecond,
	Concurrency: 32, Offered: 3,
	Overload: 5 * time.Minute, Outage: 2 * time.Minute, Recovery: 3 * time.Minute,
	CallTimeout: 2 * time.Minute, MaxTokens: 64,
}

// shortScenario is the same shape, small enough for every CI run.
var shortScenario = scenario{
	Requests: 20, Window: 10 * time.Second, Latency: 100 * time.Millisecond,
	Concurrency: 8, Offered: 3,
	Overload: 30 * time.Second, Outage: 20 * time.Second, Recovery: 20 * time.Second,
	CallTimeout: 30 * time.Second, MaxTokens: 64,
}

func TestWorkload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := shortScenario
		results, err := runScenario(t.Context(), sc, allPeers())
		if err != nil {
			t.Fatal(err)
		}
		if len(results) != len(allPeers()) {
			t.Fatalf("%d results for %d peers", len(results), len(allPeers()))
		}
		for _, r := range results {
			t.Logf("%+v", r)
			if r.OK+r.Failed != r.Calls {
				t.Errorf("%s: ok %d + failed %d != calls %d", r.Peer, r.OK, r.Failed, r.Calls)
			}
			if r.FailedOverload+r.FailedOutage+r.FailedRecovery != r.Failed {
				t.Errorf("%s: failed %d, %d and %d by phase, %d in all", r.Peer, r.FailedOverload, r.FailedOutage, r.FailedRecovery, r.Failed)
			}
			if r.OK == 0 || r.Attempts < r.OK {
				t.Errorf("%s: %d calls ok from %d upstream attempts", r.Peer, r.OK, r.Attempts)
			}
			if r.MaxInWindow > int64(sc.Requests) {
				t.Errorf("%s: provider admitted %d in a window, limit %d", r.Peer, r.MaxInWindow, sc.Requests)
			}
			if r.Goodput <= 0 || r.Goodput > 2 {
				t.Errorf("%s: goodput %.2f of the limit is not plausible", r.Peer, r.Goodput)
			}
			if r.P50 > r.P99 || r.P99 > sc.CallTimeout {
				t.Errorf("%s: p50 %s, p99 %s, deadline %s", r.Peer, r.P50, r.P99, sc.CallTimeout)
			}
		}
		// The bare SDK has no breaker: it keeps calling through the outage.
		if results[0].OutageAttempts == 0 {
			t.Errorf("bare SDK made no attempt during the outage")
		}
	})
}

func TestRunRejectsBadScenario(t *testing.T) {
	for _, sc := range []scenario{
		{Requests: 10, Window: time.Second, CallTimeout: time.Second},               // no offered load
		{Requests: 0, Window: time.Second, Offered: 1, CallTimeout: time.Second},    // no limit
		{Requests: 10, Window: time.Second, Offered: 1},                             // no call timeout
		{Requests: 10, Window: time.Second, Offered: 1, CallTimeout: 1, Outage: -1}, // negative phase
	} {
		if _, err := runScenario(context.Background(), sc, allPeers()); err == nil {
			t.Errorf("Run(%+v) accepted", sc)
		}
	}
}

func TestReportWrite(t *testing.T) {
	r := benchReport{
		Scenario: shortScenario,
		Peers:    allPeers(),
		Results: []result{
			{Peer: "bare SDK", Calls: 100, OK: 90, Failed: 10, FailedOverload: 10, FailedOutage: 30, FailFast: 8 * time.Second, Recovery: 0.5, Goodput: 0.9, Attempts: 200, RateLimited: 100, OutageAttempts: 60, P99: 9 * time.Second},
			{Peer: "go-retryablehttp", Calls: 100, OK: 100, Goodput: 0.95, Attempts: 150, RateLimited: 50, OutageAttempts: 80, P99: 20 * time.Second},
			{Peer: "failsafe-go", Calls: 100, OK: 100, FailedOutage: 50, Goodput: 0.95, Attempts: 150, RateLimited: 50, OutageAttempts: 10, P99: 20 * time.Second},
			{Peer: "steady", Calls: 100, OK: 100, FailedOutage: 40, FailFast: time.Millisecond, Recovery: 0.95, Goodput: 0.99, Attempts: 101, RateLimited: 1, OutageAttempts: 3, P99: 2 * time.Second},
		},
		Overhead: []overheadRow{
			{Peer: "bare SDK", NsPerOp: 1000, AllocsOp: 10, SDKNsPerOp: 50000, SDKAllocsOp: 170},
			{Peer: "go-retryablehttp", NsPerOp: 3000, AllocsOp: 30},
			{Peer: "failsafe-go", NsPerOp: 5000, AllocsOp: 50},
			{Peer: "steady", NsPerOp: 2000, AllocsOp: 15, SDKNsPerOp: 51000, SDKAllocsOp: 175},
		},
		Sweep: shortScenario,
		Dialects: []dialectRun{{Dialect: steadytest.DialectHerokuSeed, Results: []result{
			{Goodput: 1, Attempts: 200, RateLimited: 100}, {Goodput: 0.9, Attempts: 100, RateLimited: 10},
			{Goodput: 0.8, Attempts: 100}, {Goodput: 0.99, Attempts: 300, RateLimited: 3},
		}}},
		Machine: machine{CPU: "Test CPU", Cores: 2, Go: "go1.26", OS: "linux/amd64"},
		Command: reportCommand,
	}
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| goodput during overload, fraction of the limit | 0.900 (0.909×) | 0.950 (0.96×) | 0.950 (0.96×) | **0.990** |",
		"| 429s, share of upstream attempts | 50.0% (100 of 200) (50.5×) |",
		"| failed calls during the overload | 10 (steady: 0) | 0 (same) |",
		"| failed calls during the outage, median time to fail | 30, 8s (8e+03×) | 0 (0×) | 50, at once (0×) | **40, 1ms** |",
		"| goodput after the outage, fraction of the limit | 0.500 (0.526×) |",
		"| from the upstream's recovery to the first success | 0 (same) |",
		"Where steady looks worse than the bare SDK in this table",
		"| upstream attempts during the outage | 60 (20×) | 80 (26.7×) | 10 (3.33×) | **3** |",
		"| p99 latency, successful calls | 9s (4.5×) |",
		"| success-path time per request (ns/op) | 1000 (+0) (0×) | 3000 (+2000) (2×) | 5000 (+4000) (4×) | **2000 (+1000)** |",
		"| success-path allocations (allocs/op) | 10 (+0) (0×) | 30 (+20) (4×) | 50 (+40) (8×) | **15 (+5)** |",
		"Test CPU, 2 cores, go1.26",
		"| whole SDK call (ns/op, allocs/op) | 50000, 170 (0.98×) |",
		"| heroku-seed | 1.000, 50.0% | 0.900, 10.0% | 0.800, 0.0% | 0.990, 1.0% |",
		reportCommand,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// TestReport runs the full workload and the overhead benchmarks, and writes
// ../BENCHMARKS.md. It runs only with -report.
func TestReport(t *testing.T) {
	if !*report {
		t.Skip("run with -report to write ../BENCHMARKS.md")
	}
	r := benchReport{Scenario: fullScenario, Peers: allPeers(), Machine: thisMachine(), Date: time.Now(), Command: reportCommand}
	wallStart := time.Now()
	synctest.Test(t, func(t *testing.T) {
		var err error
		r.Results, err = runScenario(t.Context(), fullScenario, r.Peers)
		if err != nil {
			t.Fatal(err)
		}
	})
	r.Wall = time.Since(wallStart)
	r.Sweep = fullScenario
	r.Sweep.Outage, r.Sweep.Recovery = 0, 0
	for _, d := range steadytest.Dialects() {
		sc := r.Sweep
		sc.Dialect = d
		synctest.Test(t, func(t *testing.T) {
			res, err := runScenario(t.Context(), sc, r.Peers)
			if err != nil {
				t.Fatal(err)
			}
			r.Dialects = append(r.Dialects, dialectRun{Dialect: d, Results: res})
		})
	}
	{
		hold := holdPeer()
		r.HoldScenario = fullScenario
		r.HoldScenario.CallTimeout = fullScenario.Outage + time.Minute
		steadyPeer := allPeers()[len(allPeers())-1]
		synctest.Test(t, func(t *testing.T) {
			var err error
			r.Hold, err = runScenario(t.Context(), r.HoldScenario, []peerSpec{steadyPeer, hold})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	r.MatrixPeers = batchPeers()
	r.Matrix, r.MatrixWall = runMatrix(t, r.MatrixPeers, matrixLimits(), matrixPatterns())
	r.Fleet = runBatches(t, r.MatrixPeers, fleetBatches())
	r.LoopbackPeers, r.LoopbackSequential = batchPeers(), *sequential
	r.Loopback, r.LoopbackWall = runLoopback(t, r.LoopbackPeers, loopbackCases(), *sequential)
	r.Routing = runRouting(t.Context())
	r.Priority = runPriorityRows(t)
	if *fleets {
		procStart := time.Now()
		r.Procs = runFleetCases(t, fleetMatrix())
		r.ProcsWall = time.Since(procStart)
		if *fleetRows != "" || *fleetDur > 0 {
			r.ProcsCommand = reportCommand + " -fleets"
			if *fleetRows != "" {
				r.ProcsCommand += fmt.Sprintf(" -fleet-rows '%s'", *fleetRows)
			}
			if *fleetDur > 0 {
				r.ProcsCommand += " -fleet-duration " + fleetDur.String()
			}
		}
	}
	r.Overhead = measureOverhead(t, r.Peers, 3)
	r.Took = time.Since(wallStart)
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("../BENCHMARKS.md", b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote ../BENCHMARKS.md:\n%s", b.String())
}

// measureOverhead runs the overhead benchmark of every peer rounds times,
// interleaved so that a slow stretch of a shared machine hits every peer,
// and keeps each peer's fastest round.
func measureOverhead(t *testing.T, peers []peerSpec, rounds int) []overheadRow {
	out := make([]overheadRow, len(peers))
	for round := range rounds {
		for i, p := range peers {
			res := testing.Benchmark(func(b *testing.B) { benchmarkOverhead(b, p) })
			sdk := testing.Benchmark(func(b *testing.B) { benchmarkSDKCall(b, p) })
			t.Logf("round %d %s: %s %s; SDK call %s %s", round+1, p.Name, res, res.MemString(), sdk, sdk.MemString())
			o := overheadRow{Peer: p.Name, NsPerOp: nsPerOp(res), AllocsOp: res.AllocsPerOp(), BytesOp: res.AllocedBytesPerOp(),
				SDKNsPerOp: nsPerOp(sdk), SDKAllocsOp: sdk.AllocsPerOp()}
			if round == 0 {
				out[i] = o
				continue
			}
			if o.NsPerOp < out[i].NsPerOp {
				out[i].NsPerOp, out[i].AllocsOp, out[i].BytesOp = o.NsPerOp, o.AllocsOp, o.BytesOp
			}
			if o.SDKNsPerOp < out[i].SDKNsPerOp {
				out[i].SDKNsPerOp, out[i].SDKAllocsOp = o.SDKNsPerOp, o.SDKAllocsOp
			}
		}
	}
	return out
}

func nsPerOp(r testing.BenchmarkResult) float64 {
	if r.N == 0 {
		return 0
	}
	return float64(r.T.Nanoseconds()) / float64(r.N)
}

// BenchmarkOverhead measures one successful request with a 2 KB chat body
// through each peer's RoundTripper to an in-memory base.
func BenchmarkOverhead(b *testing.B) {
	for _, p := range allPeers() {
		b.Run(strings.ReplaceAll(p.Name, " ", "-"), func(b *testing.B) { benchmarkOverhead(b, p) })
	}
}

func benchmarkOverhead(b *testing.B, p peerSpec) {
	rt := p.Transport(okBase{})
	body := chatBody(2048)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://provider.invalid/v1/chat/completions", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer sk-bench")
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkSDKCall measures one successful chat completion through the
// SDK and each peer to an in-memory base, a prompt of about 2 KB: what a
// peer adds, next to the cost of the SDK call itself.
func BenchmarkSDKCall(b *testing.B) {
	for _, p := range allPeers() {
		b.Run(strings.ReplaceAll(p.Name, " ", "-"), func(b *testing.B) { benchmarkSDKCall(b, p) })
	}
}

func benchmarkSDKCall(b *testing.B, p peerSpec) {
	client := newClient(p, "http://provider.invalid/v1/", okBase{})
	params := openai.ChatCompletionNewParams{
		Model:               "gpt-4o-mini",
		MaxCompletionTokens: openai.Int(64),
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage(strings.Repeat("lorem ipsum ", 170))},
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Chat.Completions.New(ctx, params); err != nil {
			b.Fatal(err)
		}
	}
}

// chatBody returns a chat completion request body of about n bytes.
func chatBody(n int) []byte {
	const head = `{"model":"gpt-4o-mini","max_completion_tokens":64,"messages":[{"role":"user","content":"`
	const tail = `"}]}`
	filler := strings.Repeat("lorem ipsum ", n/12+1)[:max(n-len(head)-len(tail), 0)]
	return []byte(head + filler + tail)
}

// okBase answers every request 200 with a small chat completion, in
// memory and at once, announcing limits far above anything a benchmark
// sends: the success path when far from the limit.
type okBase struct{}

const okBody = `{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"gpt-4o-mini","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":500,"completion_tokens":1,"total_tokens":501}}`

func (okBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Ratelimit-Limit-Requests", "1000000000")
	h.Set("X-Ratelimit-Remaining-Requests", "999999999")
	h.Set("X-Ratelimit-Reset-Requests", "1ms")
	h.Set("X-Ratelimit-Limit-Tokens", "100000000000")
	h.Set("X-Ratelimit-Remaining-Tokens", "99999999000")
	h.Set("X-Ratelimit-Reset-Tokens", "1ms")
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(strings.NewReader(okBody)), ContentLength: int64(len(okBody)), Request: req,
	}, nil
}

func TestChatBodySize(t *testing.T) {
	if n := len(chatBody(2048)); n != 2048 {
		t.Errorf("chatBody(2048) is %d bytes", n)
	}
}
