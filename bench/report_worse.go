package bench

import (
	"fmt"
	"time"
)

// topKind returns the most common reason in why and its count.
func topKind(why map[string]int) (string, int) {
	return batchResult{Why: why}.TopWhy()
}

// because formats the most common reason in why, or "" when there is none.
func because(why map[string]int) string {
	k, n := topKind(why)
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d of them: %q", n, k)
}

// mainWorse says, row by row of the main table and from the measured
// figures, where steady (s) did worse than the bare SDK (b), and what the
// figures show about why.
func (r benchReport) mainWorse(s, b result) []string {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	headroom := defaultHeadroom
	goodput := func(label string, sv, bv float64) {
		if sv >= bv-0.005 {
			return
		}
		if sv >= (1-headroom)*bv-0.005 {
			add("%s: %.3f against %.3f, within the %.0f%% of every limit steady keeps unused by default (`PacingConfig.Headroom`).", label, sv, bv, 100*headroom)
			return
		}
		add("%s: %.3f against %.3f, %.1f%% below, more than the %.0f%% headroom steady keeps.", label, sv, bv, 100*(1-sv/bv), 100*headroom)
	}
	goodput("goodput during the overload", s.Goodput, b.Goodput)
	if s.RateLimitedShare() > b.RateLimitedShare()+0.005 {
		add("429s: %s of attempts against %s.", pct(s.RateLimitedShare()), pct(b.RateLimitedShare()))
	}
	if s.FailedOverload > b.FailedOverload {
		add("failed calls during the overload: %d against %d%s.", s.FailedOverload, b.FailedOverload, because(s.WhyOverload))
	}
	if s.OutageAttempts > b.OutageAttempts {
		add("upstream attempts during the outage: %d against %d.", s.OutageAttempts, b.OutageAttempts)
	}
	if s.FailedOutage > b.FailedOutage {
		n := fmt.Sprintf("failed calls during the outage: %d against %d%s, failing after a median %s against %s", s.FailedOutage, b.FailedOutage, because(s.WhyOutage), failTime(s.FailFast), failTime(b.FailFast))
		if k, _ := topKind(s.WhyOutage); k == "circuit open" && s.OutageAttempts < b.OutageAttempts {
			n += fmt.Sprintf(". That is fail-fast: with the circuit open, callers get `ErrCircuitOpen` at once instead of after their retries, and the dead upstream got %d attempts instead of %d", s.OutageAttempts, b.OutageAttempts)
		}
		add("%s.", n)
	}
	if s.Reopened > b.Reopened+time.Second || s.Reopened < 0 && b.Reopened >= 0 {
		n := fmt.Sprintf("first success after the recovery: %s after it against %s", reopened(s), reopened(b))
		if s.OutageAttempts < b.OutageAttempts {
			n += "; while the circuit is open only probes go out, so the recovery is seen at the next probe"
		}
		add("%s.", n)
	}
	if s.FailedRecovery > b.FailedRecovery {
		add("failed calls after the outage: %d against %d, the last %s after the recovery%s.", s.FailedRecovery, b.FailedRecovery, fmtDur(max(s.LastFailure, 0)), because(s.WhyRecovery))
	}
	goodput("goodput after the outage", s.Recovery, b.Recovery)
	if s.P50 > b.P50 {
		if s.P99 < b.P99 {
			add("p50 latency: %s against %s. Calls wait their turn in steady's queue instead of retrying after 429s: the bare SDK's p99 is %s, steady's %s.", fmtDur(s.P50), fmtDur(b.P50), fmtDur(b.P99), fmtDur(s.P99))
		} else {
			add("latency: p50 %s and p99 %s against %s and %s.", fmtDur(s.P50), fmtDur(s.P99), fmtDur(b.P50), fmtDur(b.P99))
		}
	}
	if len(r.Overhead) > 0 {
		base, o := r.Overhead[0], r.overhead(s.Peer)
		dns, dallocs := o.NsPerOp-base.NsPerOp, o.AllocsOp-base.AllocsOp
		verdict := "within"
		if dns > 1000 || dallocs > 5 {
			verdict = "over"
		}
		cost := fmt.Sprintf("%.0f ns", dns)
		if dns <= 0 {
			cost = fmt.Sprintf("no measurable time (%.0f ns: the base's own runs varied more than that here)", dns)
		}
		if dns > 0 || dallocs > 0 {
			add("success path: steady adds %s and %d allocations per request to the bare base, %s the budget of +1 µs and +5 allocations.", cost, dallocs, verdict)
		}
	}
	return out
}

// failTime formats a median time to fail.
func failTime(d time.Duration) string {
	if d == 0 {
		return "0 s (at once)"
	}
	return fmtDur(d)
}

// defaultHeadroom is the share of every limit steady keeps unused when
// PacingConfig.Headroom is zero, as its doc says.
const defaultHeadroom = 0.02
