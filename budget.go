package steady

import (
	"cmp"
	"math"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// Retry budget settings used where a [BudgetConfig] field is zero.
const (
	defaultBudgetRatio        = 0.2
	defaultBudgetMinPerSecond = 10
	// budgetMaxBanked is how many earned retries a budget keeps at most,
	// so that a long quiet spell does not bank a retry storm.
	budgetMaxBanked = 100
)

// BudgetConfig bounds the retries a [Transport] makes, whatever the number
// of callers: every first attempt earns Ratio of a retry, every retry
// spends one, and MinPerSecond retries per second are allowed on top of
// what was earned. At most 100 earned retries are kept, so that a quiet
// spell does not bank a retry storm. When the budget is spent, a failed
// attempt is handed back to the caller instead of being retried. Retries
// after a 429 neither need nor spend budget.
type BudgetConfig struct {
	// Ratio is the share of first attempts that may be retried. Zero means
	// 0.2; negative disables the budget (every retry is allowed).
	Ratio float64

	// MinPerSecond is the floor: retries allowed per second (in bursts of
	// as many) even when nothing was earned, so that a quiet client still
	// retries. Zero means 10; negative means no floor.
	MinPerSecond float64
}

// budget is a token bucket counted in micro-retries. A nil budget allows
// every retry.
type budget struct {
	earn    int64        // micro-retries earned per first attempt
	max     int64        // most micro-retries banked
	balance atomic.Int64 // micro-retries
	floor   *rate.Limiter
}

const microRetry = 1_000_000

func newBudget(c BudgetConfig) *budget {
	if c.Ratio < 0 {
		return nil
	}
	ratio := cmp.Or(c.Ratio, defaultBudgetRatio)
	if math.IsNaN(ratio) {
		ratio = defaultBudgetRatio
	}
	b := &budget{max: budgetMaxBanked * microRetry}
	if e := ratio * microRetry; e < float64(b.max) {
		b.earn = int64(math.Ceil(e))
	} else {
		b.earn = b.max
	}
	if floor := cmp.Or(c.MinPerSecond, defaultBudgetMinPerSecond); floor > 0 {
		b.floor = rate.NewLimiter(rate.Limit(floor), int(min(math.Max(1, math.Ceil(floor)), 1<<20)))
	}
	return b
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
