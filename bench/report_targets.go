package bench

import (
	"fmt"
	"time"
)

// target is one of the project's targets and what was measured against it.
type target struct {
	issue, what, measured string
	met                   bool
}

// targets collects, from the report's figures, every target steady has
// to meet and whether it does.
func (r benchReport) targets() []target {
	var ts []target
	add := func(issue, what, measured string, met bool) {
		ts = append(ts, target{issue, what, measured, met})
	}
	for i, peer := range r.MatrixPeers {
		if !isSteady(peer.Name) || len(r.Matrix) == 0 {
			continue
		}
		lost, rows, within, complete, worst := 0, 0, 0, 0, 0.0
		for _, row := range r.Matrix {
			res := row.Results[i]
			if l := res.Lost(); l > 0 {
				lost += l
				rows++
			}
			if res.Servable == res.Calls {
				complete++
				if res.OK == res.Calls && res.Ratio() <= 1.05 {
					within++
				}
			}
			worst = max(worst, res.LimitedShare())
		}
		add("8", peer.Name+": no call fails that the quota could serve before its deadline (batch matrix)",
			fmt.Sprintf("%s lost on %d of %d rows", calls(lost), rows, len(r.Matrix)), lost == 0)
		add("8", peer.Name+": makespan at most 1.05× the quota minimum (batch matrix)",
			fmt.Sprintf("%d of the %d rows whose every call the quota can serve in time", within, complete), within == complete)
		most := "none"
		if worst > 0 {
			most = "at most " + pct(worst) + " on a row"
		}
		add("8", peer.Name+": 429s at most 1% of attempts, one process (batch matrix)", most, worst <= 0.01)
		for _, row := range r.Fleet {
			if row.Batch.Processes == 16 {
				s := row.Results[i].LimitedShare()
				add("8", peer.Name+": 429s at most 3% of attempts, 16 processes", pct(s), s <= 0.03)
			}
		}
	}
	for _, l := range r.Loopback {
		for _, res := range l.Results {
			if !isSteady(res.Peer) {
				continue
			}
			issue := "8"
			if l.Case.Batch.Limit.Kind == kindLeaky {
				issue = "14"
			}
			ok := res.OK >= res.Servable && res.Ratio() <= l.Case.MaxRatio && res.LimitedShare() <= l.Case.MaxLimits
			add(issue, fmt.Sprintf("%s: real time, %s, %s: at most %s× the minimum, %s 429s", res.Peer, l.Case.Name, l.Case.Batch.Pattern.Name, trim(l.Case.MaxRatio), pct(l.Case.MaxLimits)),
				fmt.Sprintf("%s×, %s 429s, %d of %d ok", trim(res.Ratio()), pct(res.LimitedShare()), res.OK, res.Calls), ok)
		}
	}
	for _, res := range r.Results {
		if res.Peer != "steady" {
			continue
		}
		add("9", "steady: upstream attempts during the 2-minute outage at most 15", fmt.Sprint(res.OutageAttempts), res.OutageAttempts <= 15)
		add("9", "steady: circuit closed within 10 s of the upstream's recovery (first success)", reopened(res), res.Reopened >= 0 && res.Reopened <= 10*time.Second)
		add("20", "steady: first success at most 5 s after the upstream heals", reopened(res), res.Reopened >= 0 && res.Reopened <= 5*time.Second)
	}
	for _, res := range r.Hold {
		if isSteady(res.Peer) && res.Peer != "steady" {
			add("9", res.Peer+": calls failed during the outage, deadlines outlasting it", fmt.Sprint(res.FailedOutage), res.FailedOutage == 0)
		}
	}
	r.procTargets(add)
	if len(r.Overhead) > 0 {
		base, o := r.Overhead[0], r.overhead("steady")
		dns, dallocs := o.NsPerOp-base.NsPerOp, o.AllocsOp-base.AllocsOp
		add("8", "steady: success path at most +1 µs and +5 allocations over the bare base", fmt.Sprintf("%+.0f ns, %+d allocations", dns, dallocs), dns <= 1000 && dallocs <= 5)
	}
	return ts
}

// writeTargets writes the targets table.
func (r benchReport) writeTargets(p func(string, ...any)) {
	ts := r.targets()
	if len(ts) == 0 {
		return
	}
	met := 0
	for _, t := range ts {
		if t.met {
			met++
		}
	}
	p("## Targets\n\n")
	p("The targets of the project's open issues, against the figures below: %d of %d met.\n\n", met, len(ts))
	p("| issue | target | measured | met |\n|---|---|---|---|\n")
	for _, t := range ts {
		m := "**no**"
		if t.met {
			m = "yes"
		}
		p("| %s | %s | %s | %s |\n", t.issue, t.what, t.measured, m)
	}
	if len(r.Hold) == 0 {
		p("\nNot measured: hold mode (issue 9), which this build of steady does not have.\n")
	}
	p("\n")
}
