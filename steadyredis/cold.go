package steadyredis

import (
	"context"
	"time"

	"github.com/steady-go/steady/store"
)

// The fleet's cold start: while nobody in the fleet has seen a reading of
// a partition, its reservations carry no windows, and the whole fleet may
// have at most the pacer's ColdStart of them unanswered. A reservation
// beyond that asks again, more slowly each time, until a reading is
// shared (then the pacer reserves in the windows it tells) or a slot is
// free.

// Bounds of the interval between two asks of a cold reservation.
const (
	coldPoll    = 20 * time.Millisecond
	coldPollMax = 500 * time.Millisecond
)

// reserveAgain reserves r, asking again while the fleet has no room for
// it yet: a cold reservation beyond the fleet's bound (again after a
// short delay, longer each time), or a request that fits neither a
// window's epoch nor the next (again at the epoch's end). It stops when
// ctx ends, and refuses when r.MaxWait would pass first.
func (s *Store) reserveAgain(ctx context.Context, r store.Reservation) (store.Grant, error) {
	start := s.cfg.now()
	delay := coldPoll
	var lapse error // told by a grant asked again: the final one tells it
	kicked := false // woken by a shared reading rather than by the timer
	for {
		g, again, err := s.reserveOnce(ctx, r)
		if g.Shared && g.Lapse == nil {
			g.Lapse = lapse
		}
		if err != nil || !again {
			if kicked && err == nil && !g.Refused {
				s.part(r.Partition, s.cfg.now()).wake()
			}
			return g, err
		}
		kicked = false
		lapse = g.Lapse
		wait := g.Wait
		if wait <= 0 {
			wait = delay
			delay = min(2*delay, coldPollMax)
		}
		waited := s.cfg.now().Sub(start)
		if r.MaxWait > 0 && waited+wait > r.MaxWait {
			return store.Grant{Wait: waited + wait, Refused: true, Fleet: g.Fleet, Shared: true, Lapse: lapse}, nil
		}
		t := time.NewTimer(wait)
		kick := s.part(r.Partition, s.cfg.now()).kick
		select {
		case <-ctx.Done():
			t.Stop()
			return store.Grant{}, ctx.Err()
		case <-t.C:
		case <-kick:
			// A reading was shared: it may have left room before the
			// epoch's end. If this one finds it, the next is woken too.
			t.Stop()
			kicked = true
		}
	}
}

// coldCounted reports whether a reply granted a reservation in the fleet's
// cold-start count: no reading was shared yet.
func coldCounted(v []any) bool {
	os, _ := v[5].(int64)
	return os == 0
}

// markCold records that the reservation of seq counts in the fleet's
// cold start. pt.mu is held.
func (pt *part) markCold(seq uint64) {
	if pt.cold == nil {
		pt.cold = make(map[uint64]bool)
	}
	if len(pt.cold) < 4096 {
		pt.cold[seq] = true
	}
}

// settleCold takes the end of a cold reservation out of the fleet's count,
// and reports whether it must be sent at once: it is, since the fleet
// waits for it (its slot, or its response's reading). pt.mu is held.
func (pt *part) settleCold(st store.Settlement) bool {
	if !pt.cold[st.Grant.Seq] {
		return false
	}
	delete(pt.cold, st.Grant.Seq)
	pt.pend.cold++
	return true
}
