package bench

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// writeProcs writes the fleet matrix: real processes on loopback.
func (r benchReport) writeProcs(p func(string, ...any)) {
	if len(r.Procs) == 0 {
		return
	}
	p("## Fleets of processes on loopback\n\n")
	p("Each row is a fleet of real OS processes (this test binary started again, `GOMAXPROCS=1` each) on one key of a simulated provider ")
	p("(`steadytest`, served on 127.0.0.1, answering in 50 ms), in real time, one row after another. ")
	p("Under sustained load every process's callers offer, together, %s times the limit, each call with a one-minute deadline; ", trim(fleetCase{}.offered()))
	p("the store is `steadyredis` on the Redis at %s (a fault row runs its own `redis-server`). ", strings.TrimPrefix(fleetRedis, "redis://"))
	p("A deploy starts every process at once, a rolling start one after another over the first third of the run, a steady-state row measures only the last two thirds. ")
	p("The outside consumer is a process without steady sending a third of the limit, without retries. ")
	p("Goodput is the fleet's successful calls per second over the measured span (whole windows for fixed windows) as a fraction of the limit; ")
	p("a batch's is over its makespan (on fixed windows a batch that starts and ends inside windows can pass 1). The spread is how far the process furthest from an equal share of the fleet's successful calls is from that share. ")
	p("The full matrix: `go test -count=1 -run 'TestReport$' -report -fleets .` (hours; `-fleet-rows REGEXP` picks rows, `-fleet-duration D` shortens them); a few of its rows in every CI run: `go test -count=1 -run 'TestFleetShort$' -v .`")
	if r.ProcsCommand != "" {
		p(". The rows below: `%s`", r.ProcsCommand)
	}
	if r.ProcsWall > 0 {
		p("; these rows took %s", r.ProcsWall.Round(time.Second))
	}
	p(".\n\n")
	p("| limit | fleet | 429s of attempts | goodput | makespan | failed calls | spread | 429s, first 2 windows | store fallbacks |\n")
	p("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, o := range r.Procs {
		c := o.Case
		mk := "-"
		if o.Minimum > 0 {
			mk = fmt.Sprintf("%s (%s× the minimum)", fmtDur(o.Makespan), trim(o.Ratio()))
		}
		first := 0
		for i := 0; i < len(o.SecLimited) && i < 2*int(c.window()/time.Second); i++ {
			first += o.SecLimited[i]
		}
		fb := "-"
		if c.Store != noStore {
			n, evs, silent := 0, 0, 0
			for _, pr := range o.Processes {
				n += pr.Fallbacks
				evs += pr.EventFallbacks
				if pr.Fallbacks > 0 && pr.EventFallbacks == 0 {
					silent++ // fell back without an EventStore
				}
			}
			fb = fmt.Sprint(n)
			if silent > 0 || evs < n {
				fb += fmt.Sprintf(" (EventStore %d; %d processes none)", evs, silent)
			}
		}
		fleet := c.describe()
		if o.Outside != nil {
			fleet += fmt.Sprintf(" (outside: %d ok, %s 429s)", o.Outside.OK, pct(share(o.Outside.RateLimited, o.Outside.Attempts)))
		}
		p("| %s | %s | %s (%d of %d) | %.3f | %s | %s | ±%.1f%% | %d | %s |\n", c.Name, fleet, pct(o.LimitedShare()), o.RateLimited, o.Attempts,
			o.Goodput, mk, failedCell(o), 100*o.Spread, first, fb)
	}
	p("\n")
}

// failedCell is the failed calls of o, with their causes.
func failedCell(o fleetOutcome) string {
	if o.Failed == 0 {
		return "0"
	}
	// Causes with their numbers and partition labels masked, the three
	// commonest first.
	by := map[string]int{}
	for k, n := range o.Errors {
		k = partitionLabel.ReplaceAllString(digits.ReplaceAllString(k, "N"), "")
		by[k] += n
	}
	var ks []string
	for k := range by {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return by[ks[i]] > by[ks[j]] || by[ks[i]] == by[ks[j]] && ks[i] < ks[j] })
	var parts []string
	for i, k := range ks {
		if i == 3 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%d %s", by[k], k))
	}
	return fmt.Sprintf("%d: %s", o.Failed, strings.Join(parts, "; "))
}

func share(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
}

// procTargets adds issue 18's targets for the fleet matrix.
func (r benchReport) procTargets(add func(issue, what, measured string, met bool)) {
	for _, o := range r.Procs {
		max429, ok := fleetTarget(o.Case)
		if !ok {
			continue
		}
		c := o.Case
		add("18", fmt.Sprintf("%s, %s: at most %s 429s, no call failed", c.Name, c.describe(), pct(max429)),
			fmt.Sprintf("%s 429s, %d failed", pct(o.LimitedShare()), o.Failed), o.LimitedShare() <= max429 && o.Failed == 0)
	}
}

// partitionLabel matches a partition's label in an error, for counting.
var partitionLabel = regexp.MustCompile(` in partition "[^"]*"`)
