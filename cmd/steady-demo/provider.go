package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/steady-go/steady/steadytest"
)

// upstream is what the demo needs from a simulated provider: answer
// requests in memory, switch an outage on and off, and say the most
// requests it ever admitted in one window.
type upstream interface {
	http.RoundTripper
	setOutage(on bool)
	maxInWindow() int64
}

// providerConfig sets up one simulated provider.
type providerConfig struct {
	Requests  int           // requests admitted per window
	Tokens    int           // tokens admitted per window; 0 means no tokens limit
	Window    time.Duration // window length
	Dialect   string        // rate-limit header dialect, as parseDialect reads it
	Algorithm string        // "sliding-window" or "token-bucket"
	Latency   time.Duration // time to answer a request
}

// simulated is a steadytest.Provider seen as an upstream.
type simulated struct{ *steadytest.Provider }

func (s simulated) setOutage(on bool) {
	s.SetFaults(steadytest.Faults{Outage: on})
}

func (s simulated) maxInWindow() int64 { return s.Stats().MaxRequestsInWindow }

// newProvider returns a simulated provider with cfg's limits.
func newProvider(cfg providerConfig) (upstream, error) {
	if cfg.Requests <= 0 || cfg.Window <= 0 {
		return nil, fmt.Errorf("provider needs a positive limit and window")
	}
	d, err := parseDialect(cfg.Dialect)
	if err != nil {
		return nil, err
	}
	alg, err := parseAlgorithm(cfg.Algorithm)
	if err != nil {
		return nil, err
	}
	return simulated{steadytest.NewProvider(steadytest.ProviderConfig{
		RequestsPerWindow: cfg.Requests,
		TokensPerWindow:   cfg.Tokens,
		Window:            cfg.Window,
		Algorithm:         alg,
		Dialect:           d,
		Latency:           cfg.Latency,
	})}, nil
}

// dialectNames lists the dialects a simulated provider can speak.
func dialectNames() []string {
	var names []string
	for _, d := range steadytest.Dialects() {
		names = append(names, d.String())
	}
	return names
}

func validDialect(name string) bool {
	_, err := parseDialect(name)
	return err == nil
}

// parseDialect returns the dialect named s (see steadytest.Dialect's
// String), compared without regard to case.
func parseDialect(s string) (steadytest.Dialect, error) {
	for _, d := range steadytest.Dialects() {
		if strings.EqualFold(s, d.String()) {
			return d, nil
		}
	}
	return 0, fmt.Errorf("steadytest: unknown dialect %q (want one of %s)", s, strings.Join(dialectNames(), ", "))
}

// parseAlgorithm reads "sliding-window" or "token-bucket".
func parseAlgorithm(s string) (steadytest.Algorithm, error) {
	for _, a := range []steadytest.Algorithm{steadytest.SlidingWindow, steadytest.TokenBucket} {
		if strings.EqualFold(s, a.String()) {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown algorithm %q (want %s or %s)", s, steadytest.SlidingWindow, steadytest.TokenBucket)
}
