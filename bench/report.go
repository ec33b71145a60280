package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/steady-go/steady/steadytest"
)

// overheadRow is one peer's success-path cost: its layer alone
// (BenchmarkOverhead) and a whole SDK call through it (BenchmarkSDKCall).
type overheadRow struct {
	Peer        string
	NsPerOp     float64
	AllocsOp    int64
	BytesOp     int64
	SDKNsPerOp  float64
	SDKAllocsOp int64
}

// machine describes where a report was measured.
type machine struct {
	CPU   string
	Cores int
	Go    string
	OS    string
}

// thisMachine returns the CPU model, core count and Go version here.
func thisMachine() machine {
	m := machine{CPU: "unknown", Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// dialectRun is the results of one dialect in the sweep.
type dialectRun struct {
	Dialect steadytest.Dialect
	Results []result // in the order of Report.Peers
}

// benchReport is everything BENCHMARKS.md shows.
type benchReport struct {
	Scenario scenario
	Peers    []peerSpec
	Results  []result      // in the order of Peers
	Overhead []overheadRow // in the order of Peers; Peers[0] is the baseline
	Sweep    scenario      // the workload of the dialect sweep
	Dialects []dialectRun  // the sweep, one run per dialect
	// The fake-time batch matrix.
	Matrix      []batchRow
	MatrixPeers []peerSpec
	MatrixWall  time.Duration // real time the matrix took
	Fleet       []batchRow    // fleetBatches, with MatrixPeers
	// The real-time batches on loopback.
	Loopback           []loopbackRow
	LoopbackPeers      []peerSpec
	LoopbackWall       time.Duration
	LoopbackSequential bool
	// The routing batch: several keys behind one client (runRouting).
	Routing []routingRow
	// The real-time priority rows on loopback.
	Priority []priorityRow
	// The fleets of real processes on loopback (-fleets).
	Procs        []fleetOutcome
	ProcsWall    time.Duration
	ProcsCommand string // the flags that chose the rows, when not the whole matrix
	// The outage with deadlines that outlast it: fail-fast steady and
	// steady holding calls; empty when steady has no hold option.
	Hold         []result
	HoldScenario scenario

	Machine machine
	Date    time.Time
	Command string
	Wall    time.Duration // real time the workload took
	Took    time.Duration // real time the whole report took
}

// Write writes r as Markdown.
func (r benchReport) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	sc := r.Scenario
	ref := len(r.Results) - 1 // steady is the last column
	for i, res := range r.Results {
		if res.Peer == "steady" {
			ref = i
		}
	}

	p("# Benchmarks: steady and the libraries users pick instead\n\n")
	p("Reproduce, inside `bench/` (it took %s here, benchmarks included):\n\n", r.Took.Round(time.Second))
	p("```\n%s\n```\n\n", r.Command)
	p("The real-time batches on loopback alone, with their table in the test log (add `-sequential` to run the peers of each batch one after another): ")
	p("`go test -count=1 -run 'TestLoopback$' -loopback -v .`\n\n")
	p("Measured %s on %s, %d cores, %s, %s.\n\n", r.Date.UTC().Format("2006-01-02"), r.Machine.CPU, r.Machine.Cores, r.Machine.Go, r.Machine.OS)

	r.writeTargets(p)

	p("## The workload\n\n")
	p("Every peer runs the same workload at the same time, each against its own simulated OpenAI-compatible provider ")
	p("(`steadytest`, in memory) with the same limit: %d requests per %s (%s/s, %s, %s dialect), answering in %s. ", sc.Requests, fmtDur(sc.Window), trim(sc.Limit()), sc.Algorithm, sc.Dialect, fmtDur(sc.Latency))
	p("%d callers per peer offer %s times the limit for %s, then the provider answers 503 to everything for %s, then recovers for %s. ",
		sc.Concurrency, trim(sc.Offered), fmtDur(sc.Overload), fmtDur(sc.Outage), fmtDur(sc.Recovery))
	p("Each call is a chat completion with a %s deadline. ", fmtDur(sc.CallTimeout))
	p("The run is in fake time (`testing/synctest`): %s of simulated traffic took %s of real time.\n\n",
		fmtDur(sc.Overload+sc.Outage+sc.Recovery), r.Wall.Round(100*time.Millisecond))

	p("## Results\n\n")
	p("In brackets: the peer's figure divided by steady's, from the same run.\n\n")
	p("|")
	for _, res := range r.Results {
		p(" | %s", res.Peer)
	}
	p(" |\n|---|")
	for range r.Results {
		p("---:|")
	}
	p("\n")
	row := func(label string, cell func(result) (float64, string)) {
		p("| %s", label)
		refV, _ := cell(r.Results[ref])
		for i, res := range r.Results {
			v, s := cell(res)
			if i == ref {
				p(" | **%s**", s)
			} else {
				p(" | %s (%s)", s, ratio(v, refV))
			}
		}
		p(" |\n")
	}
	row("goodput during overload, fraction of the limit", func(x result) (float64, string) {
		return x.Goodput, fmt.Sprintf("%.3f", x.Goodput)
	})
	row("429s, share of upstream attempts", func(x result) (float64, string) {
		return x.RateLimitedShare(), fmt.Sprintf("%.1f%% (%d of %d)", 100*x.RateLimitedShare(), x.RateLimited, x.Attempts)
	})
	row("failed calls during the overload", func(x result) (float64, string) {
		return float64(x.FailedOverload), fmt.Sprint(x.FailedOverload)
	})
	row("upstream attempts during the outage", func(x result) (float64, string) {
		return float64(x.OutageAttempts), fmt.Sprint(x.OutageAttempts)
	})
	row("failed calls during the outage, median time to fail", func(x result) (float64, string) {
		if x.FailedOutage == 0 {
			return 0, "0"
		}
		d := fmtDur(x.FailFast)
		if x.FailFast == 0 {
			d = "at once"
		}
		return x.FailFast.Seconds(), fmt.Sprintf("%d, %s", x.FailedOutage, d)
	})
	row("from the upstream's recovery to the first success", func(x result) (float64, string) {
		return x.Reopened.Seconds(), reopened(x)
	})
	row("from the upstream's recovery to the last failed call", func(x result) (float64, string) {
		if x.LastFailure < 0 {
			return 0, "none failed"
		}
		return x.LastFailure.Seconds(), fmtDur(x.LastFailure)
	})
	row("failed calls after the outage", func(x result) (float64, string) {
		return float64(x.FailedRecovery), fmt.Sprint(x.FailedRecovery)
	})
	row("goodput after the outage, fraction of the limit", func(x result) (float64, string) {
		return x.Recovery, fmt.Sprintf("%.3f", x.Recovery)
	})
	row("p50 latency, successful calls", func(x result) (float64, string) { return x.P50.Seconds(), fmtDur(x.P50) })
	row("p99 latency, successful calls", func(x result) (float64, string) { return x.P99.Seconds(), fmtDur(x.P99) })
	row("most requests admitted in one window", func(x result) (float64, string) {
		return float64(x.MaxInWindow), fmt.Sprintf("%d / %d", x.MaxInWindow, sc.Requests)
	})
	if len(r.Overhead) > 0 {
		base := r.Overhead[0]
		row("success-path time per request (ns/op)", func(x result) (float64, string) {
			o := r.overhead(x.Peer)
			return o.NsPerOp - base.NsPerOp, fmt.Sprintf("%.0f (%+.0f)", o.NsPerOp, o.NsPerOp-base.NsPerOp)
		})
		row("success-path allocations (allocs/op)", func(x result) (float64, string) {
			o := r.overhead(x.Peer)
			return float64(o.AllocsOp - base.AllocsOp), fmt.Sprintf("%d (%+d)", o.AllocsOp, o.AllocsOp-base.AllocsOp)
		})
		row("success-path memory (B/op)", func(x result) (float64, string) {
			o := r.overhead(x.Peer)
			return float64(o.BytesOp - base.BytesOp), fmt.Sprintf("%d (%+d)", o.BytesOp, o.BytesOp-base.BytesOp)
		})
		if base.SDKNsPerOp > 0 {
			row("whole SDK call (ns/op, allocs/op)", func(x result) (float64, string) {
				o := r.overhead(x.Peer)
				return o.SDKNsPerOp, fmt.Sprintf("%.0f, %d", o.SDKNsPerOp, o.SDKAllocsOp)
			})
		}
	}
	if notes := r.mainWorse(r.Results[ref], r.Results[0]); len(notes) > 0 {
		p("\nWhere steady looks worse than the bare SDK in this table, from the figures above:\n\n")
		for _, n := range notes {
			p("- %s\n", n)
		}
	}
	p("\nFailed calls are counted in the phase in which they ended; the time to fail is that of the calls that began during the outage. ")
	p("Goodput counts successful calls; steady keeps %.0f%% of every limit unused by default (`PacingConfig.Headroom`). ", 100*defaultHeadroom)
	p("With callers offering more than the limit, calls through steady wait their turn in its pacer instead of in retry loops after 429s, which shows in the latency rows.\n")
	p("\nThe success-path rows come from `BenchmarkOverhead/<peer>`: one request with a 2 KB chat body through the peer's ")
	p("`http.RoundTripper` to an in-memory base that answers 200 at once; in brackets under the figure, what the peer adds to the bare base, and the ratio compares those additions. ")
	p("The last row, from `BenchmarkSDKCall/<peer>`, is a whole chat completion through the SDK and the peer to the same base, for scale.\n\n")

	r.writeHold(p)

	if len(r.Dialects) > 0 {
		w := r.Sweep
		p("## Every dialect\n\n")
		p("The overload alone (%s at %s times the limit of %d requests per %s, %s), once per rate-limit dialect the simulated provider speaks. ",
			fmtDur(w.Overload), trim(w.Offered), w.Requests, fmtDur(w.Window), w.Algorithm)
		p("Each cell: goodput as a fraction of the limit, then 429s as a share of upstream attempts.\n\n")
		p("| dialect")
		for _, peer := range r.Peers {
			p(" | %s", peer.Name)
		}
		p(" |\n|---|")
		for range r.Peers {
			p("---:|")
		}
		p("\n")
		for _, d := range r.Dialects {
			p("| %s", d.Dialect)
			for _, res := range d.Results {
				p(" | %.3f, %.1f%%", res.Goodput, 100*res.RateLimitedShare())
			}
			p(" |\n")
		}
		p("\n")
	}

	r.writeMatrix(p)
	r.writeFleet(p)
	r.writeLoopback(p)
	r.writeRouting(p)
	r.writePriority(p)
	r.writeProcs(p)

	p("## How each peer is set up\n\n")
	peers := r.Peers
	for _, extra := range [][]peerSpec{r.MatrixPeers, r.LoopbackPeers} {
		for _, e := range extra {
			if !slices.ContainsFunc(peers, func(q peerSpec) bool { return q.Setup == e.Setup }) {
				peers = append(peers, e)
			}
		}
	}
	for _, peer := range peers {
		p("- **%s**: %s.\n", peer.Name, peer.Setup)
	}
	p("\nThe peers that retry by themselves run with the SDK's retries off (`option.WithMaxRetries(0)`), as their users would set them; ")
	p("left on, the SDK would retry each of their failures again. Calls still in flight when the run ends are not counted.\n")
	return bw.Flush()
}

func (r benchReport) overhead(peer string) overheadRow {
	for _, o := range r.Overhead {
		if o.Peer == peer {
			return o
		}
	}
	return overheadRow{Peer: peer}
}

// ratio formats v/ref, or says why it has none.
func ratio(v, ref float64) string {
	switch {
	case ref == 0 && v == 0:
		return "same"
	case ref == 0:
		return "steady: 0"
	case ref < 0:
		return "steady: below 0"
	}
	return fmt.Sprintf("%s×", trim(v/ref))
}

// trim formats v with up to three significant digits.
func trim(v float64) string {
	return fmt.Sprintf("%.3g", v)
}

// fmtDur rounds d for a table.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
