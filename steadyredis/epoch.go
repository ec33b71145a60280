package steadyredis

import (
	"time"

	"github.com/steady-go/steady/store"
)

// Epoch readings: every response's reading of a window that is whole
// again only at its reset goes to the script, not only the newest (see
// reserve.lua, "Fleet epochs"): among the responses to requests sent at
// one moment, which reach the server in any order, the one with the least
// remaining was counted last, and only all of them together tell what
// remains.

// maxEpochReadings bounds the readings that wait to be sent; beyond it the
// oldest are dropped (the newer tell more).
const maxEpochReadings = 256

// epochReading is one response's reading of one window.
type epochReading struct {
	id     string
	limit  int64
	rem    int64
	reset  time.Duration
	issued int64 // the grant's issued count (its moment's base plus its cost); 0 for a cold reservation
	cost   int64
}

// addEpochReadings keeps the readings of st's response that the script
// counts in epochs.
func (p *pending) addEpochReadings(st store.Settlement) {
	o := st.Observed
	if !st.Sent || o == nil || st.Grant.Seq == 0 {
		return
	}
	for _, w := range o.Windows {
		if w.Gradual || w.Remaining < 0 || w.Reset < 0 {
			continue
		}
		r := epochReading{id: w.ID, limit: w.Limit, rem: w.Remaining, reset: w.Reset, issued: w.Issued, cost: 0}
		for j, rw := range st.Windows {
			if rw.ID == w.ID {
				// A refused request (a 429) was not counted.
				if st.Cooldown <= 0 {
					r.cost = max(rw.Cost, 0)
				}
				if r.issued < 0 && j < len(st.Grant.Issued) {
					r.issued = st.Grant.Issued[j]
				}
			}
		}
		if r.issued < 0 {
			continue
		}
		if len(p.epoch) >= maxEpochReadings {
			copy(p.epoch, p.epoch[1:])
			p.epoch = p.epoch[:len(p.epoch)-1]
		}
		p.epoch = append(p.epoch, r)
	}
}

// epochMsg is the readings as the script reads them: ID, limit,
// remaining, reset us, issued, cost.
func epochMsg(rs []epochReading) [][]any {
	if len(rs) == 0 {
		return nil
	}
	m := make([][]any, 0, len(rs))
	for _, r := range rs {
		m = append(m, []any{r.id, r.limit, r.rem, micros(r.reset), r.issued, r.cost})
	}
	return m
}

// shift is a change in what a granted reservation counts in a window
// (given back unsent, or charged its actual cost): the moments issued
// after it begin that much lower or higher.
type shift struct {
	id     string
	issued int64
	d      int64
}

// addShift records a change of d units in window id of the reservation
// issued at issued.
func (p *pending) addShift(id string, issued, d int64) {
	if issued <= 0 || d == 0 {
		return
	}
	if len(p.shifts) >= maxEpochReadings {
		// Too many to tell apart: the oldest merge into the next.
		p.shifts[1].d += p.shifts[0].d
		p.shifts[1].issued = min(p.shifts[1].issued, p.shifts[0].issued)
		copy(p.shifts, p.shifts[1:])
		p.shifts = p.shifts[:len(p.shifts)-1]
	}
	p.shifts = append(p.shifts, shift{id, issued, d})
}

func shiftMsg(ss []shift) [][]any {
	if len(ss) == 0 {
		return nil
	}
	m := make([][]any, 0, len(ss))
	for _, s := range ss {
		m = append(m, []any{s.id, s.issued, s.d})
	}
	return m
}
