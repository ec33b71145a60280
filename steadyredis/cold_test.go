package steadyredis

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/steady-go/steady/store"
)

// TestFleetColdStart checks that the fleet's first reservations of a
// partition nobody has a reading of are bounded fleet-wide: of sixteen
// processes, only the cold-start bound's worth go; the others wait until a
// slot is given back or a reading is shared, and then learn it.
func TestFleetColdStart(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	const n, bound = 16, 4
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = must(New(c, WithPrefix(prefix), WithInstanceID("p"+strconv.Itoa(i)), WithTimeout(time.Second)))
		defer stores[i].Close()
	}
	r := store.Reservation{Partition: testPart, ColdStart: bound, MaxWait: 30 * time.Millisecond}
	var granted []store.Grant
	refused := 0
	for _, s := range stores {
		g := mustReserve(t, s, r)
		switch {
		case g.Refused:
			refused++
		case g.Shared:
			granted = append(granted, g)
		}
	}
	if len(granted) != bound || refused != n-bound {
		t.Fatalf("%d cold reservations granted and %d refused, want %d and %d", len(granted), refused, bound, n-bound)
	}
	// A cold reservation given back unsent frees its slot.
	stores[0].Settle(context.Background(), store.Settlement{Partition: testPart, Grant: granted[0]})
	if g := mustReserve(t, stores[5], r); g.Refused {
		t.Errorf("a cold reservation refused after a slot was given back: %+v", g)
	}
	// A response's reading ends the cold start: it is sent at once, and
	// every process reserves again, with the reading.
	stores[1].Settle(context.Background(), store.Settlement{Partition: testPart, Grant: granted[1], Sent: true,
		Observed: &store.Observation{Windows: []store.ObservedWindow{{ID: "requests:minute", Limit: 100, Remaining: 97, Reset: 30 * time.Second, Issued: 0}}}})
	for i, s := range stores[6:] {
		g := mustReserve(t, s, r)
		if g.Refused || g.Observed == nil || len(g.Observed.Windows) != 1 || g.Observed.Windows[0].Remaining != 97 {
			t.Errorf("process %d after the first reading: grant %+v, want one with the reading", i+6, g)
		}
	}
}
