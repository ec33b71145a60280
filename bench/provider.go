package bench

import (
	"fmt"
	"net/http"

	"github.com/steady-go/steady/steadytest"
)

// simUpstream is a simulated provider: it answers requests in memory,
// switches an outage on and off, and says the most requests it ever
// admitted in one window.
type simUpstream interface {
	http.RoundTripper
	SetOutage(on bool)
	MaxInWindow() int64
}

// simulated is a steadytest.Provider seen as an Upstream.
type simulated struct{ *steadytest.Provider }

// SetOutage switches a sustained outage (every request answered 503) on
// or off.
func (s simulated) SetOutage(on bool) { s.SetFaults(steadytest.Faults{Outage: on}) }

// MaxInWindow returns the most requests admitted in any window-long span.
func (s simulated) MaxInWindow() int64 { return s.Stats().MaxRequestsInWindow }

// newUpstream returns a simulated provider with sc's limits.
func newUpstream(sc scenario) (simUpstream, error) {
	if sc.Requests <= 0 || sc.Window <= 0 {
		return nil, fmt.Errorf("bench: the provider needs a positive limit and window")
	}
	return simulated{steadytest.NewProvider(steadytest.ProviderConfig{
		RequestsPerWindow: sc.Requests,
		TokensPerWindow:   sc.Tokens,
		Window:            sc.Window,
		Algorithm:         sc.Algorithm,
		Dialect:           sc.Dialect,
		Latency:           sc.Latency,
	})}, nil
}
