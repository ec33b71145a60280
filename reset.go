package steady

import "time"

// wholeAgain is what a window may use at its reset, whole being all it
// holds less what is in flight. A reset in whole seconds may be a second
// early (truncated, as some providers send RFC 3339 times or Unix seconds)
// as well as late (rounded up): at such a reset of a window whose kind is
// not known, one request goes first, and its response tells what the
// window holds. Sending the whole window at a truncated reset of a sliding
// window would draw a 429 for nearly every request. A tokens window is
// whole at its reset: what one request costs is only an estimate.
func (w *window) wholeAgain(whole float64) float64 {
	if w.coarse && w.kind == kindUnknown && w.unit == UnitRequests {
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
