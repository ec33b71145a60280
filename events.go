package steady

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/steady-go/steady/store"
)

// EventKind says what an [Event] reports.
type EventKind uint8

const (
	// EventRetry reports a failed attempt that will be retried after Wait.
	EventRetry EventKind = iota + 1
	// EventGiveUp reports that steady stopped retrying and handed the last
	// response or error back to the caller; Reason says why.
	EventGiveUp
	// EventPace reports that a request waited Wait before it was sent, to
	// stay under its partition's limits.
	EventPace
	// EventCooldown reports that a partition stops sending until Until,
	// after a 429 or a Retry-After hint.
	EventCooldown
	// EventBreakerState reports a circuit breaker moving From one state To
	// another, and why (Reason). A change to open carries the open period
	// in Wait and its end in Until.
	EventBreakerState
	// EventRejected reports a request failed without being sent: its
	// circuit is open (and it could not, or was not to, wait for it), or
	// its pacing wait would pass its deadline.
	EventRejected
	// EventAttempt reports one upstream attempt that finished: Status is
	// its response's (0 when it failed with Err), Duration how long the
	// attempt took, Attempt its number, Partition its pacing partition and
	// Wait how long it waited to be admitted (pacing, and the breaker);
	// Reason is "half-open probe" and To BreakerHalfOpen for a circuit
	// breaker's probe (To is BreakerClosed otherwise). It is
	// logged at Debug level.
	EventAttempt
	// EventStore reports a partition's pacing store ([PacingConfig.Store])
	// falling back to local pacing at this process's share of the limits
	// (Reason "fallback", with Err) or rejoining the fleet (Reason
	// "rejoined"), once per partition: a store may fall back for one
	// partition alone.
	EventStore
	// EventUsage reports the tokens a response said it used (Used), read
	// from its body as the caller read it, against what its attempt
	// reserved (Reserved). Where the provider counts by usage
	// ([PacingConfig.TokensByUsage]), the reservation is settled with Used.
	EventUsage
	// EventUpstream reports one of [Config.Upstreams] changing standing:
	// its key refused (Reason says how; Until is its next probe), so that
	// requests skip it, or accepted again, so that it is ramped back. It
	// also reports a request that waited in Upstream's queue moving to
	// another upstream's, which sends it sooner: Reason is "moved to
	// NAME: would go sooner", or "moved to NAME: its turn here was past
	// its deadline", and Until when it is planned there. A move is logged
	// at Debug level, a change of standing at Warn.
	EventUpstream
)

// String returns the kind's name, such as "retry".
func (k EventKind) String() string {
	switch k {
	case EventRetry:
		return "retry"
	case EventGiveUp:
		return "give-up"
	case EventPace:
		return "pace"
	case EventCooldown:
		return "cooldown"
	case EventBreakerState:
		return "breaker"
	case EventRejected:
		return "rejected"
	case EventAttempt:
		return "attempt"
	case EventStore:
		return "store"
	case EventUsage:
		return "usage"
	case EventUpstream:
		return "upstream"
	}
	return "unknown"
}

// BreakerState is the state of an upstream's circuit breaker. It is
// store.BreakerState, the state a Store reports for the fleet's circuit;
// its String method returns "closed", "half-open" or "open".
type BreakerState = store.BreakerState

const (
	// BreakerClosed lets every request through.
	BreakerClosed BreakerState = store.BreakerClosed
	// BreakerHalfOpen lets a few probe requests through.
	BreakerHalfOpen BreakerState = store.BreakerHalfOpen
	// BreakerOpen fails every request at once.
	BreakerOpen BreakerState = store.BreakerOpen
)

// Event describes something steady did: a retry, a wait, a breaker state
// change. It never holds credentials. Fields that do not apply to a kind
// are zero.
type Event struct {
	Kind      EventKind // what happened
	Time      time.Time // when it happened
	Upstream  string    // scheme://host of the request, or the Name of the [Upstream] it was routed to
	Partition string    // pacing partition label; never contains a credential
	// Model is the model the request names (its JSON body's "model", as
	// its pacing partition has it), when pacing read it; "" otherwise.
	// Like Upstream it is bounded only by the partitions steady keeps:
	// an observer that makes it a label caps its distinct values.
	Model     string
	Method    string        // the request's HTTP method
	Path      string        // the request's URL path, without its query
	RequestID string        // the upstream's request id, when a response carried one
	Status    int           // HTTP status of the response the event concerns, if any
	Attempt   int           // 1 for the first attempt, 2 for the first retry, ...
	Wait      time.Duration // how long the request waits (retry, pace) or waited
	Until     time.Time     // when a cooldown or an open period ends
	From, To  BreakerState  // a breaker's old and new state; for EventAttempt, To is the state it was admitted in
	Reason    string        // why, in a few words, e.g. "429 rate limit"
	Err       error         // the transport error concerned, if any; never holds the request URL
	Duration  time.Duration // how long an attempt took (EventAttempt)
	// Used and Reserved are, for EventUsage, the tokens the response said
	// it used and those its attempt reserved: Reserved.Total() minus
	// Used.Total() is the estimate's error.
	Used, Reserved TokenEstimate
	Priority       Priority // the request's priority (EventPace, EventRejected, EventAttempt)
	// Context is the context of the request the event concerns, so that an
	// observer can relate the event to the caller's trace; nil for events
	// that concern no single request (breaker changes).
	Context context.Context
}

// emit delivers ev to OnEvent and Logger. It must never be called with a
// lock held.
func (t *Transport) emit(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if t.cfg.OnEvent != nil {
		t.cfg.OnEvent(ev)
	}
	if obs := t.observers.Load(); obs != nil {
		for _, o := range *obs {
			o.fn(ev)
		}
	}
	if t.cfg.Logger != nil {
		t.logs.log(t.cfg.Logger, ev)
	}
}

// logLevel is the level ev is logged at.
func logLevel(ev Event) slog.Level {
	switch ev.Kind {
	case EventPace, EventCooldown, EventAttempt, EventUsage:
		return slog.LevelDebug
	case EventRetry:
		return slog.LevelInfo
	case EventUpstream:
		if strings.HasPrefix(ev.Reason, "moved to ") {
			return slog.LevelDebug // routine: the queues even out
		}
	}
	return slog.LevelWarn // give-ups, refusals, breaker changes
}

// burstWindow is how long like events are counted into one log line.
const burstWindow = time.Second

// maxBursts bounds the bursts counted at once; beyond it, events are
// logged one by one.
const maxBursts = 256

// burstKey says which events are alike for logging.
type burstKey struct {
	kind                        EventKind
	upstream, partition, reason string
	status                      int
}

// logBursts aggregates log lines: the first of a burst of like events is
// logged at once, the rest within burstWindow are counted and logged as
// one line when it ends. A nil *logBursts logs every event.
type logBursts struct {
	mu sync.Mutex
	m  map[burstKey]*burst // guarded by mu
}

// burst counts the like events after the first.
type burst struct {
	n    int   // events counted since the first
	last Event // the latest of them
}

func (lb *logBursts) log(l *slog.Logger, ev Event) {
	level := logLevel(ev)
	if !l.Enabled(context.Background(), level) {
		return
	}
	if lb == nil || level < slog.LevelInfo || ev.Kind == EventBreakerState {
		logEvent(l, level, ev, 0)
		return
	}
	k := burstKey{ev.Kind, ev.Upstream, ev.Partition, ev.Reason, ev.Status}
	lb.mu.Lock()
	if b := lb.m[k]; b != nil {
		b.n++
		b.last = ev
		lb.mu.Unlock()
		return
	}
	if len(lb.m) >= maxBursts {
		lb.mu.Unlock()
		logEvent(l, level, ev, 0)
		return
	}
	lb.m[k] = &burst{}
	lb.mu.Unlock()
	logEvent(l, level, ev, 0)
	time.AfterFunc(burstWindow, func() {
		lb.mu.Lock()
		b := lb.m[k]
		delete(lb.m, k)
		lb.mu.Unlock()
		if b.n > 0 {
			logEvent(l, level, b.last, b.n)
		}
	})
}

// logEvent writes ev to l. Only the fields of Event are logged: never a
// header other than the request id, never a credential. repeats, when
// not zero, is how many like events ev stands for.
func logEvent(l *slog.Logger, level slog.Level, ev Event, repeats int) {
	ctx := context.Background()
	attrs := make([]slog.Attr, 0, 14)
	add := func(a slog.Attr) { attrs = append(attrs, a) }
	if ev.Upstream != "" {
		add(slog.String("upstream", ev.Upstream))
	}
	if ev.Partition != "" {
		add(slog.String("partition", ev.Partition))
	}
	if ev.Method != "" {
		add(slog.String("method", ev.Method))
	}
	if ev.Path != "" {
		add(slog.String("path", ev.Path))
	}
	if ev.RequestID != "" {
		add(slog.String("request_id", ev.RequestID))
	}
	if ev.Status != 0 {
		add(slog.Int("status", ev.Status))
	}
	if ev.Attempt != 0 {
		add(slog.Int("attempt", ev.Attempt))
	}
	if ev.Wait != 0 {
		add(slog.Duration("wait", ev.Wait))
	}
	if ev.Duration != 0 {
		add(slog.Duration("duration", ev.Duration))
	}
	if !ev.Until.IsZero() {
		add(slog.Time("until", ev.Until))
	}
	if ev.Kind == EventBreakerState {
		add(slog.String("from", ev.From.String()))
		add(slog.String("to", ev.To.String()))
	}
	if ev.Kind == EventUsage {
		add(slog.Int64("used_tokens", ev.Used.Total()))
		add(slog.Int64("reserved_tokens", ev.Reserved.Total()))
	}
	if ev.Reason != "" {
		add(slog.String("reason", ev.Reason))
	}
	if ev.Err != nil {
		add(slog.String("error", ev.Err.Error()))
	}
	msg := "steady: " + ev.Kind.String()
	if repeats > 0 {
		add(slog.Int("count", repeats))
		add(slog.Duration("within", burstWindow))
		msg += " (repeated)"
	}
	l.LogAttrs(ctx, level, msg, attrs...)
}

// observer is one function registered with [Transport.Observe].
type observer struct{ fn func(Event) }

// Observe registers fn to receive every event, beside Config.OnEvent, and
// returns a function that removes it. It is meant for integrations (such as
// metrics and tracing) set up after [New]; fn follows the rules of OnEvent.
func (t *Transport) Observe(fn func(Event)) (remove func()) {
	if t == nil || fn == nil {
		return func() {}
	}
	o := &observer{fn: fn}
	t.obsMu.Lock()
	defer t.obsMu.Unlock()
	var list []*observer
	if cur := t.observers.Load(); cur != nil {
		list = slices.Clone(*cur)
	}
	list = append(list, o)
	t.observers.Store(&list)
	return func() {
		t.obsMu.Lock()
		defer t.obsMu.Unlock()
		cur := t.observers.Load()
		if cur == nil {
			return
		}
		list := slices.DeleteFunc(slices.Clone(*cur), func(x *observer) bool { return x == o })
		t.observers.Store(&list)
	}
}

// observed reports whether any event consumer is set, so that events that
// cost something to build (EventAttempt) are skipped when nobody listens.
func (t *Transport) observed() bool {
	return t.cfg.OnEvent != nil || t.cfg.Logger != nil || t.observers.Load() != nil
}
