package steadyredis

import (
	"context"
	_ "embed"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/store"
)

// The fleet's retry budget (store.RetryBudget): one key per
// upstream, beside its breaker in the upstream's hash slot, and one
// script call per retry (never per first attempt: what a process's first
// attempts earned travels with its next retry, so that a process that
// never retries adds nothing to Redis and the fleet allows fewer retries,
// never more).

//go:embed retry.lua
var retryLua string

var retryScript = redis.NewScript(retryLua)

var _ store.RetryBudget = (*Store)(nil)

// Retry spends one retry of the fleet's budget toward r.Upstream, first
// crediting what this process earned. When Redis does not answer, or
// refuses the budget's key, it decides nothing (shared false): the
// Transport's own budget does.
func (s *Store) Retry(ctx context.Context, r store.Retry) (ok, shared bool) {
	now := s.cfg.now()
	if ctx.Err() != nil || !s.begin(now) {
		return false, false
	}
	key := s.keys(store.Partition{Upstream: r.Upstream})[2] + ":r"
	args := s.clockArg([]any{finite(r.Earned), finite(r.Max), finite(r.Floor), max(r.FloorBurst, 1), s.cfg.keyTTL.Milliseconds()})
	v, err := s.runScript(ctx, retryScript, []string{key}, args)
	if err != nil && ctx.Err() != nil {
		s.abort()
		return false, false
	}
	if partitionError(err) {
		s.end(nil, s.cfg.now()) // Redis answered: only this key is unusable
		return false, false
	}
	if err != nil {
		s.mu.Lock()
		if s.lapse == nil {
			s.lapse = err // told by the next grant of any partition
		}
		s.mu.Unlock()
	}
	s.end(err, s.cfg.now())
	if err != nil || len(v) == 0 {
		return false, err == nil
	}
	n, _ := v[0].(int64)
	return n == 1, true
}

// finite returns x as a script argument, or 0 when it is not a finite
// number.
func finite(x float64) float64 {
	if x != x || x > 1e15 || x < -1e15 {
		return 0
	}
	return x
}
