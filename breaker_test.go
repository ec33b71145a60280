package steady

import (
	"fmt"
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
		{"defaults: 10 in a row", BreakerConfig{}, "FFFFFFFFFF", true},
		{"defaults: 9 in a row", BreakerConfig{}, "FFFFFFFFF", false},
		{"defaults: half of 20", BreakerConfig{}, "SFSFSFSFSFSFSFSFSFSF", true},
		{"disabled", BreakerConfig{Disabled: true}, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bs := newBreakers(tc.cfg, func(Event) {})
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
		bs := newBreakers(BreakerConfig{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4, Window: 10 * time.Second}, func(Event) {})
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
		bs := newBreakers(BreakerConfig{ConsecutiveFailures: 1}, func(Event) {})
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
	bs := newBreakers(BreakerConfig{ConsecutiveFailures: 1}, func(Event) {})
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
		})
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
		bs := newBreakers(BreakerConfig{ConsecutiveFailures: 1}, func(Event) {})
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
