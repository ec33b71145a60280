package steady

import (
	"context"
	"strings"
	"time"

	"github.com/steady-go/steady/ratelimit"
)

// Store shares the pacing state of partitions among the processes of a
// fleet that use one credential, so that together they stay within the
// provider's limits. A [Transport] without a Store paces what it sees alone
// and never calls one. Implementations live in their own modules (see
// github.com/steady-go/steady/steadyredis) and must be safe for concurrent
// use.
//
// Before each attempt the pacer calls Reserve; after it, Settle exactly
// once with what the attempt showed, or with Sent false when the request
// was not sent. When the provider counts tokens by usage
// ([PacingConfig.TokensByUsage]) and the response's body told the tokens
// used, Settle is called once more when that body ends: the same
// Partition, Windows and Grant, Sent true, Actual set and nothing else. It
// corrects the reservation's cost and reports no outcome. A Store never fails a request because it cannot reach its
// backend: it decides locally instead and says so in [StoreGrant.Shared].
type Store interface {
	// Reserve atomically reserves one request and its estimated tokens
	// in every window of the partition's shared budget, and returns how
	// long the request must wait before it may be sent, fleet-wide: after
	// any shared cooldown and the reservations of every process before
	// it. A reservation whose wait would exceed r.MaxWait is refused and
	// reserves nothing. When the fleet's circuit for the upstream is open,
	// nothing is reserved and the grant says so. The error is non-nil only
	// when ctx ended or the store can decide nothing at all; the pacer
	// then paces locally as if no Store were set.
	Reserve(ctx context.Context, r StoreReservation) (StoreGrant, error)

	// Settle reports how a granted reservation ended: given back unused
	// (Sent false), or sent, with the rate-limit windows its response
	// announced, the actual cost per window when known, a cooldown after a
	// 429 and the breaker's verdict. It never blocks longer than the
	// store's own timeout and reports no error: what cannot be shared is
	// dropped. A store may defer what is not urgent to the partition's
	// next reservation, so that the success path costs one round trip.
	Settle(ctx context.Context, s StoreSettlement)
}

// StorePartition names a pacing partition to a [Store]: the upstream
// (scheme://host), which also names the circuit breaker, and the
// partition's label. The label never holds a credential, only its
// fingerprint, and is the same in every process for the same host, model
// and credential; stores hash both before writing them.
type StorePartition struct {
	Upstream string
	Key      string
}

// StoreWindow is one window of a partition's budget in a reservation.
type StoreWindow struct {
	// ID names the window the same way in every process; see
	// [StoreWindowID].
	ID string
	// Cost is what this request counts in the window (1 for requests,
	// the estimated tokens for tokens). A cost of zero or less reserves
	// nothing in the window.
	Cost int64
	// Rate is the units per second the whole fleet may spend, headroom
	// already taken; zero or less means the window does not pace.
	Rate float64
	// Burst is how many units may go at once; less than one means one.
	// A negative Burst marks a window that is whole again only at its
	// reset (a fixed window, or one whose kind is not known yet): the
	// fleet may send -Burst units in each of its epochs, at once, and
	// what its readings say remains until the reset, but no more.
	Burst int64
}

// StoreReservation asks a [Store] for one request's turn in a partition.
type StoreReservation struct {
	Partition StorePartition
	// Windows are the partition's windows with a known quota, and what
	// the request costs in each.
	Windows []StoreWindow
	// MaxWait refuses the reservation when its wait would be longer (the
	// pacer's MaxWait or the time to the request's deadline, whichever is
	// sooner). Zero or negative means no cap.
	MaxWait time.Duration
	// ObservedSeq is the Seq of the newest fleet observation the caller
	// has applied; the grant carries a different one when there is one.
	ObservedSeq uint64
	// ColdStart, for a reservation without windows while the partition's
	// limits are not known, is how many such reservations the whole
	// fleet may have unanswered before a reading of the partition is
	// shared ([PacingConfig.ColdStart]); the others wait for a slot or
	// the reading. Zero or less means no bound.
	ColdStart int
}

// StoreGrant is a [Store]'s answer to a reservation.
type StoreGrant struct {
	// Wait is how long the request must wait before it is sent: the
	// shared cooldown and the windows of the whole fleet, measured on the
	// store's clock and returned as a duration.
	Wait time.Duration
	// Refused reports a wait longer than the reservation's MaxWait:
	// nothing was reserved and the request must not be sent.
	Refused bool
	// Breaker is the fleet's circuit for the upstream: BreakerClosed,
	// BreakerOpen (nothing reserved, Wait is the time left open: fail the
	// request as if the local circuit were open), or BreakerHalfOpen (this
	// request is the fleet's one probe; report its outcome in Settle).
	Breaker BreakerState
	// Seq orders reservations fleet-wide: observations from the response
	// to a reservation of higher Seq are newer. Zero when Shared is false.
	Seq uint64
	// Issued is, for each window of the reservation in order, the
	// fleet's cumulative cost reserved in it up to and including this
	// request; nil when Shared is false.
	Issued []int64
	// Observed is the newest rate-limit observation any process
	// published, when it differs from the reservation's ObservedSeq; nil
	// otherwise.
	Observed *StoreObservation
	// Fleet is how many processes reserved in the partition recently,
	// this one included; at least 1.
	Fleet int
	// Shared is false when the store could not reach its backend and
	// decided locally, at this process's share of the limits.
	Shared bool
	// Err is, when Shared is false, why the store decided locally: the
	// cause its backend gave (the connection refused, no answer in time,
	// the partition's keys refused). Nil when Shared is true or the store
	// does not say; the pacer's EventStore then names no cause.
	Err error
	// Lapse, when Shared is true, reports that the store fell back for
	// this partition since the partition's previous grant (a settlement
	// could not reach the backend) and shares again before any grant said
	// so: it is the fall back's cause. The pacer reports that fall back
	// and the rejoin, as two grants would have. Nil otherwise.
	Lapse error
}

// StoreObservation is a rate-limit reading shared through a [Store]: the
// windows a response announced to one process, and the Seq of the
// reservation the response answered.
type StoreObservation struct {
	Seq     uint64
	Windows []StoreObservedWindow
}

// StoreObservedWindow is one announced window in a [StoreObservation].
type StoreObservedWindow struct {
	ID        string        // see [StoreWindowID]
	Limit     int64         // the quota; -1 when not announced
	Remaining int64         // what is left; -1 when not announced
	Reset     time.Duration // time until the quota is back; negative when unknown
	Period    time.Duration // the window's length when the dialect states it; zero when unknown
	// Issued is the fleet's cumulative cost in the window up to the
	// observed request (from [StoreGrant.Issued]); -1 when unknown. A
	// store uses it to take what was reserved after the observed request
	// off what remains.
	Issued int64
	// Gradual reports a window that gives back what was used gradually
	// (a token bucket or a sliding window, as its headers showed it).
	// False means it is whole again only at its reset, as a fixed window
	// is: what remains until then is all the fleet may send.
	Gradual bool
}

// StoreSettlement reports the end of a reservation to a [Store].
type StoreSettlement struct {
	Partition StorePartition
	// Windows and Grant are the reservation's windows and its grant.
	Windows []StoreWindow
	Grant   StoreGrant
	// Sent is false when the request was never sent: its reservation is
	// given back.
	Sent bool
	// Actual is, for each window in order, the request's actual cost
	// when the response told it (usage), or -1; nil when none is known.
	// The difference from the reserved cost is charged or given back.
	Actual []int64
	// Observed is what the response's headers announced; nil if nothing.
	// Its Seq is the grant's.
	Observed *StoreObservation
	// Cooldown pauses the whole fleet's partition for this long from now
	// (after a 429 or a Retry-After hint); zero for none.
	Cooldown time.Duration
	// BreakerOpen, when positive, opens the fleet's circuit for the
	// upstream for this long: the local circuit opened, or the fleet's
	// probe failed.
	BreakerOpen time.Duration
	// BreakerClosed closes the fleet's circuit: the fleet's probe (a
	// grant with Breaker BreakerHalfOpen) succeeded. Ignored when the
	// circuit is not half-open.
	BreakerClosed bool
	// Failed reports a sent attempt that failed at the upstream (a status
	// of 500 or more, or a transport error). A store may open the fleet's
	// circuit after enough failures in a row across the fleet; a sent
	// attempt that did not fail ends the run.
	Failed bool
}

// StoreWindowID returns the name of a window shared through a [Store]:
// its unit and name, such as "requests:minute", or "tokens:config" for a
// configured limit.
func StoreWindowID(u ratelimit.Unit, name string) string {
	return u.String() + ":" + name
}

// ParseStoreWindowID reverses [StoreWindowID]; ok is false for an ID it
// did not make.
func ParseStoreWindowID(id string) (u ratelimit.Unit, name string, ok bool) {
	us, name, found := strings.Cut(id, ":")
	if !found {
		return 0, "", false
	}
	for _, c := range [...]ratelimit.Unit{ratelimit.UnitRequests, ratelimit.UnitTokens, ratelimit.UnitInputTokens, ratelimit.UnitOutputTokens} {
		if c.String() == us {
			return c, name, true
		}
	}
	return 0, "", false
}

// storeObservation returns what a response's headers announced, read at
// now, as a reading to share; nil when they announced no window.
func storeObservation(rl ratelimit.Limits, now time.Time) *StoreObservation {
	var o *StoreObservation
	for _, w := range rl.Windows {
		if w.Unit < ratelimit.UnitRequests || w.Unit > ratelimit.UnitOutputTokens {
			continue
		}
		if o == nil {
			o = &StoreObservation{Windows: make([]StoreObservedWindow, 0, len(rl.Windows))}
		}
		reset := time.Duration(-1)
		if !w.Reset.IsZero() {
			reset = min(max(w.Reset.Sub(now), 0), maxHint)
		}
		o.Windows = append(o.Windows, StoreObservedWindow{ID: StoreWindowID(w.Unit, w.Name),
			Limit: w.Limit, Remaining: w.Remaining, Reset: reset, Period: max(w.Period, 0), Issued: -1})
	}
	return o
}

// rateLimits returns a shared reading as the windows a response would
// have announced at now, so that the pacer applies it as its own. Windows
// whose ID it cannot read are left out; values out of range read as
// unknown.
func (o *StoreObservation) rateLimits(now time.Time) ratelimit.Limits {
	var rl ratelimit.Limits
	if o == nil {
		return rl
	}
	for _, sw := range o.Windows {
		u, name, ok := ParseStoreWindowID(sw.ID)
		if !ok {
			continue
		}
		w := ratelimit.Window{Unit: u, Name: name, Limit: max(sw.Limit, -1), Remaining: max(sw.Remaining, -1), Period: max(sw.Period, 0)}
		if sw.Reset >= 0 {
			w.Reset = now.Add(min(sw.Reset, maxHint))
		}
		rl.Windows = append(rl.Windows, w)
	}
	return rl
}

// StoreRetryBudget is implemented by a [Store] that also keeps the fleet's
// retry budget per upstream, so that the retries of every process toward
// one upstream are bounded as one process's are ([BudgetConfig]): what
// the fleet's first attempts earned, at most Max banked, and Floor
// retries per second fleet-wide on top, rather than each process's
// budget and floor multiplied by the fleet. A Transport whose Store
// implements it asks before each retry (not after a 429); when the store
// cannot decide, the Transport's own budget does.
type StoreRetryBudget interface {
	// Retry credits r.Earned to the fleet's budget toward r.Upstream
	// and spends one retry of it. ok reports whether the retry may go;
	// shared is false when the store could not reach its backend and
	// decided nothing (ok is then false too).
	Retry(ctx context.Context, r StoreRetry) (ok, shared bool)
}

// StoreRetry asks a [StoreRetryBudget] for one retry.
type StoreRetry struct {
	// Upstream names the budget, as [StorePartition.Upstream] does.
	Upstream string
	// Earned is the retries this process's first attempts earned toward
	// the upstream since its last ask (a fraction of a retry each).
	Earned float64
	// Max is the most retries the fleet's budget keeps banked.
	Max float64
	// Floor is the retries per second the fleet may make on top of what
	// was earned, in bursts of FloorBurst; zero or less means none.
	Floor      float64
	FloorBurst int
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
