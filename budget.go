package steady

import (
	"cmp"
	"context"
	"math"
	"sync"
	"sync/atomic"

	"github.com/steady-go/steady/store"
	"golang.org/x/time/rate"
)

// Retry budget settings used where [RetryConfig.BudgetRatio] or
// [RetryConfig.BudgetMinPerSecond] is zero.
const (
	defaultBudgetRatio        = 0.2
	defaultBudgetMinPerSecond = 10
	// budgetMaxBanked is how many earned retries a budget keeps at most,
	// so that a long quiet spell does not bank a retry storm.
	budgetMaxBanked = 100
)

// budget is a token bucket counted in micro-retries. A nil budget allows
// every retry.
type budget struct {
	earn    int64        // micro-retries earned per first attempt
	max     int64        // most micro-retries banked
	balance atomic.Int64 // micro-retries
	floor   *rate.Limiter
	// floorRate and floorBurst are floor's settings (zero without one),
	// as a fleet's budget shares them.
	floorRate  float64
	floorBurst int

	// With a Store that keeps the fleet's budget: the micro-retries
	// this process earned per upstream and has not yet told it.
	mu     sync.Mutex
	earned map[string]int64 // guarded by mu
}

const microRetry = 1_000_000

// newBudget returns the budget of [RetryConfig.BudgetRatio] ratio and
// [RetryConfig.BudgetMinPerSecond] minPerSecond; nil when ratio is
// negative.
func newBudget(ratio, minPerSecond float64) *budget {
	if ratio < 0 {
		return nil
	}
	ratio = cmp.Or(ratio, defaultBudgetRatio)
	if math.IsNaN(ratio) {
		ratio = defaultBudgetRatio
	}
	b := &budget{max: budgetMaxBanked * microRetry}
	if e := ratio * microRetry; e < float64(b.max) {
		b.earn = int64(math.Ceil(e))
	} else {
		b.earn = b.max
	}
	if floor := cmp.Or(minPerSecond, defaultBudgetMinPerSecond); floor > 0 {
		b.floorRate, b.floorBurst = floor, int(min(math.Max(1, math.Ceil(floor)), 1<<20))
		b.floor = rate.NewLimiter(rate.Limit(floor), b.floorBurst)
	}
	return b
}

// maxEarnedUpstreams bounds the upstreams whose earnings wait to be told
// to a fleet's budget; beyond it, earnings toward a new one are dropped
// (the fleet then allows fewer retries, never more).
const maxEarnedUpstreams = 1024

// earnFor records one first attempt toward upstream for the fleet's budget.
func (b *budget) earnFor(upstream string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.earned == nil {
		b.earned = make(map[string]int64)
	}
	if e, ok := b.earned[upstream]; ok || len(b.earned) < maxEarnedUpstreams {
		b.earned[upstream] = min(e+b.earn, b.max)
	}
}

// takeEarned returns what this process earned toward upstream since it
// last told the fleet, and forgets it.
func (b *budget) takeEarned(upstream string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.earned[upstream]
	delete(b.earned, upstream)
	return e
}

// withdrawFleet spends one retry toward upstream from the fleet's budget
// kept by fb; when fb cannot decide (its backend unreachable), from this
// process's own budget, which earns from every first attempt either way.
func (b *budget) withdrawFleet(ctx context.Context, fb store.RetryBudget, upstream string) bool {
	if b == nil {
		return true
	}
	if fb == nil {
		return b.withdraw()
	}
	e := b.takeEarned(upstream)
	ok, shared := fb.Retry(ctx, store.Retry{Upstream: upstream, Earned: float64(e) / microRetry,
		Max: float64(b.max) / microRetry, Floor: b.floorRate, FloorBurst: b.floorBurst})
	if shared {
		return ok
	}
	if e > 0 {
		b.mu.Lock()
		if b.earned == nil {
			b.earned = make(map[string]int64)
		}
		if _, ok := b.earned[upstream]; ok || len(b.earned) < maxEarnedUpstreams {
			b.earned[upstream] = min(b.earned[upstream]+e, b.max)
		}
		b.mu.Unlock()
	}
	return b.withdraw()
}

// deposit credits one first attempt.
func (b *budget) deposit() {
	if b == nil {
		return
	}
	for {
		old := b.balance.Load()
		if old >= b.max {
			return
		}
		if b.balance.CompareAndSwap(old, min(old+b.earn, b.max)) {
			return
		}
	}
}

// withdraw spends one retry; false means the budget is spent.
func (b *budget) withdraw() bool {
	if b == nil {
		return true
	}
	for {
		old := b.balance.Load()
		if old < microRetry {
			break
		}
		if b.balance.CompareAndSwap(old, old-microRetry) {
			return true
		}
	}
	return b.floor != nil && b.floor.Allow()
}
