package steady

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// feedBreaker feeds a breaker a sequence of results: 'S' success, 'F' failure,
// 'X' excluded. It reports whether every attempt was allowed.
func feedBreaker(b *breaker, seq string) bool {
	for _, c := range seq {
		done, err := b.allow()
		if err != nil {
			return false
		}
		switch c {
		case 'S':
			b.report(done, nil)
		case 'F':
			b.report(done, errBreakerFailure)
		case 'X':
			b.report(done, errBreakerExcluded)
		}
	}
	return true
}

var breakerTestURL, _ = url.Parse("https://api.example.test/v1/chat/completions")

func TestBreakerRules(t *testing.T) {
	cases := []struct {
		name string
		cfg  BreakerConfig
		seq  string
		open bool
	}{
		{"consecutive", BreakerConfig{ConsecutiveFailures: 3, FailureRatio: -1}, "SFFF", true},
		{"broken run", BreakerConfig{ConsecutiveFailures: 3, FailureRatio: -1}, "FFSFFS", false},
		{"ratio reached", BreakerConfig{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4}, "SSFF", true},
		{"ratio below min count", BreakerConfig{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4}, "FSF", false},
		{"ratio not reached", BreakerConfig{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4}, "SSSFSF", false},
		{"exclusions do not count", BreakerConfig{ConsecutiveFailures: 2, FailureRatio: -1}, "FXXXXS", false},
		{"defaults: 5 in a row", BreakerConfig{}, "FFFFF", true},
		{"defaults: 4 in a row", BreakerConfig{}, "FFFF", false},
		{"defaults: half of 20", BreakerConfig{}, "SFSFSFSFSFSFSFSFSFSF", true},
		{"disabled", BreakerConfig{Disabled: true}, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bs := newBreakers(tc.cfg, func(Event) {}, nil)
				b := bs.get(breakerTestURL)
				feedBreaker(b, tc.seq)
				if got := bs.state("https://api.example.test") == BreakerOpen; got != tc.open {
					t.Fatalf("after %s open = %v, want %v", tc.seq, got, tc.open)
				}
			})
		})
	}
}

func TestBreakerRollingWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := newBreakers(BreakerConfig{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4, Window: 10 * time.Second}, func(Event) {}, nil)
		b := bs.get(breakerTestURL)
		feedBreaker(b, "FFFS")
		time.Sleep(11 * time.Second) // the failures leave the window
		feedBreaker(b, "SSSF")
		if s := bs.state("https://api.example.test"); s != BreakerClosed {
			t.Fatalf("old failures still counted: breaker %v", s)
		}
		feedBreaker(b, "FF") // 3 of 6 in the window
		if s := bs.state("https://api.example.test"); s != BreakerOpen {
			t.Fatalf("breaker %v, want open at half failures in the window", s)
		}
	})
}

func TestBreakerPerUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := newBreakers(BreakerConfig{ConsecutiveFailures: 1}, func(Event) {}, nil)
		other, _ := url.Parse("https://other.example.test/v1/embeddings")
		plain, _ := url.Parse("http://api.example.test/v1/chat/completions")
		feedBreaker(bs.get(breakerTestURL), "F")
		if bs.state("https://api.example.test") != BreakerOpen || bs.state("api.example.test") != BreakerOpen {
			t.Fatal("the failing upstream's breaker is not open")
		}
		if !feedBreaker(bs.get(other), "S") || !feedBreaker(bs.get(plain), "S") {
			t.Fatal("one upstream's open circuit refused another's requests")
		}
		if bs.state("https://unknown.example.test") != BreakerClosed {
			t.Fatal("an unknown upstream is not closed")
		}
	})
}

func TestBreakerUpstreamsBounded(t *testing.T) {
	bs := newBreakers(BreakerConfig{ConsecutiveFailures: 1}, func(Event) {}, nil)
	failing, _ := url.Parse("https://failing.example.test/")
	feedBreaker(bs.get(failing), "F")
	for i := range 3 * maxUpstreams {
		u, _ := url.Parse(fmt.Sprintf("https://h%d.example.test/", i))
		bs.get(u)
		if n := len(bs.m); n > maxUpstreams {
			t.Fatalf("%d breakers kept, want at most %d", n, maxUpstreams)
		}
	}
	if bs.state("https://failing.example.test") != BreakerOpen {
		t.Fatal("an open breaker was evicted while closed ones could go")
	}
}

// TestBreakerEventsOutsideLock checks that a state change is delivered after
// gobreaker's lock is released: the callback reads the breaker's state,
// which would deadlock under that lock.
func TestBreakerEventsOutsideLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var seen []string
		var bs *breakers
		bs = newBreakers(BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: time.Second, HalfOpenProbes: 1}, func(ev Event) {
			s := bs.state(ev.Upstream)
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%v>%v(%v)", ev.From, ev.To, s))
			mu.Unlock()
		}, nil)
		b := bs.get(breakerTestURL)
		feedBreaker(b, "FF")
		time.Sleep(time.Second + time.Millisecond)
		feedBreaker(b, "S")
		want := "[closed>open(open) open>half-open(half-open) half-open>closed(closed)]"
		if got := fmt.Sprint(seen); got != want {
			t.Fatalf("events %s, want %s", got, want)
		}
	})
}

// TestBreakerBareHostMostSevere: a bare host matching several upstreams
// reports the most severe state, whatever the map's order.
func TestBreakerBareHostMostSevere(t *testing.T) {
	plain, _ := url.Parse("http://api.example.test/v1/chat/completions")
	for range 50 {
		bs := newBreakers(BreakerConfig{ConsecutiveFailures: 1}, func(Event) {}, nil)
		feedBreaker(bs.get(plain), "S")
		feedBreaker(bs.get(breakerTestURL), "F")
		if s := bs.state("api.example.test"); s != BreakerOpen {
			t.Fatalf("bare host state %v, want open (https is open, http closed)", s)
		}
		if s := bs.state("http://api.example.test"); s != BreakerClosed {
			t.Fatalf("http state %v, want closed", s)
		}
	}
}

func TestOpenPeriodGrowsToTheBound(t *testing.T) {
	for _, tc := range []struct {
		n      int
		max    time.Duration
		lo, hi time.Duration
	}{
		{1, 10 * time.Second, 750 * time.Millisecond, time.Second},
		{2, 10 * time.Second, 1500 * time.Millisecond, 2 * time.Second},
		{4, 10 * time.Second, 6 * time.Second, 8 * time.Second},
		{5, 10 * time.Second, 7500 * time.Millisecond, 10 * time.Second},
		{1000, 10 * time.Second, 7500 * time.Millisecond, 10 * time.Second},
		{1, 200 * time.Millisecond, 150 * time.Millisecond, 200 * time.Millisecond},
		{1000, math.MaxInt64, math.MaxInt64 / 4 * 3, math.MaxInt64},
	} {
		for range 100 {
			if d := openPeriod(tc.n, tc.max, nil); d < tc.lo || d > tc.hi {
				t.Fatalf("openPeriod(%d, %v) = %v, want in [%v, %v]", tc.n, tc.max, d, tc.lo, tc.hi)
			}
		}
	}
}

// TestBreakerNegativeMeansNone: the config rule for BreakerConfig.
func TestBreakerNegativeMeansNone(t *testing.T) {
	bs := newBreakers(BreakerConfig{MinRequests: -1, Window: -1, OpenTimeout: -1, HalfOpenProbes: -1}, func(Event) {}, nil)
	if p := bs.pol; p.minReq != 1 || p.maxOpen != math.MaxInt64 || p.probes != 0 || p.gobreaker.Interval != 0 {
		t.Fatalf("policy %+v", p)
	}
	d := newBreakers(BreakerConfig{}, func(Event) {}, nil).pol
	if d.minReq != 20 || d.maxOpen != 10*time.Second || d.probes != 3 || d.consec != 5 || d.ratio != 0.5 || d.hold {
		t.Fatalf("defaults %+v", d)
	}
	synctest.Test(t, func(t *testing.T) {
		var seen []string
		bs := newBreakers(BreakerConfig{ConsecutiveFailures: 1, HalfOpenProbes: -1}, func(ev Event) {
			seen = append(seen, fmt.Sprintf("%v>%v %s", ev.From, ev.To, ev.Reason))
		}, nil)
		b := bs.get(breakerTestURL)
		feedBreaker(b, "F")
		if feedBreaker(b, "S") {
			t.Fatal("a request went through an open circuit")
		}
		time.Sleep(time.Second + time.Millisecond)
		if s := bs.state(b.upstream); s != BreakerClosed {
			t.Fatalf("no probes: after the open period the breaker is %v, want closed", s)
		}
		if !feedBreaker(b, "SSS") {
			t.Fatal("requests refused after the open period, with no probes")
		}
		want := "[closed>open 1 failures in a row open>half-open open period over half-open>closed open period over]"
		if got := fmt.Sprint(seen); got != want {
			t.Fatalf("events %s, want %s", got, want)
		}
	})
}

// TestProbesOneAtATime: a half-open circuit lets one probe out at a time;
// the others are refused until its verdict, and a failed probe doubles the
// open period.
func TestProbesOneAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var evs []Event
		bs := newBreakers(BreakerConfig{ConsecutiveFailures: 1, HalfOpenProbes: 2}, func(ev Event) { evs = append(evs, ev) }, nil)
		b := bs.get(breakerTestURL)
		feedBreaker(b, "F")
		time.Sleep(time.Second + time.Millisecond)
		v := b.look()
		if v.state != BreakerHalfOpen || !v.probeFree {
			t.Fatalf("after the open period: %+v", v)
		}
		s1, err := b.allow()
		if err != nil || !s1.probe {
			t.Fatalf("first probe: %+v %v", s1, err)
		}
		if _, err := b.allow(); !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("second request while the probe is out: %v, want ErrCircuitOpen", err)
		}
		v = b.look()
		b.report(s1, nil)
		select {
		case <-v.changed:
		default:
			t.Fatal("a probe's verdict did not wake the waiters")
		}
		s2, err := b.allow()
		if err != nil || !s2.probe {
			t.Fatalf("second probe: %+v %v", s2, err)
		}
		b.report(s2, errBreakerFailure)
		last := evs[len(evs)-1]
		if last.To != BreakerOpen || last.Reason != "probe failed" || last.Wait < 1500*time.Millisecond || last.Wait > 2*time.Second {
			t.Fatalf("after a failed probe: %+v, want open for 1.5-2s", last)
		}
	})
}

// TestWaitingPacingWokenWhenCircuitOpens: the channel given to pacing as
// admitOpts.stop is closed when the circuit opens.
func TestWaitingPacingWokenWhenCircuitOpens(t *testing.T) {
	bs := newBreakers(BreakerConfig{ConsecutiveFailures: 2}, func(Event) {}, nil)
	b := bs.get(breakerTestURL)
	v := b.look()
	feedBreaker(b, "F")
	select {
	case <-v.opened:
		t.Fatal("stop closed before the circuit opened")
	default:
	}
	feedBreaker(b, "F")
	select {
	case <-v.opened:
	default:
		t.Fatal("stop not closed when the circuit opened")
	}
}
