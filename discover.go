package steady

import (
	"math"
	"time"
)

// Rate discovery for partitions whose provider announces no limits: a
// gateway's leaky bucket, a proxy's window, a bare 429. The discoverer
// finds the rate the way congestion control finds a link's: a slow start
// grows the pace while requests are accepted; a 429 cuts it to just under
// the rate the server accepts; the pace holds there and then probes upward
// (cubic: flat near the known rate, then doubling in a few seconds) so that
// a raised limit is found.
//
// It differs from the AWS SDKs' adaptive retry mode (a CUBIC rate fed by
// the client's own sending rate in half-second buckets, cut to 0.7 of it,
// with an absolute growth constant) in what it measures and how it reads
// it:
//   - It measures what the server ACCEPTED, over the last half second or
//     eight requests, and restarts the measurement at each crossing: while
//     the server refuses, what it accepts is its limit. A cut is therefore
//     to a measured rate, not a fraction of the previous guess, and 429s
//     that were in flight when the pace was cut are recognised (they were
//     sent before it) and change nothing.
//   - At a fresh crossing the measured rate lags a rising pace; the
//     estimate is corrected by the pace's growth over the measurement.
//   - Its probe is relative to the rate and spans at least discoverCycle
//     requests, so a limit of 1/s and one of 1000/s cost the same share of
//     429s to hold.
//   - A Retry-After of discoverGateMin or more means a window (10 s, a
//     minute): the whole partition pauses until it reopens, and resumes at
//     the rate accepted over the window's cycle. Shorter hints (a
//     per-second bucket's 50 ms, rounded up to "1") only cut the pace;
//     429s in a row back off exponentially.
//
// A discoverer only shapes when requests go: nothing it guesses ever
// refuses a call. It has no lock and starts no goroutine: the partition's
// mutex guards it. It takes 88 bytes, and its zero value is a cold
// discoverer, ready to use.

// Tuning of the discoverer. Times are in seconds, rates in requests a
// second.
const (
	// discoverInitRate is the pace of a cold partition before its first
	// answer: a few requests, not the whole queue.
	discoverInitRate = 4.0
	// discoverMinRate is the slowest pace: one request a minute.
	discoverMinRate = 1.0 / 60
	// discoverMaxRate bounds the pace of a partition that never meets a
	// limit; the pacer treats it as unlimited.
	discoverMaxRate = 1e6
	// discoverTau is the shortest time constant of the accepted-rate
	// measurement; a slow rate is measured over discoverSample requests.
	discoverTau    = 0.5
	discoverSample = 8.0
	// discoverCycle is the fewest requests, at the rate last accepted, a
	// climb back to it spans: a slow rate is probed as often in requests
	// as a fast one, so that probing costs the same share of 429s.
	discoverCycle = 25.0
	// discoverSlowStart is how much each acceptance raises the pace
	// before the first 429 (requests a second): the pace doubles about
	// every 0.7 s of acceptances, as TCP's slow start doubles a window
	// each round trip. At the first 429 the pace is halved, as TCP does.
	discoverSlowStart = 1.0
	// discoverBeta is the fraction of the measured accepted rate the pace
	// is cut to on a 429.
	discoverBeta = 0.85
	// discoverHold is how long after a cut the pace takes to climb back
	// to the rate last accepted (CUBIC's K), flattening as it nears it.
	discoverHold = 2.5
	// discoverProbe is how long after passing the rate last accepted the
	// probe takes to double it (cubic growth: slow first, then fast).
	discoverProbe = 2.5
	// discoverFresh is how long after a 429 another one is read as a
	// new crossing of the limit rather than the same saturation (at
	// least discoverSample/2 requests at the rate last accepted).
	discoverFresh = 1.0
	// discoverSaturated is the cut of the estimate for each further 429
	// while the server refuses in a row.
	discoverSaturated = 0.7
	// discoverWarm is how many acceptances make a cold partition warm
	// without a 429: enough to have measured a rate.
	discoverWarm = 16
	// discoverGateMin is the shortest Retry-After read as the sign of a
	// window: the pause is honoured for the whole partition. Shorter
	// hints (Retry-After: 1, the rounding of a per-second bucket's 50 ms)
	// only cut the rate, unless 429s follow in a row.
	discoverGateMin = 1500 * time.Millisecond
	// discoverMaxGate bounds a pause taken from Retry-After or from a
	// run of bare 429s.
	discoverMaxGate = 10 * time.Minute
)

// discoverer discovers one partition's rate from the outcomes of its
// requests. Times are Unix nanoseconds; zero means never.
type discoverer struct {
	rate  float64 // pace, requests a second; 0: cold, not yet started
	ceil  float64 // accepted rate measured at the last 429: 0 before any
	acc   float64 // acceptances, decayed with time constant tau()
	accAt int64   // when acc was last decayed
	since int64   // start of the current measurement (first acceptance, or end of a pause)
	epoch int64   // start of the current climb: the last cut, or the end of the pause after it
	gate  int64   // no request before this (a window's pause)
	last  int64   // when the last request was sent
	cycle int64   // start of the current window cycle: the end of the last window's pause
	inCyc uint32  // acceptances in the current window cycle, saturating
	n     uint32  // acceptances, saturating
	run   uint16  // 429s in a row, without an acceptance between
	okM   uint16  // acceptances since the measurement began, saturating
	noM   uint16  // refusals since the measurement began, saturating
}

// start makes a zero discoverer ready: cold, at the initial pace.
func (d *discoverer) start() {
	if d.rate == 0 {
		d.rate = discoverInitRate
	}
}

// warm reports whether the discoverer has evidence of the rate: a 429 has
// measured it, or enough acceptances have. Until then the pacer keeps the
// partition to a few requests in flight, whatever the pace says.
func (d *discoverer) warm() bool {
	return d.ceil > 0 || d.n >= discoverWarm
}

// tau returns the time constant of the measurement, in seconds: half a
// second, or discoverSample requests at the rate last accepted.
func (d *discoverer) tau() float64 {
	if d.ceil <= 0 {
		return discoverTau
	}
	return math.Max(discoverTau, discoverSample/d.ceil)
}

// measured returns the accepted rate over the last second or so, in
// requests a second: the decayed count of acceptances over the decayed
// time they were counted in (so that a measurement a fraction of a second
// old is not biased low).
func (d *discoverer) measured(now int64) float64 {
	if d.since == 0 || now <= d.since {
		return 0
	}
	tau := d.tau()
	acc := d.acc * math.Exp(-float64(now-d.accAt)/(tau*1e9))
	span := tau * -math.Expm1(-float64(now-d.since)/(tau*1e9))
	// A measurement younger than a tenth of a second says little: count it
	// over a tenth at least.
	return acc / math.Max(span, 0.1)
}

// restart begins a new measurement of the accepted rate at t.
func (d *discoverer) restart(t int64) {
	d.since, d.acc, d.accAt, d.okM, d.noM = t, 0, t, 0, 0
}

// onAccepted counts a request the server accepted, answered at now.
func (d *discoverer) onAccepted(now time.Time) {
	d.start()
	t := now.UnixNano()
	if d.since == 0 {
		d.since, d.accAt = t, t
	}
	if t > d.accAt {
		d.acc *= math.Exp(-float64(t-d.accAt) / (d.tau() * 1e9))
		d.accAt = t
	}
	d.acc++
	d.okM = min(d.okM+1, math.MaxUint16-1)
	if d.n < math.MaxUint32 {
		d.n++
	}
	if d.inCyc < math.MaxUint32 {
		d.inCyc++
	}
	if d.cycle == 0 {
		d.cycle = t
	}
	d.run = 0
	var target float64
	if d.ceil == 0 {
		// Slow start: every acceptance raises the pace.
		target = d.rate + discoverSlowStart
	} else {
		target = d.ceil * d.climb(t)
	}
	if target > d.rate {
		// Grow no faster than twice what is being accepted: a partition
		// that sends little does not build a pace it never tested.
		m := d.measured(t)
		d.rate = math.Max(d.rate, math.Min(target, math.Max(2*m, discoverInitRate)))
	}
	d.rate = math.Min(d.rate, discoverMaxRate)
}

// climb is the pace, as a multiple of the rate last accepted, at t after a
// cut: from discoverBeta back to 1 over discoverHold, flattening as it
// nears it, then doubling over discoverProbe, slowly at first.
func (d *discoverer) climb(t int64) float64 {
	s := float64(t-max(d.epoch, d.gate)) / 1e9
	if d.ceil > 0 {
		// Slow rates climb over as many requests as fast ones.
		s /= math.Max(1, discoverCycle/(d.ceil*discoverHold))
	}
	if s < 0 {
		return discoverBeta
	}
	if s < discoverHold {
		x := (discoverHold - s) / discoverHold
		return 1 - (1-discoverBeta)*x*x*x
	}
	x := (s - discoverHold) / discoverProbe
	return 1 + x*x*x
}

// onThrottled counts a 429 answered at now to a request sent at sent,
// with the Retry-After the response carried, if any. A 429 to a request
// sent before the last cut is old news: it was in flight when the pace
// was cut, and only its Retry-After counts.
func (d *discoverer) onThrottled(sent, now time.Time, retryAfter time.Duration, hasRetryAfter bool) {
	d.start()
	t := now.UnixNano()
	if sent.UnixNano() < d.epoch {
		d.noM = min(d.noM+1, math.MaxUint16-1)
		if hasRetryAfter && retryAfter >= discoverGateMin {
			d.pause(t, retryAfter)
		}
		return
	}
	if d.run < math.MaxUint16 {
		d.run++
	}
	if hasRetryAfter && retryAfter >= discoverGateMin {
		d.window(t, retryAfter)
		return
	}
	m := d.measured(t)
	switch {
	case m <= 0:
		// Nothing accepted lately: only the pace can be cut.
		d.ceil = math.Max(d.ceil, d.rate) * discoverBeta
	case d.ceil == 0 || t-d.epoch >= int64(1e9*math.Max(discoverFresh, discoverSample/2/d.ceil)):
		// The first 429 in a while: the pace just crossed the limit,
		// which lies between what was accepted and the pace. The
		// accepted rate is measured over the last tau(), so it lags a
		// rising pace by the pace's growth over that time; but it also
		// counts a bucket's stored burst, drained by the climb. Take
		// the middle (geometric) of the accepted rate and the corrected
		// one.
		if d.ceil == 0 {
			// The end of slow start: as TCP does, believe half the pace,
			// which the acceptances have shown.
			d.ceil = math.Max(d.rate/2, m)
		} else {
			growth := d.climb(t) / d.climb(t-int64(d.tau()*1e9))
			d.ceil = math.Sqrt(m * math.Min(d.rate, m*min(max(growth, 1), 2)))
		}
		// From here, measure what the server accepts while it refuses:
		// its limit.
		d.restart(t)
	case t-d.since < int64(d.tau()*1e9):
		// Refused again, too soon to have measured the rate the server
		// accepts while it refuses; the share it accepted tells it.
		d.noM = min(d.noM+1, math.MaxUint16-1)
		d.ceil *= discoverBeta
		if n := float64(d.okM) + float64(d.noM); n >= 4 {
			d.ceil = math.Min(d.ceil, math.Max(d.rate*float64(d.okM)/n, m))
		}
	default:
		// Refused again: the server is saturated, and accepts at its
		// limit. Cut the estimate until the accepted rate holds it.
		d.ceil = math.Max(math.Min(d.ceil*discoverSaturated, 1.5*m), m)
	}
	d.epoch = t
	d.ceil = math.Max(d.ceil, discoverMinRate)
	d.rate = math.Max(math.Min(d.rate, discoverBeta*d.ceil), discoverMinRate)
	if d.run >= 2 {
		// 429s in a row: back off exponentially, in slots of the pace,
		// no further than a hint says.
		p := time.Duration(math.Min(float64(time.Second)/d.rate*float64(uint64(1)<<min(d.run-1, 20)), float64(discoverMaxGate)))
		if hasRetryAfter && retryAfter > 0 {
			p = min(p, retryAfter)
		}
		d.pause(t, p)
	}
}

// window handles a 429 whose Retry-After is long enough to mean a window
// (seconds to minutes): nothing will be accepted before it reopens, so
// every request pauses until then, and the window's rate is what was
// accepted over the cycle that ends then, from the end of the previous
// pause. The pace resumes at that rate and climbs from there: a fixed
// window is used up early in its span, a sliding one is paced about as
// its slots free.
func (d *discoverer) window(t int64, retryAfter time.Duration) {
	end := t + int64(min(retryAfter, discoverMaxGate))
	if d.cycle != 0 && end > d.cycle {
		sustained := float64(d.inCyc) / (float64(end-d.cycle) / 1e9)
		d.ceil = math.Max(sustained, discoverMinRate)
		d.rate = d.ceil
	}
	d.cycle, d.inCyc = end, 0
	d.epoch = t
	d.pause(t, retryAfter)
	// Measure afresh when the window reopens.
	d.restart(end)
}

// pause stops every request until p after t.
func (d *discoverer) pause(t int64, p time.Duration) {
	d.gate = max(d.gate, t+int64(min(p, discoverMaxGate)))
}

// next returns when the next request may be sent: not before the end of a
// pause, nor before one slot at the current pace after the last one sent.
func (d *discoverer) next(now time.Time) time.Time {
	d.start()
	t := max(now.UnixNano(), d.gate)
	if d.last != 0 {
		t = max(t, d.last+int64(1e9/d.rate))
	}
	return time.Unix(0, t)
}

// sent records a request sent at now: the next one waits a slot at the
// pace in force when it goes.
func (d *discoverer) sent(now time.Time) {
	d.last = max(d.last, now.UnixNano())
}

// estimate returns the pace, in requests a second, and whether it rests
// on evidence (see warm): what a snapshot shows.
func (d *discoverer) estimate() (perSecond float64, warm bool) {
	d.start()
	return d.rate, d.warm()
}
