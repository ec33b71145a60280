package steadyredis

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/store"
)

// TestFleetRetryBudget: 16 processes retrying toward one dead upstream
// get, together, the retries one process would (what the fleet's first
// attempts earned, at most 100 banked, and the floor of 10 a second
// fleet-wide), not 16 times as many; a store whose Redis is down decides
// nothing, and the Transport's own budget does.
func TestFleetRetryBudget(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	const n = 16
	var fleet [n]*Store
	for i := range fleet {
		s := must(New(c, WithPrefix(prefix), withClock(clk.now), WithTimeout(time.Second)))
		s.cfg.scriptClock = true
		defer s.Close()
		fleet[i] = s
	}
	// steady's default budget: 0.2 of a retry per first attempt, 100
	// banked, 10 a second in bursts of 10.
	ask := func(s *Store, earned float64) (ok bool) {
		t.Helper()
		ok, shared := s.Retry(context.Background(), store.Retry{Upstream: "https://api.example.com", Earned: earned, Max: 100, Floor: 10, FloorBurst: 10})
		if !shared {
			t.Fatal("Retry not shared with Redis up")
		}
		return ok
	}
	// Each process made 50 first attempts (10 retries earned) and asks
	// for a retry; then they retry until refused. One process making the
	// fleet's first attempts and retries in that order is allowed the
	// same: 16 retries while the bank fills (to its cap of 100, so 160
	// earned bank 99 after them), those 99, and the floor's burst of 10.
	allowed := 0
	for _, s := range fleet {
		if ask(s, 50*0.2) {
			allowed++
		}
	}
	for _, s := range fleet {
		for range 200 {
			if ask(s, 0) {
				allowed++
			}
		}
	}
	if allowed != 16+99+10 {
		t.Errorf("the fleet of %d was allowed %d retries at once, want %d as one process (%d, each process alone)", n, allowed, 16+99+10, n*(10+10))
	}
	clk.advance(time.Second)
	allowed = 0
	for _, s := range fleet {
		for range 10 {
			if ask(s, 0) {
				allowed++
			}
		}
	}
	if allowed != 10 {
		t.Errorf("the fleet was allowed %d retries in the next second, want the floor's 10", allowed)
	}

	dead := redis.NewClient(&redis.Options{Addr: closedAddr(t), ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	defer dead.Close()
	s := must(New(dead, WithTimeout(100*time.Millisecond)))
	defer s.Close()
	if ok, shared := s.Retry(context.Background(), store.Retry{Upstream: "https://api.example.com", Earned: 1, Max: 100, Floor: 10, FloorBurst: 10}); ok || shared {
		t.Errorf("Retry with Redis refused = %v, %v; want nothing decided (false, false)", ok, shared)
	}
}
