package bench

import (
	"fmt"
	"math"

	"github.com/steady-go/steady/steadytest"
	"strings"
	"time"
)

// batchRow is one batch of a matrix and what every peer did with it.
type batchRow struct {
	Batch   batch
	Results []batchResult // in the order of the matrix's peers
}

// loopbackRow is one real-time batch and what every peer did with it.
type loopbackRow struct {
	Case    loopbackCase
	Results []batchResult
}

// isSteady reports whether a peer is steady in one of its forms.
func isSteady(name string) bool { return strings.HasPrefix(name, "steady") }

// batchCell formats one peer's result: makespan as a multiple of the
// minimum, calls ok (and failed, unfinished), and the 429 share.
func batchCell(r batchResult) string {
	var b strings.Builder
	ratio := "n/a"
	if r.Minimum > 0 {
		ratio = trim(r.Ratio()) + "×"
	}
	fmt.Fprintf(&b, "%s (%s), %d ok", ratio, fmtDur(r.Makespan), r.OK)
	if r.Failed > 0 {
		fmt.Fprintf(&b, " / %d failed", r.Failed)
	}
	if r.Unfinished > 0 {
		fmt.Fprintf(&b, " / %d unfinished", r.Unfinished)
	}
	fmt.Fprintf(&b, ", %s 429", pct(r.LimitedShare()))
	return b.String()
}

// pct formats a share as a percentage.
func pct(v float64) string {
	if v == 0 {
		return "0%"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

// minimumCell is the batch's minimum and, when a deadline caps what can
// be served, how many calls the quota can serve before it.
func minimumCell(r batchResult, b batch) string {
	s := fmtDur(r.Minimum)
	if r.Servable < b.Calls {
		s += fmt.Sprintf("; %d servable by the %s deadline", r.Servable, fmtDur(b.deadline(r.Start)))
	}
	return s
}

// worseThanBare says, from the measured figures, where steady's result s
// is worse than the bare SDK's result bare, or "" where it is not.
func worseThanBare(s, bare batchResult) string {
	var why []string
	// Calls still out at the cap are said separately.
	sLost, bLost := max(0, s.Lost()-s.Unfinished), max(0, bare.Lost()-bare.Unfinished)
	if sLost > bLost {
		w := fmt.Sprintf("failed %s the quota could serve in time (bare SDK: %d)", calls(sLost), bLost)
		if k, n := s.TopWhy(); n > 0 {
			w += fmt.Sprintf("; %d of its failures: %q", n, k)
		}
		why = append(why, w)
	}
	if s.Unfinished > bare.Unfinished {
		why = append(why, fmt.Sprintf("%s still out at the %s cap (bare SDK: %d)", calls(s.Unfinished), fmtDur(s.Makespan), bare.Unfinished))
	}
	if s.OK >= bare.OK && s.Unfinished == 0 && s.Makespan > bare.Makespan*21/20 && bare.OK == s.Servable {
		why = append(why, fmt.Sprintf("took %s (%s× the minimum) where the bare SDK took %s (%s×) for the same calls",
			fmtDur(s.Makespan), trim(s.Ratio()), fmtDur(bare.Makespan), trim(bare.Ratio())))
	}
	if s.LimitedShare() > bare.LimitedShare()+0.005 {
		why = append(why, fmt.Sprintf("429s were %s of its attempts, the bare SDK's %s", pct(s.LimitedShare()), pct(bare.LimitedShare())))
	}
	return strings.Join(why, "; ")
}

// batchTable writes a table of batch results, one row per batch and a
// column per peer, and then, for every row where steady did worse than the
// bare SDK (the first peer), a line saying which figure and by how much.
func batchTable(p func(string, ...any), peers []peerSpec, rows []batchRow) {
	p("| limit | callers | calls | quota minimum |")
	for _, peer := range peers {
		p(" %s |", peer.Name)
	}
	p("\n|---|---|---:|---:|")
	for range peers {
		p("---|")
	}
	p("\n")
	var worse []string
	prev := ""
	for _, row := range rows {
		b := row.Batch
		lim := b.Limit.String()
		label := lim
		if lim == prev {
			label = ""
		}
		prev = lim
		p("| %s | %s | %d | %s |", label, b.callers(), b.Calls, minimumCell(row.Results[0], b))
		for _, r := range row.Results {
			cell := batchCell(r)
			if isSteady(r.Peer) {
				cell = "**" + cell + "**"
			}
			p(" %s |", cell)
		}
		p("\n")
		var parts []string
		for _, r := range row.Results[1:] {
			if !isSteady(r.Peer) {
				continue
			}
			if w := worseThanBare(r, row.Results[0]); w != "" {
				parts = append(parts, r.Peer+": "+w+headroomNote(r, b))
			}
		}
		if len(parts) > 0 {
			worse = append(worse, fmt.Sprintf("- %s, %s: %s.", lim, b.callers(), strings.Join(parts, ". ")))
		}
	}
	p("\n")
	if len(worse) == 0 {
		p("On no row did steady do worse than the bare SDK.\n\n")
		return
	}
	p("Where steady did worse than the bare SDK (%d of %d rows), from the figures above:\n\n", len(worse), len(rows))
	for _, w := range worse {
		p("%s\n", w)
	}
	p("\n")
}

// steadySummary states, per steady form, how the matrix meets the targets:
// calls lost that the quota could serve, rows finished within 1.05× the
// minimum, and the worst 429 share.
func steadySummary(p func(string, ...any), peers []peerSpec, rows []batchRow) {
	for i, peer := range peers {
		if !isSteady(peer.Name) {
			continue
		}
		lost, lostRows, within, complete, worst := 0, 0, 0, 0, 0.0
		worstAt := ""
		for _, row := range rows {
			r := row.Results[i]
			if l := r.Lost(); l > 0 {
				lost += l
				lostRows++
			}
			if r.Servable == r.Calls {
				complete++
				if r.OK == r.Calls && r.Ratio() <= 1.05 {
					within++
				}
			}
			if r.LimitedShare() > worst {
				worst, worstAt = r.LimitedShare(), row.Batch.Limit.String()+", "+row.Batch.callers()
			}
		}
		p("- **%s**: lost %d calls the quota could serve before their deadline, on %d of %d rows (target: none); ", peer.Name, lost, lostRows, len(rows))
		p("served every call within 1.05× the minimum on %d of the %d rows whose every call the quota can serve in time (target: all); ", within, complete)
		if worst > 0 {
			p("429s at most %s of attempts (%s; target: at most 1%%).\n", pct(worst), worstAt)
		} else {
			p("no 429.\n")
		}
	}
	p("\n")
}

// writeMatrix writes the fake-time batch matrix.
func (r benchReport) writeMatrix(p func(string, ...any)) {
	if len(r.Matrix) == 0 {
		return
	}
	p("## Finite batches, every kind of limit\n\n")
	p("A batch of chat completions against one limit, through the real SDK, in fake time (`testing/synctest`, %s of real time for the whole matrix). ", r.MatrixWall.Round(100*time.Millisecond))
	p("Every peer runs each batch at the same time against its own fresh provider. ")
	p("The **quota minimum** is the physical floor: the moment the limit can admit the last call, for a client that knows the limit exactly and sends each call at the first instant the limit allows, plus one answer's latency ")
	p("(a fixed window's or a bucket's first quota is usable at once; fixed windows start on a window boundary). ")
	p("Each cell: makespan (start to the last call's return) as a multiple of the minimum, then in brackets the makespan itself, calls ok / failed, and 429s as a share of upstream attempts. ")
	p("A ratio below 1 means calls failed early. With deadlines, a call that fails is lost only if the quota could have served it before its deadline (\"servable\").\n\n")
	batchTable(p, r.MatrixPeers, r.Matrix)
	p("Against the targets:\n\n")
	steadySummary(p, r.MatrixPeers, r.Matrix)
	p("Callers: *16 workers* make the calls one after another; *all at once* launches every call in its own goroutine; ")
	p("*cancel all on the first error* shares one context cancelled at the first failure, as `errgroup.WithContext` does; ")
	p("deadlines are per call, as a multiple of the batch's minimum. ")
	var gated, own []string
	for k := kindSliding; k <= kindLeaky; k++ {
		if _, ok := countedBySteadytest[k]; ok {
			own = append(own, k.String()+"s")
		} else {
			gated = append(gated, k.String()+"s")
		}
	}
	p("`steadytest`'s provider counts the %s itself", strings.Join(own, " and "))
	if len(gated) > 0 {
		p("; `bench`'s gate (`gate.go`) counts the %s in front of an unlimited `steadytest` provider", strings.Join(gated, " and "))
	}
	p(".\n\n")
}

// writeLoopback writes the real-time batches on loopback.
func (r benchReport) writeLoopback(p func(string, ...any)) {
	if len(r.Loopback) == 0 {
		return
	}
	p("## Real time, on loopback\n\n")
	how := "at the same time, each against its own fresh server"
	if r.LoopbackSequential {
		how = "one after another, each against a fresh server"
	}
	p("The same kind of batch in real time: each limit is served by an HTTP server on 127.0.0.1 (`net/http`), and the peers run %s (%s of real time in all). ", how, r.LoopbackWall.Round(time.Second))
	p("Each run is capped at %s times its minimum plus %s; calls still out then are cancelled and counted as unfinished. ", trim(loopbackCapFactor), fmtDur(loopbackCapSlack))
	p("The per-second windows announce Heroku-style headers (limit, remaining, reset as a Unix timestamp in whole seconds, with a whole-second `Date`); the 10-second windows OpenAI-style duration resets; the leaky bucket answers bare 429s with no header and its upstream takes %s.\n\n", fmtDur(50*time.Millisecond))
	rows := make([]batchRow, len(r.Loopback))
	for i, l := range r.Loopback {
		rows[i] = batchRow{Batch: l.Case.Batch, Results: l.Results}
	}
	batchTable(p, r.LoopbackPeers, rows)
	p("Against steady's targets on loopback:\n\n")
	for _, l := range r.Loopback {
		for _, res := range l.Results {
			if !isSteady(res.Peer) {
				continue
			}
			verdict := "meets it"
			var miss []string
			if res.OK < res.Servable {
				miss = append(miss, calls(res.Servable-res.OK)+" not served")
			}
			if res.Ratio() > l.Case.MaxRatio {
				miss = append(miss, fmt.Sprintf("%s× the minimum", trim(res.Ratio())))
			}
			if res.LimitedShare() > l.Case.MaxLimits {
				miss = append(miss, pct(res.LimitedShare())+" 429s")
			}
			if len(miss) > 0 {
				verdict = "misses it: " + strings.Join(miss, ", ") + headroomNote(res, l.Case.Batch)
			}
			p("- %s, %s, **%s**: target ≤ %s× the minimum with ≤ %s 429s; %s× and %s: %s.\n",
				l.Case.Name, l.Case.Batch.Pattern.Name, res.Peer, trim(l.Case.MaxRatio), pct(l.Case.MaxLimits), trim(res.Ratio()), pct(res.LimitedShare()), verdict)
		}
	}
	p("\n")
}

// writeHold writes the outage with calls whose deadline outlasts it.
func (r benchReport) writeHold(p func(string, ...any)) {
	p("## Holding calls through an outage\n\n")
	if len(r.Hold) == 0 {
		p("This build of steady has no breaker option that holds calls while the circuit is open (see `holdMode` in `peers.go`); only fail-fast is measured above.\n\n")
		return
	}
	sc := r.HoldScenario
	p("The workload above again, with every call's deadline (%s) outlasting the %s outage: fail-fast steady beside steady holding calls until the circuit closes.\n\n", fmtDur(sc.CallTimeout), fmtDur(sc.Outage))
	p("| |")
	for _, res := range r.Hold {
		p(" %s |", res.Peer)
	}
	p("\n|---|")
	for range r.Hold {
		p("---:|")
	}
	p("\n")
	row := func(label string, cell func(result) string) {
		p("| %s |", label)
		for _, res := range r.Hold {
			p(" %s |", cell(res))
		}
		p("\n")
	}
	row("failed calls during the outage", func(x result) string { return fmt.Sprint(x.FailedOutage) })
	row("upstream attempts during the outage", func(x result) string { return fmt.Sprint(x.OutageAttempts) })
	row("from recovery to the first success", reopened)
	row("failed calls after the outage", func(x result) string { return fmt.Sprint(x.FailedRecovery) })
	row("calls ok / failed in all", func(x result) string { return fmt.Sprintf("%d / %d", x.OK, x.Failed) })
	p("\nFail-fast frees callers at once to fall back; holding keeps their calls for when the upstream returns, at the cost of callers waiting up to the outage's length. ")
	p("Both send only probes during the outage: the open period between probes trades attempts against a dead upstream for how soon its recovery is seen.\n\n")
}

// reopened formats Result.Reopened.
func reopened(x result) string {
	if x.Reopened < 0 {
		return "never"
	}
	return fmtDur(x.Reopened)
}

// callers describes who makes a batch's calls.
func (b batch) callers() string {
	if b.Processes > 1 {
		return fmt.Sprintf("%s, %d processes", b.Pattern.Name, b.Processes)
	}
	return b.Pattern.Name
}

// writeFleet writes the batches shared by several processes.
func (r benchReport) writeFleet(p func(string, ...any)) {
	if len(r.Fleet) == 0 {
		return
	}
	p("## Several processes on one key\n\n")
	p("The same batch split over several uncoordinated processes (each its own SDK client and, for steady, its own `Transport`, with no shared store) against one limit, in fake time. ")
	p("Targets for steady: 429s at most 1%% of attempts for one process and at most 3%% for 16.\n\n")
	batchTable(p, r.MatrixPeers, r.Fleet)
}

// calls formats a count of calls.
func calls(n int) string {
	if n == 1 {
		return "1 call"
	}
	return fmt.Sprintf("%d calls", n)
}

// headroomNote explains a makespan that the headroom steady keeps by
// default accounts for: the minimum of the same batch against the limit
// less that headroom, in whole requests, computed here, not assumed. It is
// "" when the headroom does not explain the figure.
func headroomNote(r batchResult, b batch) string {
	keep := int(math.Floor(float64(b.Limit.Requests) * defaultHeadroom))
	if keep < 1 || r.Unfinished > 0 || r.OK < r.Servable || b.Limit.Kind == kindLeaky || b.Limit.Dialect == steadytest.DialectNone {
		return ""
	}
	hb := b
	hb.Limit.Requests -= keep
	m := hb.Minimum(r.Start)
	if m <= r.Minimum || r.Makespan > m*21/20 {
		return ""
	}
	return fmt.Sprintf(" (the %d of %d per window steady keeps unused by default, `PacingConfig.Headroom`, make the minimum %s: steady took %s× that; `Headroom: -1` gives them back)",
		keep, b.Limit.Requests, fmtDur(m), trim(r.Makespan.Seconds()/m.Seconds()))
}
