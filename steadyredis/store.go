// Package steadyredis shares steady's pacing among the processes of a
// fleet through Redis: one budget per partition (upstream, model and
// credential fingerprint), the newest rate-limit reading any process saw,
// the cooldown after a 429, and the upstream's circuit breaker.
//
// Every reservation is one Lua script run on Redis's own clock: a GCRA
// (generic cell rate algorithm) per window, so that the fleet's requests
// are spaced as one process's would be. What a response tells is sent
// with the partition's next reservation, so a request costs one round
// trip; a 429 or a breaker change is sent at once.
//
// The store fails open. Every call has a tight timeout; when Redis is
// slow, down or unreachable, each process paces alone at its share of
// the limits (the fleet's size is known from heartbeats kept with the
// reservations), tries Redis again at most once per retry interval, and
// rejoins the fleet when it answers. Both changes are logged and reported
// to the WithNotify callback. A restarted, empty Redis is simply filled
// again.
//
// Keys hold hashes of the upstream and of the partition's label (which
// itself holds only a fingerprint of the credential), never a credential;
// every key has a TTL; the keys of one upstream share a Redis Cluster hash
// slot.
package steadyredis

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/store"
)

// Defaults of the options.
const (
	DefaultPrefix        = "steady:"
	DefaultTimeout       = 25 * time.Millisecond
	DefaultRetryInterval = time.Second
	DefaultKeyTTL        = 10 * time.Minute
	DefaultHeartbeatTTL  = 10 * time.Second
	DefaultProbeTimeout  = 30 * time.Second
	DefaultFlushDelay    = 100 * time.Millisecond
	DefaultFleetFailures = 5
	DefaultFleetOpen     = time.Second
)

//go:embed reserve.lua
var reserveLua string

var reserveScript = redis.NewScript(reserveLua)

// Option configures a [Store].
type Option func(*config)

type config struct {
	prefix       string
	timeout      time.Duration
	retry        time.Duration
	keyTTL       time.Duration
	heartbeatTTL time.Duration
	probeTimeout time.Duration
	flushDelay   time.Duration
	fleetHint    int
	// fleetFailures (<= 0: off) failures in a row across the fleet open
	// the upstream's circuit for fleetOpen.
	fleetFailures int
	fleetOpen     time.Duration
	instance      string
	secret        []byte // keys the hash of key names; nil: none
	logger        *slog.Logger
	notify        func(Change)
	now           func() time.Time
	// scriptClock has the script read now rather than Redis's TIME: a
	// test's fake clock (testing/synctest), shared by the whole fleet.
	scriptClock bool
}

// WithPrefix sets the prefix of every key. Empty means "steady:". A
// prefix holding a brace, a control character or more than
// [MaxPrefixLen] bytes is refused by [New]: a brace would move the
// keys of one upstream out of their Cluster hash slot (the script then
// fails with CROSSSLOT for ever).
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// MaxPrefixLen bounds the length of a key prefix.
const MaxPrefixLen = 128

// WithSecret keys the hash that names a partition's keys in Redis (an
// HMAC-SHA256 of the upstream and the partition's label, which holds a
// 64-bit fingerprint of the credential), so that a reader of Redis who
// guesses a credential cannot confirm the guess by recomputing a key's
// name. Every process of the fleet must be given the same secret, from
// where it gets its credentials (never from Redis): processes with
// different secrets do not share their budgets. Nil or empty means an
// unkeyed SHA-256, as identical in every process but open to that check.
func WithSecret(secret []byte) Option {
	return func(c *config) { c.secret = append([]byte(nil), secret...) }
}

// WithTimeout bounds every Redis call; a call that takes longer counts as
// Redis being down. Zero or less means 25ms.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithRetryInterval is how often a process pacing alone tries Redis again.
// Zero or less means one second.
func WithRetryInterval(d time.Duration) Option { return func(c *config) { c.retry = d } }

// WithKeyTTL is how long a partition's keys outlive their last use (plus
// any wait or cooldown they hold). Zero or less means 10 minutes.
func WithKeyTTL(d time.Duration) Option { return func(c *config) { c.keyTTL = d } }

// WithHeartbeatTTL is how long a process counts in a partition's fleet
// after its last reservation there. Zero or less means 10 seconds.
func WithHeartbeatTTL(d time.Duration) Option { return func(c *config) { c.heartbeatTTL = d } }

// WithProbeTimeout is how long the fleet waits for the outcome of its one
// half-open probe before another process may probe. Zero or less means 30
// seconds.
func WithProbeTimeout(d time.Duration) Option { return func(c *config) { c.probeTimeout = d } }

// WithFlushDelay is how long what a response told waits for the
// partition's next reservation to carry it before it is sent alone. Zero
// or less means 100ms.
func WithFlushDelay(d time.Duration) Option { return func(c *config) { c.flushDelay = d } }

// WithFleetHint is the fleet size assumed for a partition while Redis has
// never answered for it, so that a process that starts with Redis down
// paces at its share. Zero or less means 1 (the whole limit).
func WithFleetHint(n int) Option { return func(c *config) { c.fleetHint = n } }

// WithFleetFailures opens the upstream's circuit for the whole fleet
// after n attempts in a row failed at the upstream (statuses 500 and
// above, transport errors) across the fleet, for open; a probe then goes
// as after any open period. Zero means 5 failures and one second (as a
// steady Transport's own breaker); n less than zero turns it off, leaving
// each process's own breaker to open the fleet's circuit.
func WithFleetFailures(n int, open time.Duration) Option {
	return func(c *config) { c.fleetFailures, c.fleetOpen = n, open }
}

// WithInstanceID names this process in heartbeats. Empty means a random ID.
func WithInstanceID(id string) Option { return func(c *config) { c.instance = id } }

// WithLogger sets where falling back and rejoining are logged. Nil means
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithNotify calls fn when the store falls back to local pacing and when
// it rejoins the fleet. fn is never called with a lock held.
func WithNotify(fn func(Change)) Option { return func(c *config) { c.notify = fn } }

// Change reports the store falling back to local pacing (Shared false,
// with the error that caused it) or rejoining the fleet (Shared true),
// as a whole or for one partition (Key).
type Change struct {
	Time   time.Time
	Shared bool
	Err    error
	// Key is the budget key of the one partition that changed, when
	// Redis refused (or accepts again) that partition's keys alone;
	// empty when the whole store changed.
	Key string
}

// Store is a [store.Store] backed by Redis. Make one with [New]; it is
// safe for concurrent use. Close it when done so that what responses told
// is not lost.
type Store struct {
	c      redis.UniversalClient
	cfg    config
	direct bool // the client honours context deadlines itself
	dials  *dialTrace

	calls sync.WaitGroup // Redis calls and flushes in progress

	mu      sync.Mutex
	parts   partTable // guarded by mu
	shared  bool      // Redis answered last; guarded by mu
	cause   error     // why the last call failed, while not shared; guarded by mu
	lapse   error     // a failed call for no partition, until a grant tells it; guarded by mu
	retryAt time.Time // next try while not shared; guarded by mu
	probing bool      // a call tries Redis while not shared; guarded by mu
	closed  bool      // guarded by mu
}

var _ store.Store = (*Store)(nil)

// New returns a store that coordinates through client, which may be a
// standalone, Sentinel (failover) or Cluster client. A client made with
// ContextTimeoutEnabled abandons a slow call at the store's timeout;
// otherwise the call goes on in the background until the client's own
// read timeout while the store has already decided locally. The error
// reports a nil client or a prefix that cannot work (see [WithPrefix]).
//
// New adds one hook to client (redis.Hook) that records whether its last
// dial failed, so that a fall back names its cause (ErrRefused rather
// than ErrTimeout when nothing listens); the hook passes every call
// through unchanged and stays with the client after Close.
func New(client redis.UniversalClient, opts ...Option) (*Store, error) {
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	if client == nil {
		return nil, errors.New("steadyredis: New: nil client")
	}
	if cfg.prefix == "" {
		cfg.prefix = DefaultPrefix
	}
	if err := checkPrefix(cfg.prefix); err != nil {
		return nil, err
	}
	cfg.timeout = positiveOr(cfg.timeout, DefaultTimeout)
	cfg.retry = positiveOr(cfg.retry, DefaultRetryInterval)
	cfg.keyTTL = positiveOr(cfg.keyTTL, DefaultKeyTTL)
	cfg.heartbeatTTL = positiveOr(cfg.heartbeatTTL, DefaultHeartbeatTTL)
	cfg.probeTimeout = positiveOr(cfg.probeTimeout, DefaultProbeTimeout)
	cfg.flushDelay = positiveOr(cfg.flushDelay, DefaultFlushDelay)
	cfg.fleetHint = max(cfg.fleetHint, 1)
	if cfg.fleetFailures == 0 {
		cfg.fleetFailures = DefaultFleetFailures
	}
	cfg.fleetOpen = positiveOr(cfg.fleetOpen, DefaultFleetOpen)
	if cfg.instance == "" {
		var b [8]byte
		rand.Read(b[:])
		cfg.instance = hex.EncodeToString(b[:])
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	s := &Store{c: client, cfg: cfg, shared: true}
	s.parts.init()
	s.dials = &dialTrace{}
	client.AddHook(s.dials)
	switch c := client.(type) {
	case *redis.Client:
		s.direct = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		s.direct = c.Options().ContextTimeoutEnabled
	}
	return s, nil
}

// checkPrefix refuses a key prefix that cannot work: one with a brace
// (a hash tag of its own, or one that splits the store's tag, would put
// the keys of one upstream in different Cluster slots, and every script
// would fail with CROSSSLOT), a control character, or more than
// MaxPrefixLen bytes.
func checkPrefix(p string) error {
	if len(p) > MaxPrefixLen {
		return fmt.Errorf("steadyredis: prefix of %d bytes; at most %d", len(p), MaxPrefixLen)
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '{' || c == '}':
			return fmt.Errorf("steadyredis: prefix %q holds %q: on a Redis Cluster the keys of one upstream would not share a hash slot (CROSSSLOT); use a prefix without braces", p, string(c))
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("steadyredis: prefix %q holds the control character %#x", p, c)
		}
	}
	return nil
}

func positiveOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Shared reports whether the store's last call to Redis succeeded.
func (s *Store) Shared() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shared && !s.closed
}

// Close sends what responses told that is still waiting, stops the
// store's timers and waits for its calls to Redis to end. The client is
// not closed. Afterwards the store paces locally.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	parts := append([]*part(nil), s.parts.list...)
	s.mu.Unlock()
	for _, pt := range parts {
		pt.mu.Lock()
		if pt.timer != nil {
			pt.timer.Stop()
			pt.timer = nil
		}
		pt.mu.Unlock()
		s.flush(pt)
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.calls.Wait()
	return nil
}

// part is one partition's keys, what waits to be sent, and the state used
// while pacing locally.
type part struct {
	id   store.Partition
	keys []string // budget, heartbeats, breaker

	mu       sync.Mutex
	pend     pending     // guarded by mu
	timer    *time.Timer // flushes pend; guarded by mu
	fleet    int         // last fleet size Redis told; 0 unknown; guarded by mu
	local    map[string]time.Time
	cool     time.Time       // local cooldown end; guarded by mu
	cold     map[uint64]bool // Seqs of this process's cold reservations in the fleet's count; guarded by mu
	lastUsed time.Time       // guarded by mu

	// Redis refused this partition's keys (see partfail.go), with
	// brokenErr: it paces locally until retryAt. Guarded by mu.
	broken    bool
	brokenErr error
	retryAt   time.Time
	// lapse is the cause of a call for this partition that failed since
	// its last grant, which the next grant tells. Guarded by mu.
	lapse error
	// kick wakes one reservation that was told to ask again at its
	// window's epoch end (cold.go): a reading was shared since, and may
	// have left room before then.
	kick chan struct{}
}

// wake wakes one reservation of pt waiting to ask again, if any.
func (pt *part) wake() {
	select {
	case pt.kick <- struct{}{}:
	default:
	}
}

// maxParts bounds the partitions kept; idle ones are dropped beyond it.
const maxParts = 1024

// part returns the state of partition p, creating it if needed. Its cost
// does not grow with the number of partitions: see partTable.
func (s *Store) part(p store.Partition, now time.Time) *part {
	s.mu.Lock()
	pt := s.parts.m[p]
	s.mu.Unlock()
	if pt != nil {
		return pt
	}
	keys := s.keys(p) // hashed outside the lock
	s.mu.Lock()
	defer s.mu.Unlock()
	if pt = s.parts.m[p]; pt == nil {
		pt = &part{id: p, keys: keys, local: make(map[string]time.Time), lastUsed: now, kick: make(chan struct{}, 1)}
		s.parts.add(pt, now, s.cfg.keyTTL)
	}
	return pt
}

// keys returns a partition's keys: prefix{upstream hash}:p:partition hash,
// the heartbeats beside it, and the upstream's breaker. The hashes are
// SHA-256, or HMAC-SHA256 under the store's secret (WithSecret), cut to
// 64 bits: fixed-length names whatever the upstream and label.
func (s *Store) keys(p store.Partition) []string {
	sum := func(parts ...string) string {
		var h hash.Hash
		if len(s.cfg.secret) > 0 {
			h = hmac.New(sha256.New, s.cfg.secret)
		} else {
			h = sha256.New()
		}
		for i, x := range parts {
			if i > 0 {
				h.Write([]byte{0})
			}
			h.Write([]byte(x))
		}
		return hex.EncodeToString(h.Sum(nil)[:8])
	}
	pid := sum(p.Upstream, p.Key)
	base := s.cfg.prefix + "{" + sum(p.Upstream) + "}:"
	return []string{base + "p:" + pid, base + "h:" + pid, base + "b"}
}

// begin reports whether a call should go to Redis: always while shared,
// and once per retry interval otherwise. A call it allows is counted until
// end, so that Close waits for it.
func (s *Store) begin(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.shared {
		s.calls.Add(1)
		return true
	}
	if !s.probing && !now.Before(s.retryAt) {
		s.probing = true
		s.calls.Add(1)
		return true
	}
	return false
}

// end records the outcome of a call begin allowed, and logs and reports
// a change.
func (s *Store) end(err error, now time.Time) {
	defer s.calls.Done()
	s.mu.Lock()
	was := s.shared
	s.shared = err == nil
	s.probing = false
	if err != nil {
		s.retryAt = now.Add(s.cfg.retry)
		s.cause = err
	}
	s.mu.Unlock()
	if was == (err == nil) {
		return
	}
	if err != nil {
		s.cfg.logger.Warn("steadyredis: Redis unavailable; pacing locally at this process's share of the limits", "err", err)
	} else {
		s.cfg.logger.Info("steadyredis: Redis answers again; pacing shared with the fleet")
	}
	if s.cfg.notify != nil {
		s.cfg.notify(Change{Time: now, Shared: err == nil, Err: err})
	}
}

// run runs the script within the timeout. Its error names the cause of
// a failure (see classify): ErrTimeout only when Redis did not answer in
// time, not when its connection was refused.
func (s *Store) run(ctx context.Context, keys []string, args []any) ([]any, error) {
	return s.runScript(ctx, reserveScript, keys, args)
}

// runScript runs script within the timeout, as run does; a reply that is
// not a list is returned as a list of one value.
func (s *Store) runScript(ctx context.Context, script *redis.Script, keys []string, args []any) ([]any, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	tr := s.dials
	if s.direct {
		v, err := replyOf(script.Run(cctx, s.c, keys, args...))
		if err != nil && ctx.Err() == nil {
			err = classify(err, tr.dialErr(), cctx.Err() != nil)
		}
		return v, err
	}
	type result struct {
		v   []any
		err error
	}
	ch := make(chan result, 1)
	s.calls.Add(1)
	go func() {
		defer s.calls.Done()
		v, err := replyOf(script.Run(cctx, s.c, keys, args...))
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && ctx.Err() == nil {
			r.err = classify(r.err, tr.dialErr(), cctx.Err() != nil)
		}
		return r.v, r.err
	case <-cctx.Done():
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, classify(nil, tr.dialErr(), true)
	}
}

// replyOf returns a script's reply as a list: its values, or the one
// value it is.
func replyOf(c *redis.Cmd) ([]any, error) {
	v, err := c.Result()
	if err != nil {
		return nil, err
	}
	if l, ok := v.([]any); ok {
		return l, nil
	}
	return []any{v}, nil
}

// localCause returns why a call does not go to Redis now that begin
// refused it: the store closed, or the cause of its last failure.
func (s *Store) localCause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.cause == nil {
		return ErrTimeout // unreachable: not shared only after a failure
	}
	return s.cause
}
