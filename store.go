package steady

import (
	"time"

	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/store"
)

// The pacer's side of the store seam (package store): what a response
// announced, turned into a reading to share and back.

// storeObservation returns what a response's headers announced, read at
// now, as a reading to share; nil when they announced no window.
func storeObservation(rl ratelimit.Limits, now time.Time) *store.Observation {
	var o *store.Observation
	for _, w := range rl.Windows {
		if w.Unit < ratelimit.UnitRequests || w.Unit > ratelimit.UnitOutputTokens {
			continue
		}
		if o == nil {
			o = &store.Observation{Windows: make([]store.ObservedWindow, 0, len(rl.Windows))}
		}
		reset := time.Duration(-1)
		if !w.Reset.IsZero() {
			reset = min(max(w.Reset.Sub(now), 0), maxHint)
		}
		o.Windows = append(o.Windows, store.ObservedWindow{ID: store.WindowID(w.Unit, w.Name),
			Limit: w.Limit, Remaining: w.Remaining, Reset: reset, Period: max(w.Period, 0), Issued: -1})
	}
	return o
}

// observedLimits returns a shared reading as the windows a response would
// have announced at now, so that the pacer applies it as its own. Windows
// whose ID it cannot read are left out; values out of range read as
// unknown.
func observedLimits(o *store.Observation, now time.Time) ratelimit.Limits {
	var rl ratelimit.Limits
	if o == nil {
		return rl
	}
	for _, sw := range o.Windows {
		u, name, ok := store.ParseWindowID(sw.ID)
		if !ok {
			continue
		}
		w := ratelimit.Window{Unit: u, Name: name, Limit: max(sw.Limit, -1), Remaining: max(sw.Remaining, -1), Period: max(sw.Period, 0)}
		if sw.Reset >= 0 {
			w.Reset = now.Add(min(sw.Reset, maxHint))
		}
		rl.Windows = append(rl.Windows, w)
	}
	return rl
}
