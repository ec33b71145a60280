package steady

import (
	"testing"
)

// drain admits the queue's head until it is empty and returns the
// tenants (or lanes) in the order they went.
func drain(q *lanes) []string {
	var out []string
	for q.head != nil {
		w := q.head
		q.admitted(w)
		q.remove(w)
		name := w.tenant
		if name == "" {
			name = [...]string{"B", "D", "I", "U"}[w.lane]
		}
		out = append(out, name)
	}
	return out
}

func push(q *lanes, lane uint8, tenant string, weight float64, n int) []*waiter {
	var ws []*waiter
	for range n {
		w := &waiter{lane: lane, tenant: tenant, weight: weight}
		q.pushBack(w)
		ws = append(ws, w)
	}
	return ws
}

func TestLanesOrder(t *testing.T) {
	var q lanes
	push(&q, laneDefault, "", 1, 2)
	push(&q, laneBatch, "", 1, 2)
	push(&q, laneInteractive, "", 1, 2)
	u := &waiter{}
	q.pushFront(u)
	got := drain(&q)
	want := []string{"U", "I", "I", "D", "D", "B", "B"}
	if !equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	if q.n != 0 || !q.simple() {
		t.Errorf("drained queue: n %d, simple %v", q.n, q.simple())
	}
}

func TestLanesWeightedTenants(t *testing.T) {
	var q lanes
	push(&q, laneDefault, "a", 2, 8)
	push(&q, laneDefault, "b", 1, 8)
	got := drain(&q)[:9]
	var a int
	for _, g := range got {
		if g == "a" {
			a++
		}
	}
	// Weight 2 against 1: two turns in three.
	if a != 6 {
		t.Errorf("tenant a got %d of the first 9 turns (%v), want 6", a, got)
	}
}

func TestLanesRemoveKeepsFlows(t *testing.T) {
	var q lanes
	a := push(&q, laneDefault, "a", 1, 3)
	push(&q, laneDefault, "b", 1, 1)
	for _, w := range a {
		q.remove(w) // canceled
	}
	if len(q.lane[laneDefault].flows) != 1 || len(q.lane[laneDefault].byID) != 1 || q.head == nil || q.head.tenant != "b" {
		t.Fatalf("after canceling a: flows %d, head %+v", len(q.lane[laneDefault].flows), q.head)
	}
	// What goes before a new waiter of a: b's one.
	w := &waiter{lane: laneDefault, tenant: "a", weight: 1}
	if c := q.ahead(w); c.req != 1 {
		t.Errorf("ahead of a new waiter of a: %d requests, want 1", c.req)
	}
	// Of a new interactive waiter: nothing.
	if c := q.ahead(&waiter{lane: laneInteractive}); c.req != 0 {
		t.Errorf("ahead of an interactive waiter: %d, want 0", c.req)
	}
	drain(&q)
	if len(q.lane[laneDefault].byID) != 0 {
		t.Errorf("flows left after draining: %d", len(q.lane[laneDefault].byID))
	}
}

func TestLanesMinimumShare(t *testing.T) {
	var q lanes
	push(&q, laneBatch, "", 1, 10)
	push(&q, laneInteractive, "", 1, 200)
	got := drain(&q)[:200]
	var b int
	for _, g := range got {
		if g == "B" {
			b++
		}
	}
	// One in twenty while interactive calls wait.
	if b < 9 || b > 10 {
		t.Errorf("batch got %d of the first 200 turns, want 10 (5%%)", b)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
