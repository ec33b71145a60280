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
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	line := func(label string, cell func(s summary) string) {
		var b strings.Builder
		b.WriteString(label)
		b.WriteByte('\t')
		for _, s := range rows {
			b.WriteString(cell(s))
			b.WriteByte('\t')
		}
		b.WriteByte('\n')
		io.WriteString(tw, b.String())
	}
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
