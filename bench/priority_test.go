package bench

import (
	"testing"
	"time"
)

func runPriorityRows(t *testing.T) []priorityRow {
	var rows []priorityRow
	for _, c := range priorityCases() {
		rows = append(rows, priorityRow{Case: c, Results: runPriorityCase(t.Context(), c)})
	}
	return rows
}

// TestPriorityRealTime runs the priority rows in real time on loopback
// (-loopback) and holds them to their targets: interactive p99 wait at
// most one request interval, no interactive call failed, the batch uses
// at least 97% of what they leave. A shared machine's scheduling adds to
// the wait; the test log prints the row either way.
func TestPriorityRealTime(t *testing.T) {
	if !*loopback {
		t.Skip("real time: run with -loopback")
	}
	rows := runPriorityRows(t)
	for _, row := range rows {
		for _, res := range row.Results {
			t.Logf("priorities %v: interactive %d, failed %d, p99 wait %v; batch %d (%.1f%%); 429s %d of %d",
				res.Priorities, res.Interactive, res.InteractiveFailed, res.InteractiveP99.Round(time.Millisecond), res.Batch, 100*res.BatchUse, res.Limited, res.Attempts)
		}
		with := row.Results[0]
		if with.InteractiveP99 > with.RequestInterval {
			t.Errorf("interactive p99 wait %v, want <= %v", with.InteractiveP99, with.RequestInterval)
		}
		if with.InteractiveFailed != 0 {
			t.Errorf("%d interactive calls failed", with.InteractiveFailed)
		}
		if with.BatchUse < 0.97 {
			t.Errorf("batch used %.1f%%, want >= 97%%", 100*with.BatchUse)
		}
	}
}
