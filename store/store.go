// Package store is the seam through which the processes of a fleet share
// steady's pacing: the [Store] interface a shared store implements, and
// the values that cross it. A user configures a Store in
// steady.PacingConfig.Store and never calls it; this package is for its
// implementers (github.com/steady-go/steady/steadyredis is one) and for
// tests that script one.
//
// Before each attempt steady's pacer calls [Store.Reserve] with the
// partition's windows and the request's cost in each, and waits the
// [Grant]'s Wait; after the attempt it calls [Store.Settle] with what the
// response announced ([Observation]), the cooldown after a 429 and the
// circuit breaker's verdict. A Store that also implements [RetryBudget]
// keeps the fleet's retry budget per upstream.
//
// The package depends on nothing of steady but package ratelimit, whose
// [ratelimit.Unit] names a window's unit in a [WindowID].
package store

import (
	"context"
	"strings"
	"time"

	"github.com/steady-go/steady/ratelimit"
)

// Store shares the pacing state of partitions among the processes of a
// fleet that use one credential, so that together they stay within the
// provider's limits. A steady.Transport without a Store paces what it sees
// alone and never calls one. Implementations live in their own modules
// (see github.com/steady-go/steady/steadyredis) and must be safe for
// concurrent use.
//
// Before each attempt the pacer calls Reserve; after it, Settle exactly
// once with what the attempt showed, or with Sent false when the request
// was not sent. When the provider counts tokens by usage
// (steady.PacingConfig.TokensByUsage) and the response's body told the
// tokens used, Settle is called once more when that body ends: the same
// Partition, Windows and Grant, Sent true, Actual set and nothing else. It
// corrects the reservation's cost and reports no outcome. When a stream
// that was settled as a success ends with a rate-limit error event, Settle
// is called with its Partition and a Cooldown and nothing else: it only
// pauses the fleet's partition, as after a 429. A Store never fails a
// request because it cannot reach its backend: it decides locally instead
// and says so in [Grant.Shared].
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
	Reserve(ctx context.Context, r Reservation) (Grant, error)

	// Settle reports how a granted reservation ended: given back unused
	// (Sent false), or sent, with the rate-limit windows its response
	// announced, the actual cost per window when known, a cooldown after a
	// 429 and the breaker's verdict. It never blocks longer than the
	// store's own timeout and reports no error: what cannot be shared is
	// dropped. A store may defer what is not urgent to the partition's
	// next reservation, so that the success path costs one round trip.
	Settle(ctx context.Context, s Settlement)
}

// Partition names a pacing partition to a [Store]: the upstream
// (scheme://host), which also names the circuit breaker, and the
// partition's label. The label never holds a credential, only its
// fingerprint, and is the same in every process for the same host, model
// and credential; stores hash both before writing them.
type Partition struct {
	// Upstream is the partition's scheme://host; it names the circuit.
	Upstream string
	// Key is the partition's label (host, model and the credential's
	// fingerprint).
	Key string
}

// Window is one window of a partition's budget in a reservation.
type Window struct {
	// ID names the window the same way in every process; see
	// [WindowID].
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
	// Keep is what the request leaves of the window for the requests that
	// may come after it (a batch request's share kept for interactive
	// ones). A request that keeps anything goes at the window's rate,
	// never in a burst: it may use of the fleet's burst only what exceeds
	// Keep and, in a window counted in epochs, only while Keep more units
	// than its cost remain of the epoch. Zero keeps nothing. A store that
	// cannot keep may ignore it.
	Keep int64
}

// Reservation asks a [Store] for one request's turn in a partition.
type Reservation struct {
	Partition Partition
	// Windows are the partition's windows with a known quota, and what
	// the request costs in each.
	Windows []Window
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
	// shared (steady.PacingConfig.ColdStart); the others wait for a slot or
	// the reading. Zero or less means no bound.
	ColdStart int
}

// Grant is a [Store]'s answer to a reservation.
type Grant struct {
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
	Observed *Observation
	// Fleet is how many processes reserved in the partition recently,
	// this one included; at least 1.
	Fleet int
	// Shared is false when the store could not reach its backend and
	// decided locally, at this process's share of the limits.
	Shared bool
	// Err is, when Shared is false, why the store decided locally: the
	// cause its backend gave (the connection refused, no answer in time,
	// the partition's keys refused). Nil when Shared is true or the store
	// does not say; the pacer's steady.EventStore then names no cause.
	Err error
	// Lapse, when Shared is true, reports that the store fell back for
	// this partition since the partition's previous grant (a settlement
	// could not reach the backend) and shares again before any grant said
	// so: it is the fall back's cause. The pacer reports that fall back
	// and the rejoin, as two grants would have. Nil otherwise.
	Lapse error
}

// Observation is a rate-limit reading shared through a [Store]: the
// windows a response announced to one process, and the Seq of the
// reservation the response answered.
type Observation struct {
	// Seq is the [Grant.Seq] of the reservation the response answered.
	Seq uint64
	// Windows are the windows the response announced.
	Windows []ObservedWindow
}

// ObservedWindow is one announced window in an [Observation].
type ObservedWindow struct {
	ID        string        // see [WindowID]
	Limit     int64         // the quota; -1 when not announced
	Remaining int64         // what is left; -1 when not announced
	Reset     time.Duration // time until the quota is back; negative when unknown
	Period    time.Duration // the window's length when the dialect states it; zero when unknown
	// Issued is the fleet's cumulative cost in the window up to the
	// observed request (from [Grant.Issued]); -1 when unknown. A
	// store uses it to take what was reserved after the observed request
	// off what remains.
	Issued int64
	// Gradual reports a window that gives back what was used gradually
	// (a token bucket or a sliding window, as its headers showed it).
	// False means it is whole again only at its reset, as a fixed window
	// is: what remains until then is all the fleet may send.
	Gradual bool
}

// Settlement reports the end of a reservation to a [Store].
type Settlement struct {
	Partition Partition
	// Windows and Grant are the reservation's windows and its grant.
	Windows []Window
	Grant   Grant
	// Sent is false when the request was never sent: its reservation is
	// given back.
	Sent bool
	// Actual is, for each window in order, the request's actual cost
	// when the response told it (usage), or -1; nil when none is known.
	// The difference from the reserved cost is charged or given back.
	Actual []int64
	// Observed is what the response's headers announced; nil if nothing.
	// Its Seq is the grant's.
	Observed *Observation
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

// WindowID returns the name of a window shared through a [Store]:
// its unit and name, such as "requests:minute", or "tokens:config" for a
// configured limit.
func WindowID(u ratelimit.Unit, name string) string {
	return u.String() + ":" + name
}

// ParseWindowID reverses [WindowID]; ok is false for an ID it
// did not make.
func ParseWindowID(id string) (u ratelimit.Unit, name string, ok bool) {
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

// RetryBudget is implemented by a [Store] that also keeps the fleet's
// retry budget per upstream, so that the retries of every process toward
// one upstream are bounded as one process's are (steady's
// RetryConfig.BudgetRatio and BudgetMinPerSecond): what the fleet's first
// attempts earned, at most Max banked, and Floor
// retries per second fleet-wide on top, rather than each process's
// budget and floor multiplied by the fleet. A Transport whose Store
// implements it asks before each retry (not after a 429); when the store
// cannot decide, the Transport's own budget does.
type RetryBudget interface {
	// Retry credits r.Earned to the fleet's budget toward r.Upstream
	// and spends one retry of it. ok reports whether the retry may go;
	// shared is false when the store could not reach its backend and
	// decided nothing (ok is then false too).
	Retry(ctx context.Context, r Retry) (ok, shared bool)
}

// Retry asks a [RetryBudget] for one retry.
type Retry struct {
	// Upstream names the budget, as [Partition.Upstream] does.
	Upstream string
	// Earned is the retries this process's first attempts earned toward
	// the upstream since its last ask (a fraction of a retry each).
	Earned float64
	// Max is the most retries the fleet's budget keeps banked.
	Max float64
	// Floor is the retries per second the fleet may make on top of what
	// was earned, in bursts of FloorBurst; zero or less means none.
	Floor float64
	// FloorBurst is how many of Floor's retries may go at once.
	FloorBurst int
}

// BreakerState is the state of a circuit breaker: steady's
// (steady.BreakerState is this type) and the fleet's circuit for an
// upstream, as a [Grant] reports it.
type BreakerState uint8

const (
	// BreakerClosed lets every request through.
	BreakerClosed BreakerState = iota
	// BreakerHalfOpen lets one probe request through: report its outcome
	// in Settle.
	BreakerHalfOpen
	// BreakerOpen fails every request at once.
	BreakerOpen
)

// String returns "closed", "half-open" or "open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return "unknown"
}
