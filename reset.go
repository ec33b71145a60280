package steady

import "github.com/steady-go/steady/ratelimit"

import "time"

// wholeAgain is what a window may use at its reset, whole being all it
// holds less what is in flight. A reset in whole seconds may be a second
// early (truncated, as some providers send RFC 3339 times or Unix seconds)
// as well as late (rounded up): at such a reset of a window whose kind is
// not known, one request goes first, and its response tells what the
// window holds. Only resets at whole seconds of the clock (Unix seconds,
// RFC 3339 times) are seen truncated; a delta in whole seconds (the IETF
// fields' t=) counts from the response and is rounded up. Sending the whole window at a truncated reset of a sliding
// window would draw a 429 for nearly every request. A tokens window is
// whole at its reset: what one request costs is only an estimate.
func (w *window) wholeAgain(whole float64) float64 {
	if w.coarse && w.absRun >= 8 && w.kind == kindUnknown && w.unit == ratelimit.UnitRequests {
		return min(whole, 1)
	}
	return whole
}

// wholeSecond reports whether d is a whole number of seconds, give or
// take a microsecond: an epoch-seconds reset read against a clock with
// nanoseconds carries a float's rounding.
func wholeSecond(d time.Duration) bool {
	r := d % time.Second
	return r < 0 && r > -time.Microsecond || r >= 0 && (r < time.Microsecond || r > time.Second-time.Microsecond)
}

// absWholeRun counts resets that fall on a whole second of the clock while
// not a whole number of seconds from now: an absolute time in seconds, not
// a delta. A reset that is both tells nothing; one that is neither ends
// the run.
func absWholeRun(run uint8, reset, now time.Time) uint8 {
	abs, delta := wholeSecond(time.Duration(reset.Nanosecond())), wholeSecond(reset.Sub(now))
	switch {
	case abs && !delta:
		return min(run+1, 8)
	case !abs:
		return 0
	}
	return run
}
