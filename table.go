package steady

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// entrySlot is the bookkeeping a [table] keeps in each of its entries.
type entrySlot struct {
	key uint64
	// users counts holders (acquires in progress, permits not settled);
	// an entry with users is never dropped. A dropped entry holds
	// deadUsers, so that a late holder sees it is gone.
	users atomic.Int32
	// ref is set on use and cleared by the clock hand: an entry used since
	// the hand last passed gets a second chance.
	ref atomic.Bool
	// lastUsed is in Unix nanoseconds, updated at most every refreshEvery.
	lastUsed atomic.Int64
}

// deadUsers marks a dropped entry: far below any count of holders.
const deadUsers = math.MinInt32 / 2

// refreshEvery bounds how often an entry's lastUsed is written, so that
// requests to a busy partition do not all write one cache line.
const refreshEvery = int64(100 * time.Millisecond)

// tableEntry is what a table holds: anything with a entrySlot.
type tableEntry interface{ tslot() *entrySlot }

func (s *entrySlot) tslot() *entrySlot { return s }

// scanPerInsert is how far the clock hand moves past live entries on each
// insert to find idle ones, and maxScanPerInsert how far it moves at most
// when the table is full: both bound the cost of an insert, whatever the
// table's size.
const (
	scanPerInsert    = 4
	maxScanPerInsert = 64
)

// table maps keys to entries with a bounded size. Lookups take no lock.
// Inserts take mu and move a clock hand over a ring of the entries a
// bounded number of steps: entries idle for the idle timeout are dropped
// as the hand passes them, and when the table is full, the first entry
// that is neither in use nor used since the hand last passed (a CLOCK
// approximation of least recently used). Entries in use are never
// dropped, so the table can exceed its bound by the number of entries in
// use at once. Every operation costs amortized constant time.
type table[E tableEntry] struct {
	m    sync.Map // uint64 -> E
	size atomic.Int64
	max  int
	idle time.Duration

	mu   sync.Mutex
	ring []E // every live entry; guarded by mu
	hand int // guarded by mu
}

func newTable[E tableEntry](max int, idle time.Duration) *table[E] {
	return &table[E]{max: max, idle: idle}
}

// acquire returns the entry of key with one user counted for the caller,
// making it with mk if there is none. mk runs without the table's lock.
func (t *table[E]) acquire(key uint64, now time.Time, mk func() E) E {
	nowNS := now.UnixNano()
	if e, ok := t.hold(key, nowNS); ok {
		return e
	}
	fresh := mk()
	s := fresh.tslot()
	s.key = key
	s.users.Store(1)
	s.ref.Store(true)
	s.lastUsed.Store(nowNS)
	t.mu.Lock()
	if e, ok := t.hold(key, nowNS); ok {
		t.mu.Unlock()
		return e // another goroutine made it first
	}
	t.sweepLocked(nowNS)
	t.ring = append(t.ring, fresh)
	t.m.Store(key, fresh)
	t.size.Add(1)
	t.mu.Unlock()
	return fresh
}

// hold counts a user on key's live entry, if there is one.
func (t *table[E]) hold(key uint64, nowNS int64) (E, bool) {
	v, ok := t.m.Load(key)
	if !ok {
		var zero E
		return zero, false
	}
	e := v.(E)
	s := e.tslot()
	if s.users.Add(1) <= 0 {
		// Dropped between the load and the count; its key is being
		// deleted under mu.
		s.users.Add(-1)
		var zero E
		return zero, false
	}
	if !s.ref.Load() {
		s.ref.Store(true)
	}
	if nowNS-s.lastUsed.Load() > refreshEvery {
		s.lastUsed.Store(nowNS)
	}
	return e, true
}

// release gives back the user acquire counted.
func (t *table[E]) release(e E) { e.tslot().users.Add(-1) }

// sweepLocked moves the clock hand before an insert: past scanPerInsert
// entries, dropping those idle for longer than the idle timeout, and while
// the table is full, on until one entry is dropped or maxScanPerInsert
// entries were passed.
func (t *table[E]) sweepLocked(nowNS int64) {
	cutoff := nowNS - int64(t.idle)
	for step := 0; step < maxScanPerInsert && len(t.ring) > 0; step++ {
		full := len(t.ring) >= t.max
		if step >= scanPerInsert && !full {
			return
		}
		if t.hand >= len(t.ring) {
			t.hand = 0
		}
		e := t.ring[t.hand]
		s := e.tslot()
		if s.users.Load() == 0 {
			idle := s.lastUsed.Load() <= cutoff
			if (idle || (full && !s.ref.Load())) && s.users.CompareAndSwap(0, deadUsers) {
				t.m.CompareAndDelete(s.key, e)
				t.size.Add(-1)
				last := len(t.ring) - 1
				t.ring[t.hand] = t.ring[last]
				var zero E
				t.ring[last] = zero
				t.ring = t.ring[:last]
				if full {
					full = false
				}
				continue // the entry moved here is next
			}
		}
		s.ref.Store(false)
		t.hand++
	}
}

// len returns how many entries the table holds.
func (t *table[E]) len() int { return int(t.size.Load()) }

// each calls fn for every entry, in no order.
func (t *table[E]) each(fn func(E)) {
	t.m.Range(func(_, v any) bool {
		fn(v.(E))
		return true
	})
}

// get returns key's entry without counting a user, for tests and
// snapshots.
func (t *table[E]) get(key uint64) (E, bool) {
	v, ok := t.m.Load(key)
	if !ok {
		var zero E
		return zero, false
	}
	return v.(E), true
}
