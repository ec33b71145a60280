package bench

import (
	"fmt"
	"time"
)

// priorityRow is one priority case and its two runs: with priorities and
// as a single queue.
type priorityRow struct {
	Case    priorityCase
	Results [2]priorityResult
}

// writePriority writes the real-time priority rows.
func (r benchReport) writePriority(p func(string, ...any)) {
	if len(r.Priority) == 0 {
		return
	}
	p("## Priorities in real time (loopback)\n\n")
	p("A batch saturates a provider on loopback (sliding window) while interactive calls arrive at random at 5%% of the limit, ")
	p("each with a 5 s deadline, through steady as the HTTP client's transport: once with `steady.PriorityBatch` and `steady.PriorityInteractive` ")
	p("set on their contexts, once without (today's single queue), at the same time, each against its own provider. ")
	p("The interactive wait is a call's time less the provider's %s latency; the batch's use is of what the interactive calls leave of the limit. ", fmtDur(priorityLatency))
	p("Targets: interactive p99 wait at most one request interval, no interactive call failed, the batch uses at least 97%%. ")
	p("Alone: `go test -count=1 -run 'TestPriorityRealTime$' -loopback -v .`\n\n")
	p("| row | queue | interactive calls | failed | p99 wait | batch calls | batch use | 429s |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range r.Priority {
		c := row.Case
		name := fmt.Sprintf("%d / %s, %d batch callers, %s (interval %s)", c.Requests, fmtDur(c.Window), c.Batch, fmtDur(c.Run), fmtDur(c.Window/time.Duration(c.Requests)))
		for _, res := range row.Results {
			q := "single queue"
			if res.Priorities {
				q = "**priorities**"
			}
			p("| %s | %s | %d | %d | %s | %d | %.1f%% | %d of %d |\n", name, q, res.Interactive, res.InteractiveFailed,
				res.InteractiveP99.Round(time.Millisecond), res.Batch, 100*res.BatchUse, res.Limited, res.Attempts)
		}
	}
	p("\n")
}
