package steady

import (
	"cmp"
	"context"
	"math"
	"net/http"
	"time"
)

// Retry settings used where a [RetryConfig] field is zero.
const (
	defaultMaxRetries    = 4
	defaultBaseDelay     = 500 * time.Millisecond
	defaultMaxDelay      = 30 * time.Second
	defaultMaxRetryAfter = 2 * time.Minute // the OpenAI SDK's own cap
)

// RetryConfig says what is retried and how long steady waits between tries.
// Which failures are worth retrying is decided by [ClassifyResponse] and
// [ClassifyError]; RetryConfig says how often and how patiently.
type RetryConfig struct {
	// MaxRetries is how many times a request is retried after its first
	// attempt. Zero means 4 (five attempts in all); negative means never.
	MaxRetries int

	// BaseDelay is the first backoff step. Zero means 500ms; negative
	// means none: a failure without a server hint is retried at once.
	// With pacing on, a 429 is never backed off: its retry waits at most
	// the server's hint, and then its turn in the pacing queue.
	BaseDelay time.Duration

	// MaxDelay caps a computed backoff. Zero means 30s; negative means no
	// cap. A server's retry hint is not capped by MaxDelay but by
	// MaxRetryAfter.
	MaxDelay time.Duration

	// DecorrelatedJitter chooses how a computed backoff is randomized.
	// False (the default) is full jitter: a uniformly random wait between
	// zero and min(MaxDelay, BaseDelay * 2^(retry-1)). True is decorrelated
	// jitter: a uniformly random wait between BaseDelay and three times the
	// previous wait, capped at MaxDelay.
	DecorrelatedJitter bool

	// MaxRetryAfter is the longest server retry hint (Retry-After,
	// retry-after-ms, x-ms-retry-after-ms) steady waits for. A longer hint
	// means: do not retry, hand the response back. Zero means 2 minutes;
	// negative means no cap.
	MaxRetryAfter time.Duration

	// BudgetRatio and BudgetMinPerSecond bound the retries across the
	// whole Transport, whatever the number of callers, so that an outage
	// does not multiply the load on a struggling upstream: every first
	// attempt earns BudgetRatio of a retry, every retry spends one, and
	// BudgetMinPerSecond retries per second are allowed on top of what was
	// earned. At most 100 earned retries are kept, so that a quiet spell
	// does not bank a retry storm. When the budget is spent, a failed
	// attempt is handed back to the caller instead of being retried.
	// Retries after a 429 neither need nor spend budget: a 429 is a rate
	// signal, and those retries wait their turn in the pacing queue
	// instead. With a [PacingConfig.Store] that keeps the fleet's budget
	// ([store.RetryBudget], as steadyredis's does), the budget, its cap and
	// its floor are the fleet's per upstream, not each process's; while
	// the store cannot decide, each process's own.
	//
	// BudgetRatio is the share of first attempts that may be retried. Zero
	// means 0.2; negative disables the budget (every retry is allowed).
	BudgetRatio float64
	// BudgetMinPerSecond is the floor: retries allowed per second (in
	// bursts of as many) even when nothing was earned, so that a quiet
	// client still retries. Zero means 10; negative means no floor.
	BudgetMinPerSecond float64

	// FirstTokenTimeout and FirstTokenBytes bound the stream guard. A 2xx
	// response of server-sent events to a POST (a generation: a GET's
	// stream, such as a subscription, is not guarded) is read ahead until
	// its first content
	// event before it is handed back (what was read is then handed to the
	// caller first, exactly as received): an error event before it is
	// retried as the status it stands for (an overloaded server as 529, a
	// rate limit as 429, a server error as 5xx), and a stream that sends
	// no content for FirstTokenTimeout as a 504; past FirstTokenBytes
	// without content, the stream is handed back as it is. After the first
	// content, an error event ends the body with a [*StreamError].
	// FirstTokenTimeout zero means a minute (a model that thinks longer
	// than that before its first token, sending nothing, needs more);
	// negative means no time bound. FirstTokenBytes zero means 64 KiB;
	// negative turns the guard off (error events after the first content
	// are still reported as a *StreamError).
	FirstTokenTimeout time.Duration
	FirstTokenBytes   int
}

// retryPolicy is a RetryConfig with its defaults resolved.
type retryPolicy struct {
	maxRetries    int
	base, max     time.Duration
	decorrelated  bool          // RetryConfig.DecorrelatedJitter
	maxRetryAfter time.Duration // <= 0: no cap
	rnd           *jitter       // Config.Random; nil: the global source
}

func newRetryPolicy(c RetryConfig) retryPolicy {
	p := retryPolicy{
		maxRetries:    c.MaxRetries,
		base:          c.BaseDelay,
		max:           c.MaxDelay,
		decorrelated:  c.DecorrelatedJitter,
		maxRetryAfter: c.MaxRetryAfter,
	}
	p.maxRetries = max(cmp.Or(p.maxRetries, defaultMaxRetries), 0)
	p.base = max(cmp.Or(p.base, defaultBaseDelay), 0)
	if p.max = cmp.Or(p.max, defaultMaxDelay); p.max < 0 {
		p.max = math.MaxInt64
	}
	p.max = max(p.max, p.base)
	p.maxRetryAfter = cmp.Or(p.maxRetryAfter, defaultMaxRetryAfter)
	return p
}

// decide applies the retry rules to failure f of c's current attempt: it
// returns how long to wait before the next attempt, or why there is none.
func (c *call) decide(f Failure) (wait time.Duration, reason string) {
	p := &c.t.retry
	switch {
	case !f.Retryable:
		return 0, cmp.Or(f.Reason, "not retryable")
	case !c.replayable:
		return 0, "request body cannot be replayed"
	case c.probeFailed && c.br.pol.hold:
		// A held request that served as a failed probe waits for the
		// circuit again; the failure is the upstream's, not its own.
		c.uncounted++
		return 0, ""
	case c.attempt-c.uncounted > p.maxRetries:
		return 0, "retries exhausted"
	}
	if f.HasRetryAfter {
		wait = max(f.RetryAfter, 0)
		if p.maxRetryAfter > 0 && wait > p.maxRetryAfter {
			return 0, "retry hint " + wait.String() + " above cap " + p.maxRetryAfter.String()
		}
	} else {
		wait = p.backoff(c.attempt, c.prevWait)
	}
	if f.Status == http.StatusTooManyRequests && c.t.pacer.paces() {
		wait = pacedRetryWait(f, c.discovered)
	}
	if dl, ok := c.ctx.Deadline(); ok && !time.Now().Add(wait).Before(dl) {
		return 0, "deadline before retry in " + wait.String()
	}
	// A 429 is a rate signal, not a failure: its retry waits its turn in
	// the pacing queue and spends no budget.
	if f.Status != http.StatusTooManyRequests && !c.t.budget.withdrawFleet(c.ctx, c.t.fleetBudget, c.upstream) {
		return 0, "retry budget exhausted"
	}
	return wait, ""
}

// pacedRetryWait is how long the retry of a 429 waits before it goes back
// into its partition's queue, when pacing is on; discovered tells that the
// partition is paced by a discovered rate (its provider announces
// nothing). The pacer has already read the 429 and planned the partition
// by it, and the retry then waits its turn in the queue like any request:
// the pacer refuses it, at once, only if its turn is past its deadline. So
// the retry itself waits no backoff, which would add to the plan:
//   - For a partition whose limits are announced, it waits the server's
//     hint, if any: the pacer pauses the partition for the same hint, and
//     the two waits end together.
//   - For a partition paced by a discovered rate, it waits nothing: the
//     discoverer reads the hint (a pause for a window; a shorter one, such
//     as a leaky bucket's "Retry-After: 1" rounded up from 50 ms, only cuts
//     the pace), and the retry goes at the discovered pace.
func pacedRetryWait(f Failure, discovered bool) time.Duration {
	if !f.HasRetryAfter || discovered {
		return 0
	}
	return max(f.RetryAfter, 0)
}

// backoff returns the wait before retry n (1 for the first retry); prev is
// the previous wait, used by decorrelated jitter.
func (p *retryPolicy) backoff(n int, prev time.Duration) time.Duration {
	if p.base <= 0 {
		return 0
	}
	if p.decorrelated {
		if prev < p.base {
			prev = p.base
		}
		hi := p.max
		if prev <= math.MaxInt64/3 && 3*prev < hi {
			hi = 3 * prev
		}
		return p.base + time.Duration(p.rnd.int64N(int64(hi-p.base)+1))
	}
	ceil := p.max
	if shift := n - 1; shift < 62 && p.base <= p.max>>shift {
		ceil = p.base << shift
	}
	if ceil == math.MaxInt64 {
		return time.Duration(p.rnd.int64N(math.MaxInt64))
	}
	return time.Duration(p.rnd.int64N(int64(ceil) + 1))
}

// retryWait waits d, or until ctx is done, whichever comes first. It uses a
// timer and select so that a fake clock (testing/synctest) drives it.
func retryWait(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
