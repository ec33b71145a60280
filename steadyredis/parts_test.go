package steadyredis

import (
	"strconv"
	"testing"
	"time"

	"github.com/steady-go/steady/store"
)

// TestPartTableSweeps: past maxParts, each new partition drops idle ones a
// few at a time, so the table returns to its bound once the old are idle,
// and never drops one in use or with something to send.
func TestPartTableSweeps(t *testing.T) {
	var tb partTable
	tb.init()
	t0 := time.Unix(1_800_000_000, 0)
	idle := time.Minute
	mk := func(i int, at time.Time) *part {
		pt := &part{id: store.Partition{Upstream: "u", Key: strconv.Itoa(i)}, lastUsed: at}
		tb.add(pt, at, idle)
		return pt
	}
	for i := range 3 * maxParts {
		mk(i, t0) // all busy: nothing is idle yet
	}
	if len(tb.list) != 3*maxParts || len(tb.m) != 3*maxParts {
		t.Fatalf("%d/%d partitions, want all %d kept while in use", len(tb.list), len(tb.m), 3*maxParts)
	}
	keep := tb.m[store.Partition{Upstream: "u", Key: "7"}]
	keep.pend.fails = 1 // something waits to be sent
	later := t0.Add(2 * idle)
	for i := range 3 * maxParts {
		mk(10*maxParts+i, later)
	}
	if len(tb.list) > 3*maxParts+1 {
		t.Errorf("%d partitions after the old went idle, want back near %d", len(tb.list), 3*maxParts)
	}
	if tb.m[keep.id] != keep {
		t.Error("a partition with something to send was dropped")
	}
	for i, pt := range tb.list {
		if tb.m[pt.id] != pt {
			t.Fatalf("list[%d] %v not in the map", i, pt.id)
		}
	}
	if len(tb.list) != len(tb.m) {
		t.Errorf("list %d, map %d", len(tb.list), len(tb.m))
	}
}
