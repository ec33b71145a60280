package steady

import (
	"sync"
	"testing"
	"time"
)

type testEntry struct {
	entrySlot
	id int
}

func TestTableBoundAndBusy(t *testing.T) {
	tb := newTable[*testEntry](8, time.Hour)
	now := time.Unix(1_000_000, 0)
	busy := tb.acquire(1, now, func() *testEntry { return &testEntry{id: 1} })
	made := 1
	for k := uint64(2); k < 200; k++ {
		e := tb.acquire(k, now, func() *testEntry { made++; return &testEntry{id: int(k)} })
		tb.release(e)
	}
	if made != 199 {
		t.Fatalf("made %d entries, want 199", made)
	}
	if n := tb.len(); n > 8 {
		t.Errorf("%d entries kept, want at most 8", n)
	}
	if e, ok := tb.get(1); !ok || e != busy {
		t.Error("the entry in use was dropped")
	}
	// The busy entry is still the one handed out for its key.
	if e := tb.acquire(1, now, func() *testEntry { t.Fatal("entry in use made again"); return nil }); e != busy {
		t.Error("a second entry for a key in use")
	}
}

func TestTableIdleSweep(t *testing.T) {
	tb := newTable[*testEntry](1000, time.Minute)
	now := time.Unix(1_000_000, 0)
	for k := range uint64(100) {
		tb.release(tb.acquire(k, now, func() *testEntry { return &testEntry{} }))
	}
	// Long after, new inserts sweep the idle ones a few at a time.
	later := now.Add(time.Hour)
	for k := uint64(1000); k < 1100; k++ {
		tb.release(tb.acquire(k, later, func() *testEntry { return &testEntry{} }))
	}
	if n := tb.len(); n > 120 {
		t.Errorf("%d entries after 100 idle ones should have been swept", n)
	}
}

func TestTableSecondChance(t *testing.T) {
	tb := newTable[*testEntry](4, time.Hour)
	now := time.Unix(1_000_000, 0)
	for k := range uint64(4) {
		tb.release(tb.acquire(k, now, func() *testEntry { return &testEntry{} }))
	}
	// A full pass clears every mark; then key 0 is used again.
	tb.release(tb.acquire(100, now, func() *testEntry { return &testEntry{} }))
	tb.release(tb.acquire(0, now, func() *testEntry { return &testEntry{} }))
	tb.release(tb.acquire(101, now, func() *testEntry { return &testEntry{} }))
	if _, ok := tb.get(0); !ok {
		t.Error("an entry used since the hand passed was dropped before unused ones")
	}
}

// TestTableConcurrent hammers acquire and release on a small table, so that
// entries are dropped while others look them up: a holder must always get
// a live entry, and a dropped entry is never handed out.
func TestTableConcurrent(t *testing.T) {
	tb := newTable[*testEntry](16, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := uint64((g*7 + i) % 64)
				e := tb.acquire(k, time.Now(), func() *testEntry { return &testEntry{} })
				if u := e.users.Load(); u <= 0 {
					t.Errorf("acquired an entry with %d users", u)
				}
				if e.key != k {
					t.Errorf("key %d acquired entry of key %d", k, e.key)
				}
				tb.release(e)
			}
		})
	}
	wg.Wait()
	live := 0
	tb.each(func(e *testEntry) {
		live++
		if u := e.users.Load(); u != 0 {
			t.Errorf("entry left with %d users", u)
		}
	})
	if live != tb.len() {
		t.Errorf("map holds %d entries, size says %d", live, tb.len())
	}
}
