package bench

import (
	"time"

	"github.com/steady-go/steady/steadytest"
)

// fleetLimit is one limit of the fleet matrix.
type fleetLimit struct {
	Name     string
	Provider steadytest.ProviderConfig
}

// fleetLimits returns the limits of the fleet matrix: fixed windows of
// 1 s, 10 s and 1 min with epoch-second (Heroku), duration (OpenAI) and
// RFC 3339 (Anthropic) resets, a sliding window, a token bucket, and a
// tokens-bound limit. A new limit is one line.
func fleetLimits() []fleetLimit {
	const ms = time.Millisecond
	fixed, sliding, bucket := steadytest.FixedWindow, steadytest.SlidingWindow, steadytest.TokenBucket
	return []fleetLimit{
		{"fixed 1 s, Heroku (epoch-second resets)", steadytest.ProviderConfig{RequestsPerWindow: 20, Window: time.Second, Algorithm: fixed, Dialect: steadytest.DialectHerokuSeed, Latency: 50 * ms}},
		{"fixed 10 s, OpenAI (duration resets)", steadytest.ProviderConfig{RequestsPerWindow: 200, Window: 10 * time.Second, Algorithm: fixed, Dialect: steadytest.DialectOpenAI, Latency: 50 * ms}},
		{"fixed 1 min, Anthropic (RFC 3339 resets)", steadytest.ProviderConfig{RequestsPerWindow: 600, Window: time.Minute, Algorithm: fixed, Dialect: steadytest.DialectAnthropic, Latency: 50 * ms}},
		{"fixed 10 s, Heroku (epoch-second resets)", steadytest.ProviderConfig{RequestsPerWindow: 200, Window: 10 * time.Second, Algorithm: fixed, Dialect: steadytest.DialectHerokuSeed, Latency: 50 * ms}},
		{"sliding 10 s, OpenAI", steadytest.ProviderConfig{RequestsPerWindow: 200, Window: 10 * time.Second, Algorithm: sliding, Dialect: steadytest.DialectOpenAI, Latency: 50 * ms}},
		{"token bucket 1 min, OpenAI", steadytest.ProviderConfig{RequestsPerWindow: 600, Window: time.Minute, Algorithm: bucket, Dialect: steadytest.DialectOpenAI, Latency: 50 * ms}},
		{"tokens-bound fixed 10 s, IETF", steadytest.ProviderConfig{RequestsPerWindow: 1000, TokensPerWindow: 200 * fleetCost(), Window: 10 * time.Second, Algorithm: fixed, Dialect: steadytest.DialectIETF, Latency: 50 * ms}},
	}
}

// fleetMatrix returns the full fleet matrix, minutes a row: every limit
// with fleets of 1, 4 and 16 processes, without and with the store and
// beside the bare SDK, deployed at once; and, on the 10-second Heroku
// windows, the other starts, two stores, an outside consumer, the faults,
// and a batch over 3 processes.
func fleetMatrix() []fleetCase {
	const d = 3 * time.Minute
	var cs []fleetCase
	for _, l := range fleetLimits() {
		for _, n := range []int{1, 4, 16} {
			cs = append(cs,
				fleetCase{Name: l.Name, Provider: l.Provider, Processes: n, Client: fleetBare, Duration: d},
				fleetCase{Name: l.Name, Provider: l.Provider, Processes: n, Client: fleetMiddleware, Duration: d},
			)
			if n > 1 {
				cs = append(cs, fleetCase{Name: l.Name, Provider: l.Provider, Processes: n, Client: fleetMiddleware, Store: oneStore, Duration: d})
			}
		}
	}
	l := fleetLimits()[3]
	for _, n := range []int{4, 16} {
		for _, start := range []fleetStart{rolling, steadyState} {
			for _, st := range []fleetStore{noStore, oneStore} {
				cs = append(cs, fleetCase{Name: l.Name, Provider: l.Provider, Processes: n, Client: fleetMiddleware, Store: st, Start: start, Duration: d})
			}
		}
		for _, st := range []fleetStore{noStore, oneStore, twoStores} {
			cs = append(cs, fleetCase{Name: l.Name, Provider: l.Provider, Processes: n, Client: fleetTransport, Store: st, Duration: d})
		}
		for _, st := range []fleetStore{noStore, oneStore} {
			cs = append(cs, fleetCase{Name: l.Name, Provider: l.Provider, Processes: n, Client: fleetMiddleware, Store: st, Outside: true, Duration: d})
		}
		for _, f := range []fleetFault{redisKilled, redisPaused} {
			cs = append(cs, fleetCase{Name: l.Name, Provider: l.Provider, Processes: n, Client: fleetMiddleware, Store: oneStore, Fault: f, Duration: d})
		}
	}
	for _, c := range []struct {
		client string
		store  fleetStore
	}{{fleetBare, noStore}, {fleetMiddleware, noStore}, {fleetMiddleware, oneStore}} {
		cs = append(cs, fleetCase{Name: l.Name + ", batch of 1000", Provider: l.Provider, Processes: 3, Client: c.client, Store: c.store,
			Calls: 1000, Callers: 16, Duration: 3 * time.Minute})
	}
	return cs
}

// fleetShort returns the fleet runs of every CI run, tens of seconds
// each: 4 and 16 processes on 10-second Heroku windows, deployed at once,
// without the store, with it, and the bare SDK.
func fleetShort() []fleetCase {
	const d = 30 * time.Second
	l := fleetLimits()[3]
	return []fleetCase{
		{Name: l.Name, Provider: l.Provider, Processes: 4, Client: fleetBare, Duration: d},
		{Name: l.Name, Provider: l.Provider, Processes: 4, Client: fleetMiddleware, Duration: d},
		{Name: l.Name, Provider: l.Provider, Processes: 4, Client: fleetTransport, Store: oneStore, Duration: d},
		{Name: l.Name, Provider: l.Provider, Processes: 16, Client: fleetMiddleware, Duration: d, Callers: 4},
		{Name: l.Name, Provider: l.Provider, Processes: 16, Client: fleetMiddleware, Store: oneStore, Duration: d, Callers: 4},
	}
}

// fleetTarget is issue 18's target for a fleet row under sustained
// load: at most max429 of its attempts answered 429 and no call failed;
// ok is false for a row without one.
func fleetTarget(c fleetCase) (max429 float64, ok bool) {
	if c.Client == fleetBare || c.Calls > 0 || c.Fault != noFault {
		return 0, false
	}
	switch {
	case c.Store == noStore && !c.Outside && c.Processes == 4:
		return 0.03, true
	case c.Store == noStore && !c.Outside && c.Processes == 16:
		return 0.05, true
	case c.Store == oneStore && !c.Outside && c.Processes >= 4:
		return 0.005, true
	}
	return 0, false
}
