package steadyredis

import (
	"time"

	"github.com/steady-go/steady/store"
)

// partTable is the store's partitions, in a map and in a list that a
// sweep walks a few entries at a time: once there are maxParts, each new
// partition looks at sweepStep entries from where the last one stopped
// and drops those idle for the key TTL with nothing waiting to be sent.
// A new partition thus costs the same at a hundred partitions and at a
// hundred thousand (a map insert and a bounded sweep), where a scan of
// every entry under the store's lock grew with them; a partition idle
// for the key TTL is dropped within maxParts/sweepStep new partitions of
// the sweep reaching it. Partitions in use are never dropped, so the
// table can hold more than maxParts while more are busy. Guarded by the
// store's mu.
type partTable struct {
	m      map[store.Partition]*part
	list   []*part
	cursor int // next entry of list the sweep looks at
}

// sweepStep is how many entries a new partition's sweep looks at: more
// than one, so that the table shrinks back when the idle outnumber the new.
const sweepStep = 4

func (t *partTable) init() { t.m = make(map[store.Partition]*part) }

// add inserts pt, after a bounded sweep when the table is full.
func (t *partTable) add(pt *part, now time.Time, idle time.Duration) {
	if len(t.list) >= maxParts {
		t.sweep(now, idle, sweepStep)
	}
	t.list = append(t.list, pt)
	t.m[pt.id] = pt
}

// sweep looks at n entries from the cursor and drops the idle ones.
func (t *partTable) sweep(now time.Time, idle time.Duration, n int) {
	for ; n > 0 && len(t.list) > 0; n-- {
		if t.cursor >= len(t.list) {
			t.cursor = 0
		}
		pt := t.list[t.cursor]
		pt.mu.Lock()
		gone := now.Sub(pt.lastUsed) > idle && pt.pend.empty() && pt.timer == nil
		pt.mu.Unlock()
		if !gone {
			t.cursor++
			continue
		}
		// Swap the last entry into the hole; the cursor looks at it next.
		last := t.list[len(t.list)-1]
		t.list[t.cursor] = last
		t.list[len(t.list)-1] = nil
		t.list = t.list[:len(t.list)-1]
		delete(t.m, pt.id)
	}
}
