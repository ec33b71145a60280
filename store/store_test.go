package store

import (
	"testing"

	"github.com/steady-go/steady/ratelimit"
)

func TestWindowID(t *testing.T) {
	for _, u := range []ratelimit.Unit{ratelimit.UnitRequests, ratelimit.UnitTokens, ratelimit.UnitInputTokens, ratelimit.UnitOutputTokens} {
		for _, name := range []string{"", "minute", "config", "a:b"} {
			id := WindowID(u, name)
			gu, gn, ok := ParseWindowID(id)
			if !ok || gu != u || gn != name {
				t.Errorf("ParseWindowID(%q) = %v, %q, %v; want %v, %q", id, gu, gn, ok, u, name)
			}
		}
	}
	for _, bad := range []string{"", "requests", "unknown:minute", "Requests:minute", ":x"} {
		if u, n, ok := ParseWindowID(bad); ok {
			t.Errorf("ParseWindowID(%q) = %v, %q, true; want not ok", bad, u, n)
		}
	}
}

// TestBreakerStateNames pins the names a store's grants report the
// fleet's circuit with, which are steady's own.
func TestBreakerStateNames(t *testing.T) {
	for s, want := range map[BreakerState]string{BreakerClosed: "closed", BreakerHalfOpen: "half-open", BreakerOpen: "open", 9: "unknown"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", s, got, want)
		}
	}
}
