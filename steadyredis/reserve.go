package steadyredis

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/steady-go/steady/store"
)

// Reserve reserves a request's turn in its partition's shared budget: one
// round trip to Redis, carrying what earlier responses told. When Redis
// does not answer in time the turn is decided locally, at this process's
// share of the limits. The error is non-nil only when ctx has ended.
func (s *Store) Reserve(ctx context.Context, r store.Reservation) (store.Grant, error) {
	if err := ctx.Err(); err != nil {
		return store.Grant{}, err
	}
	return s.reserveAgain(ctx, r)
}

// reserveOnce is one reservation; again reports a cold reservation the
// fleet has no room for yet.
func (s *Store) reserveOnce(ctx context.Context, r store.Reservation) (g store.Grant, again bool, err error) {
	now := s.cfg.now()
	pt := s.part(r.Partition, now)
	pt.mu.Lock()
	pt.lastUsed = now
	pt.mu.Unlock()
	local, cause := pt.localOnly(now)
	switch {
	case local:
	case s.begin(now):
		pt.mu.Lock()
		pend := pt.takeLocked()
		pt.mu.Unlock()
		v, err := s.run(ctx, pt.keys, s.args(r, s.encode(pend, 0, 0, false)))
		if err == nil && len(pend.epoch) > 0 {
			pt.wake()
		}
		if err != nil && ctx.Err() != nil {
			s.abort()
			return store.Grant{}, false, ctx.Err()
		}
		if err == nil {
			g, again, err = parseGrant(v, len(r.Windows))
		}
		s.end(s.settled(pt, err, s.cfg.now()), s.cfg.now())
		if err == nil {
			pt.mu.Lock()
			pt.fleet = g.Fleet
			if !again && r.ColdStart > 0 && len(r.Windows) == 0 && coldCounted(v) {
				pt.markCold(g.Seq)
			}
			pt.mu.Unlock()
			g.Lapse = s.takeLapse(pt)
			return g, again, nil
		}
		cause = err
	default:
		cause = s.localCause()
	}
	g = pt.reserveLocal(r, s.cfg.fleetHint, s.cfg.now())
	g.Err = cause
	if lapse := s.takeLapse(pt); g.Err == nil {
		g.Err = lapse
	}
	return g, false, nil
}

// Settle records how a reservation ended. A cooldown, a breaker opening
// and a successful probe are sent at once (one round trip, within the
// timeout, even when ctx has ended); the rest waits for the partition's
// next reservation, or the flush delay. A settlement of an empty
// Partition.Key with BreakerOpen only opens the upstream's circuit.
func (s *Store) Settle(ctx context.Context, st store.Settlement) {
	now := s.cfg.now()
	pt := s.part(st.Partition, now)
	pt.mu.Lock()
	pt.lastUsed = now
	if st.Cooldown > 0 {
		if until := now.Add(st.Cooldown); until.After(pt.cool) {
			pt.cool = until
		}
	}
	urgentCold := false
	if st.Grant.Shared {
		pt.pend.add(st)
		urgentCold = pt.settleCold(st)
	} else {
		pt.settleLocal(st, s.cfg.fleetHint)
	}
	closeProbe := st.BreakerClosed && st.Grant.Breaker == store.BreakerHalfOpen
	if st.Sent && s.cfg.fleetFailures > 0 {
		pt.pend.outcome(st.Failed)
	}
	if !urgentCold && st.Cooldown <= 0 && st.BreakerOpen <= 0 && !closeProbe && !(st.Failed && st.Sent && s.cfg.fleetFailures > 0) {
		if !pt.pend.empty() && pt.timer == nil {
			pt.timer = time.AfterFunc(s.cfg.flushDelay, func() { s.flush(pt) })
		}
		pt.mu.Unlock()
		return
	}
	pend := pt.takeLocked()
	pt.mu.Unlock()
	if local, _ := pt.localOnly(now); local || !s.begin(now) {
		return
	}
	// What a response told is shared even when its caller has gone.
	_, err := s.run(context.WithoutCancel(ctx), pt.keys, s.settleArgs(s.encode(pend, st.Cooldown, st.BreakerOpen, closeProbe)))
	if err == nil && len(pend.epoch) > 0 {
		pt.wake()
	}
	s.end(s.settled(pt, err, s.cfg.now()), s.cfg.now())
}

// flush sends what waits to be sent for pt.
func (s *Store) flush(pt *part) {
	pt.mu.Lock()
	pt.timer = nil
	pend := pt.takeLocked()
	pt.mu.Unlock()
	if local, _ := pt.localOnly(s.cfg.now()); pend.empty() || local || !s.begin(s.cfg.now()) {
		return
	}
	_, err := s.run(context.Background(), pt.keys, s.settleArgs(s.encode(pend, 0, 0, false)))
	if err == nil && len(pend.epoch) > 0 {
		pt.wake()
	}
	s.end(s.settled(pt, err, s.cfg.now()), s.cfg.now())
}

// abort ends a call that its caller's context cut short: it tells nothing
// about Redis.
func (s *Store) abort() {
	s.mu.Lock()
	s.probing = false
	s.mu.Unlock()
	s.calls.Done()
}

// pending is what responses told that waits to be sent.
type pending struct {
	units map[string]int64 // cost to charge (or give back, negative) per window
	obs   *store.Observation
	// The upstream's failures in a row since the last success, and
	// whether a success ended the fleet's run before them.
	fails int64
	ok    bool
	// threshold and openFor (us) open the fleet's circuit after that
	// many failures in a row; set when encoding.
	threshold, openFor int64
	// cold is how many of the fleet's cold reservations ended.
	cold int64
	// epoch is every reading of a window counted in epochs, and shifts
	// the changes in what granted reservations count (epoch.go).
	epoch  []epochReading
	shifts []shift
}

func (p *pending) empty() bool {
	return len(p.units) == 0 && p.obs == nil && p.fails == 0 && !p.ok && p.cold == 0 && len(p.epoch) == 0 && len(p.shifts) == 0
}

// outcome records whether a sent attempt failed at the upstream.
func (p *pending) outcome(failed bool) {
	if failed {
		p.fails++
	} else {
		p.ok, p.fails = true, 0
	}
}

// encode returns the settlement JSON with the store's fleet breaker
// settings, or "" when there is nothing.
func (s *Store) encode(p pending, cool, open time.Duration, closed bool) string {
	if p.fails > 0 {
		p.threshold, p.openFor = int64(s.cfg.fleetFailures), micros(s.cfg.fleetOpen)
	}
	return encodeSettle(p, cool, open, closed)
}

// add merges a shared reservation's settlement.
func (p *pending) add(st store.Settlement) {
	for i, w := range st.Windows {
		d := int64(0)
		switch {
		case w.Cost <= 0 || w.Rate <= 0:
		case !st.Sent:
			d = -w.Cost
		case st.Cooldown > 0 && (i >= len(st.Actual) || st.Actual[i] < 0):
			// Refused (a 429, or a hint to wait): the server did not
			// count it, and the fleet's count of what it spent must not
			// either, or it would read the others' use as its own.
			d = -w.Cost
		case i < len(st.Actual) && st.Actual[i] >= 0:
			d = st.Actual[i] - w.Cost
		}
		if d != 0 {
			if p.units == nil {
				p.units = make(map[string]int64)
			}
			p.units[w.ID] += d
			if i < len(st.Grant.Issued) {
				p.addShift(w.ID, st.Grant.Issued[i], d)
			}
		}
	}
	p.addEpochReadings(st)
	o := st.Observed
	if !st.Sent || o == nil || len(o.Windows) == 0 || st.Grant.Seq == 0 {
		return
	}
	if p.obs != nil && p.obs.Seq >= st.Grant.Seq {
		return // a newer reading waits already
	}
	c := &store.Observation{Seq: st.Grant.Seq, Windows: make([]store.ObservedWindow, len(o.Windows))}
	copy(c.Windows, o.Windows)
	for i := range c.Windows {
		w := &c.Windows[i]
		if w.Issued >= 0 {
			continue // stated by the caller
		}
		w.Issued = -1
		for j, rw := range st.Windows {
			if rw.ID == w.ID && j < len(st.Grant.Issued) {
				w.Issued = st.Grant.Issued[j]
			}
		}
	}
	p.obs = c
}

// takeLocked returns what waits to be sent and forgets it. pt.mu is held.
func (pt *part) takeLocked() pending {
	p := pt.pend
	pt.pend = pending{}
	return p
}

// settleMsg is a settlement as the script reads it.
type settleMsg struct {
	U [][2]any `json:"u,omitempty"` // window ID, units
	O *obsMsg  `json:"o,omitempty"`
	C int64    `json:"c,omitempty"` // cooldown, us
	T int64    `json:"t,omitempty"` // breaker open, us
	K bool     `json:"k,omitempty"` // probe succeeded
	F int64    `json:"f,omitempty"` // failures in a row at the upstream
	R bool     `json:"r,omitempty"` // a success ended the run of failures first
	N int64    `json:"n,omitempty"` // failures in a row that open the circuit
	D int64    `json:"d,omitempty"` // how long they open it, us
	Q int64    `json:"q,omitempty"` // cold reservations ended
	E [][]any  `json:"e,omitempty"` // readings of windows counted in epochs (epoch.go)
	V [][]any  `json:"v,omitempty"` // window ID, issued, units: changes of granted reservations
}

type obsMsg struct {
	S uint64  `json:"s"`
	W [][]any `json:"w"` // ID, limit, remaining, reset us (-1 unknown), issued (-1 unknown), period us (0 unknown), gradual 0/1
}

// encodeSettle returns the settlement JSON, or "" when there is nothing.
func encodeSettle(p pending, cool, open time.Duration, closed bool) string {
	if p.empty() && cool <= 0 && open <= 0 && !closed {
		return ""
	}
	m := settleMsg{C: micros(cool), T: micros(open), K: closed, F: p.fails, R: p.ok, N: p.threshold, D: p.openFor, Q: p.cold, E: epochMsg(p.epoch), V: shiftMsg(p.shifts)}
	for id, n := range p.units {
		m.U = append(m.U, [2]any{boundID(id), n})
	}
	if p.obs != nil {
		m.O = &obsMsg{S: p.obs.Seq}
		for _, w := range p.obs.Windows[:min(len(p.obs.Windows), maxObserved)] {
			reset := int64(-1)
			if w.Reset >= 0 {
				reset = micros(w.Reset)
			}
			gradual := 0
			if w.Gradual {
				gradual = 1
			}
			m.O.W = append(m.O.W, []any{boundID(w.ID), w.Limit, w.Remaining, reset, w.Issued, micros(w.Period), gradual})
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "" // unreachable: only strings and numbers
	}
	return string(b)
}

func micros(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(d / time.Microsecond)
}

// args are the script's arguments for a reservation.
func (s *Store) args(r store.Reservation, settle string) []any {
	maxWait := int64(-1)
	if r.MaxWait > 0 {
		maxWait = int64(r.MaxWait / time.Microsecond)
	}
	a := make([]any, 0, 8+4*len(r.Windows))
	a = append(a, s.cfg.instance, s.cfg.keyTTL.Milliseconds(), settle, len(r.Windows), maxWait,
		strconv.FormatUint(r.ObservedSeq, 10), s.cfg.heartbeatTTL.Microseconds(), s.cfg.probeTimeout.Microseconds())
	for _, w := range r.Windows {
		rate := w.Rate
		if math.IsNaN(rate) || math.IsInf(rate, 0) || rate < 0 {
			rate = 0
		}
		burst := max(w.Burst, 1)
		if w.Burst < 0 {
			burst = w.Burst // a window counted in epochs
		}
		a = append(a, boundID(w.ID), max(w.Cost, 0), strconv.FormatFloat(rate, 'g', -1, 64), burst)
	}
	if r.ColdStart > 0 && len(r.Windows) == 0 {
		a = append(a, "cold", r.ColdStart)
	}
	for i, w := range r.Windows {
		if w.Keep > 0 && w.Cost > 0 {
			a = append(a, "k"+strconv.Itoa(i+1), w.Keep)
		}
	}
	return s.clockArg(a)
}

// settleArgs are the script's arguments for a settlement alone.
func (s *Store) settleArgs(settle string) []any {
	return s.clockArg([]any{s.cfg.instance, s.cfg.keyTTL.Milliseconds(), settle, -1, -1, "0",
		s.cfg.heartbeatTTL.Microseconds(), s.cfg.probeTimeout.Microseconds()})
}

// clockArg appends the store's clock to a script's arguments when the
// script is to read it rather than Redis's (a test's fake clock).
func (s *Store) clockArg(a []any) []any {
	if s.cfg.scriptClock {
		a = append(a, "now", s.cfg.now().UnixMicro())
	}
	return a
}

// parseGrant reads the script's reply to a reservation of n windows.
func parseGrant(v []any, n int) (g store.Grant, again bool, err error) {
	if len(v) < 8 {
		return store.Grant{}, false, fmt.Errorf("%w: reply of %d values, want at least 8", ErrScript, len(v))
	}
	ints := make([]int64, len(v))
	for i, x := range v {
		if i == 6 {
			continue
		}
		k, ok := x.(int64)
		if !ok {
			return store.Grant{}, false, fmt.Errorf("%w: reply value %d is %T, want an integer", ErrScript, i, x)
		}
		ints[i] = k
	}
	g = store.Grant{
		Wait:    time.Duration(max(ints[0], 0)) * time.Microsecond,
		Refused: ints[1] == 1,
		Seq:     uint64(max(ints[2], 0)),
		Fleet:   int(max(ints[4], 1)),
		Shared:  true,
	}
	switch ints[3] {
	case 1:
		g.Breaker = store.BreakerHalfOpen
	case 2:
		g.Breaker = store.BreakerOpen
	}
	if blob, _ := v[6].(string); blob != "" {
		o, err := parseObservation(uint64(max(ints[5], 0)), blob, time.Duration(max(ints[7], 0))*time.Microsecond)
		if err != nil {
			return store.Grant{}, false, err
		}
		g.Observed = o
	}
	if ints[1] == 2 {
		return g, true, nil // a cold reservation to ask again
	}
	if len(v) == 8+n && ints[1] == 0 && ints[3] != 2 {
		g.Issued = ints[8:]
	}
	return g, false, nil
}

// parseObservation reads a stored observation published age ago.
func parseObservation(seq uint64, blob string, age time.Duration) (*store.Observation, error) {
	d := json.NewDecoder(bytes.NewReader([]byte(blob)))
	d.UseNumber()
	var ws [][]any
	if err := d.Decode(&ws); err != nil {
		return nil, fmt.Errorf("%w: stored observation: %w", ErrScript, err)
	}
	o := &store.Observation{Seq: seq, Windows: make([]store.ObservedWindow, 0, len(ws))}
	for _, w := range ws {
		if len(w) < 5 {
			continue
		}
		id, _ := w[0].(string)
		limit, _ := number(w[1])
		rem, _ := number(w[2])
		reset, _ := number(w[3])
		iss, _ := number(w[4])
		ow := store.ObservedWindow{ID: id, Limit: limit, Remaining: rem, Reset: -1, Issued: iss}
		if len(w) > 5 {
			if p, ok := number(w[5]); ok && p > 0 {
				ow.Period = time.Duration(p) * time.Microsecond
			}
		}
		if len(w) > 6 {
			g, _ := number(w[6])
			ow.Gradual = g == 1
		}
		if reset >= 0 {
			ow.Reset = max(time.Duration(reset)*time.Microsecond-age, 0)
		}
		o.Windows = append(o.Windows, ow)
	}
	return o, nil
}

func number(x any) (int64, bool) {
	n, ok := x.(json.Number)
	if !ok {
		return -1, false
	}
	if i, err := n.Int64(); err == nil {
		return i, true
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f > math.MaxInt64/2 || f < math.MinInt64/2 {
		return -1, false
	}
	return int64(f), true
}

// reserveLocal decides a turn in this process alone, at its share of each
// window: the rate and burst divided by the fleet's size.
func (pt *part) reserveLocal(r store.Reservation, hint int, now time.Time) store.Grant {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	fleet := pt.fleet
	if fleet <= 0 {
		fleet = hint
	}
	start := now
	if pt.cool.After(start) {
		start = pt.cool
	}
	goAt := start
	tats := make([]time.Time, len(r.Windows))
	for i, w := range r.Windows {
		per, burst, ok := share(w, fleet)
		if !ok || w.Cost <= 0 {
			continue
		}
		tat := pt.local[w.ID]
		if tat.Before(start) {
			tat = start
		}
		tats[i] = tat
		if g := tat.Add(span(float64(w.Cost)-burst, per)); g.After(goAt) {
			goAt = g
		}
	}
	// Every window is charged when the request goes.
	for i, w := range r.Windows {
		if per, _, ok := share(w, fleet); ok && !tats[i].IsZero() {
			if tats[i].Before(goAt) {
				tats[i] = goAt
			}
			tats[i] = tats[i].Add(span(float64(w.Cost), per))
		}
	}
	wait := goAt.Sub(now)
	g := store.Grant{Wait: wait, Fleet: fleet}
	if r.MaxWait > 0 && wait > r.MaxWait {
		g.Refused = true
		return g
	}
	for i, w := range r.Windows {
		if !tats[i].IsZero() {
			pt.local[w.ID] = tats[i]
		}
	}
	return g
}

// settleLocal gives back or charges what a local reservation cost.
func (pt *part) settleLocal(st store.Settlement, hint int) {
	fleet := pt.fleet
	if fleet <= 0 {
		fleet = hint
	}
	for i, w := range st.Windows {
		per, _, ok := share(w, fleet)
		if !ok || w.Cost <= 0 {
			continue
		}
		d := int64(0)
		switch {
		case !st.Sent:
			d = -w.Cost
		case st.Cooldown > 0 && (i >= len(st.Actual) || st.Actual[i] < 0):
			// Refused (a 429, or a hint to wait): the server did not
			// count it, and the fleet's count of what it spent must not
			// either, or it would read the others' use as its own.
			d = -w.Cost
		case i < len(st.Actual) && st.Actual[i] >= 0:
			d = st.Actual[i] - w.Cost
		}
		if tat, ok := pt.local[w.ID]; ok && d != 0 {
			pt.local[w.ID] = tat.Add(span(float64(d), per))
		}
	}
}

// share returns the seconds per unit and the burst of one process's share
// of window w in a fleet of n.
func share(w store.Window, n int) (per, burst float64, ok bool) {
	if !(w.Rate > 0) || math.IsInf(w.Rate, 0) {
		return 0, 0, false
	}
	return float64(n) / w.Rate, max(float64(w.Burst)/float64(n), 1), true
}

// span is n units at per seconds each, bounded so that it cannot
// overflow.
func span(n, per float64) time.Duration {
	s := n * per * float64(time.Second)
	const bound = float64(100 * 365 * 24 * time.Hour)
	return time.Duration(min(max(s, -bound), bound))
}

// Every string the store keeps in Redis is bounded: a window ID longer
// than maxIDLen bytes (steady's own are far shorter: it bounds window
// names from headers) is kept as its start and a hash of the whole, so
// that it stays the same in every process and distinct from others; an
// observation keeps at most maxObserved windows.
const (
	maxIDLen    = 128
	maxObserved = 16
)

func boundID(id string) string {
	if len(id) <= maxIDLen {
		return id
	}
	h := sha256.Sum256([]byte(id))
	return id[:maxIDLen-17] + "~" + hex.EncodeToString(h[:8])
}
