package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// writeTable writes the clients' summaries side by side, one column per
// client.
func writeTable(w io.Writer, rows []summary) error {
	tw, line := sideBySide(w, rows)
	line("", func(s summary) string { return s.Name })
	line("goodput during overload", func(s summary) string {
		if s.Limit <= 0 {
			return fmt.Sprintf("%.1f/s", s.Goodput)
		}
		return fmt.Sprintf("%.1f/s = %.0f%% of limit", s.Goodput, 100*s.Goodput/s.Limit)
	})
	line("calls ok", func(s summary) string { return fmt.Sprint(s.OK) })
	line("calls failed", func(s summary) string { return fmt.Sprint(s.Failed) })
	if len(rows) > 0 && rows[0].OutageCalls {
		line("of which ended before the outage", func(s summary) string { return fmt.Sprint(s.FailedIn[phaseOverload]) })
		line("during the outage", func(s summary) string { return fmt.Sprint(s.FailedIn[phaseOutage]) })
		line("after the outage", func(s summary) string { return fmt.Sprint(s.FailedIn[phaseRecovery]) })
	}
	line("upstream attempts", func(s summary) string { return fmt.Sprint(s.Attempts) })
	line("429s", func(s summary) string {
		return fmt.Sprintf("%d = %s of attempts", s.RateLimited, percent(s.RateLimited, s.Attempts))
	})
	line("retries", func(s summary) string { return fmt.Sprint(s.Retries) })
	line("p50 latency (ok calls)", func(s summary) string { return fmtDur(s.P50) })
	line("p99 latency (ok calls)", func(s summary) string { return fmtDur(s.P99) })
	line("attempts during outage", func(s summary) string {
		if !s.OutageCalls {
			return "-"
		}
		return fmt.Sprint(s.OutageAttempts)
	})
	if len(rows) > 0 && rows[0].OutageCalls {
		line("first ok call after the outage", func(s summary) string {
			if s.FirstOKAfter < 0 {
				return "-"
			}
			return "after " + fmtDur(s.FirstOKAfter)
		})
	}
	line("most admitted in a window", func(s summary) string {
		if s.MaxInWindow <= 0 {
			return "-"
		}
		return fmt.Sprint(s.MaxInWindow)
	})
	return tw.Flush()
}

// percent returns n/of as a percentage with one decimal, or "-" when of is 0.
func percent(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

// fmtDur rounds d for a table: milliseconds under ten seconds, else
// tenths of a second.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// progressLine renders one client's live line.
func progressLine(p progress, elapsed time.Duration, ph phase) string {
	breaker := p.Breaker
	if breaker == "" {
		breaker = "-"
	}
	return fmt.Sprintf("%-12s %5.1fs %-8s calls %5d  ok %5d  failed %4d  %5.1f ok/s  429s %5d  retries %5d  breaker %s",
		p.Name, elapsed.Seconds(), ph, p.Calls, p.OK, p.Failed, p.Rate, p.RateLimited, p.Retries, breaker)
}

// explain returns the notes that go under the table: what steady saved,
// and why, for every row where a steady column looks worse than the bare
// SDK's. rows[0] is the bare SDK; the others are steady's sides.
func explain(rows []summary) []string {
	if len(rows) < 2 {
		return nil
	}
	bare := rows[0]
	var notes []string
	add := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
	for _, s := range rows[1:] {
		add("%s saved: %d upstream attempts instead of %d (%s fewer), %d 429s instead of %d, %d attempts during the outage instead of %d.",
			s.Name, s.Attempts, bare.Attempts, percent(bare.Attempts-s.Attempts, bare.Attempts), s.RateLimited, bare.RateLimited, s.OutageAttempts, bare.OutageAttempts)
	}
	worse := func(f func(s summary) bool) []string {
		var names []string
		for _, s := range rows[1:] {
			if f(s) {
				names = append(names, s.Name)
			}
		}
		return names
	}
	if n := worse(func(s summary) bool { return s.OK < bare.OK }); len(n) > 0 {
		add("calls ok (%s below the bare SDK): after the outage the provider's window is empty. The bare SDK, with no breaker,\n"+
			"  sends into it the moment the provider is back; steady's circuit is still open then, and it sends the window's whole\n"+
			"  quota at once only when its probes close the circuit (see \"first ok call after the outage\"), so its windows after\n"+
			"  the outage start later and the run ends before the last of them. Calls that failed fast during and just after the\n"+
			"  outage are missing from this row too (see below).", strings.Join(n, ", "))
	}
	if n := worse(func(s summary) bool { return s.FailedIn[phaseOutage] > bare.FailedIn[phaseOutage] }); len(n) > 0 {
		add("calls failed during the outage (%s above the bare SDK): each caller loops, so a call that fails at once (circuit open)\n"+
			"  is followed by the next at once; a bare SDK call spends seconds retrying before it fails, three attempts for each failure.", strings.Join(n, ", "))
	}
	if n := worse(func(s summary) bool { return s.FailedIn[phaseRecovery] > bare.FailedIn[phaseRecovery] }); len(n) > 0 {
		add("calls failed after the outage (%s above the bare SDK): failing fast, steady fails calls until its next probe finds the\n"+
			"  upstream back; the open period starts at about 1s and doubles while probes fail, up to BreakerConfig.OpenTimeout (10s),\n"+
			"  so this lasts at most 10s. Fewer probes during a long outage cost a later close; with Hold, calls wait instead.", strings.Join(n, ", "))
	}
	if n := worse(func(s summary) bool { return s.P50 > bare.P50 }); len(n) > 0 {
		add("latency (%s above the bare SDK): steady queues calls to stay under the limit, so a call waits for its turn instead of\n"+
			"  failing with a 429; with Hold, calls also wait out the outage. The bare SDK's ok calls are quick, but %s of its attempts were 429s.",
			strings.Join(n, ", "), percent(bare.RateLimited, bare.Attempts))
	}
	return notes
}

// sideBySide returns a table writer on w and a function that writes one
// line of it: a label, then a cell per column, right-aligned. Flush the
// writer when done.
func sideBySide[T any](w io.Writer, cols []T) (*tabwriter.Writer, func(label string, cell func(T) string)) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	return tw, func(label string, cell func(T) string) {
		var b strings.Builder
		b.WriteString(label)
		b.WriteByte('\t')
		for _, c := range cols {
			b.WriteString(cell(c))
			b.WriteByte('\t')
		}
		b.WriteByte('\n')
		io.WriteString(tw, b.String())
	}
}
