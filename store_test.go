package steady

import (
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/store"
)

// TestStoreObservationRoundTrip checks that a response's windows survive
// being shared: read in one process, applied in another.
func TestStoreObservationRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h := http.Header{}
	h.Set("x-ratelimit-limit-requests", "500")
	h.Set("x-ratelimit-remaining-requests", "499")
	h.Set("x-ratelimit-reset-requests", "120ms")
	h.Set("x-ratelimit-limit-tokens", "30000")
	h.Set("x-ratelimit-remaining-tokens", "29000")
	h.Set("x-ratelimit-reset-tokens", "2s")
	rl := ratelimit.Parse(h, now)
	if len(rl.Windows) != 2 {
		t.Fatalf("parsed %d windows, want 2", len(rl.Windows))
	}
	o := storeObservation(rl, now)
	if o == nil || len(o.Windows) != 2 || o.Windows[1].Reset != 2*time.Second || o.Windows[0].Issued != -1 {
		t.Fatalf("observation %+v", o)
	}
	later := now.Add(time.Minute)
	got := observedLimits(o, later)
	for i := range rl.Windows {
		rl.Windows[i].Reset = rl.Windows[i].Reset.Add(time.Minute)
	}
	if !reflect.DeepEqual(got.Windows, rl.Windows) {
		t.Errorf("round trip\n got %+v\nwant %+v", got.Windows, rl.Windows)
	}
	if storeObservation(ratelimit.Limits{}, now) != nil {
		t.Error("observation of no windows, want nil")
	}
	bad := &store.Observation{Windows: []store.ObservedWindow{{ID: "bogus", Limit: 5}, {ID: "requests:x", Limit: -7, Remaining: -9, Reset: -1}}}
	if got := observedLimits(bad, now).Windows; len(got) != 1 || got[0].Limit != -1 || got[0].Remaining != -1 || !got[0].Reset.IsZero() {
		t.Errorf("bad reading gave %+v, want one window with unknowns", got)
	}
}
