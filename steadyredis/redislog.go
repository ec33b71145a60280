package steadyredis

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// go-redis logs through one logger for the whole process (redis.SetLogger);
// while Redis is down, its connection pool prints a line for every dial
// that fails, about once per retry interval per process. A Store never
// changes that logger: replacing it would drop one a program set itself.
// A program that wants those lines bounded and in its own log installs
// RedisLogger, once, at start:
//
//	redis.SetLogger(steadyredis.RedisLogger(logger, 0))

// DefaultRedisLogEvery is how often RedisLogger lets one line of a kind
// through when its every is zero or less.
const DefaultRedisLogEvery = time.Minute

// maxLogKinds bounds the kinds of line RedisLogger counts; beyond it, a
// line of a new kind passes unbounded (go-redis has some dozens).
const maxLogKinds = 256

// RedisLogger returns a logger for go-redis's redis.SetLogger that writes
// each line to l (slog.Default() when nil) at Warn level, at most one line
// of each kind (its format: "redis: connection pool: failed to dial after
// %d attempts: %v" is one kind, whatever the attempts and error) per
// every; a line that follows lines left out says how many
// ("suppressed"). Zero or less means DefaultRedisLogEvery. Give it the
// slog.Logger of the steady Transport (steady.Config.Logger) to see why
// Redis failed beside the Transport's own events. It is safe for
// concurrent use.
func RedisLogger(l *slog.Logger, every time.Duration) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	if l == nil {
		l = slog.Default()
	}
	return &redisLogger{l: l, every: positiveOr(every, DefaultRedisLogEvery), now: time.Now, kinds: make(map[string]*logKind)}
}

type redisLogger struct {
	l     *slog.Logger
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	kinds map[string]*logKind // by format; guarded by mu
}

// logKind is when a kind of line was last written and how many were
// left out since.
type logKind struct {
	at      time.Time
	dropped int
}

// Printf writes the line, or counts it when one of its kind was written
// less than every ago.
func (r *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	now := r.now()
	r.mu.Lock()
	k := r.kinds[format]
	if k == nil && len(r.kinds) < maxLogKinds {
		k = &logKind{}
		r.kinds[format] = k
	}
	dropped := 0
	if k != nil {
		if !k.at.IsZero() && now.Sub(k.at) < r.every {
			k.dropped++
			r.mu.Unlock()
			return
		}
		k.at, dropped, k.dropped = now, k.dropped, 0
	}
	r.mu.Unlock()
	attrs := []any{"source", "go-redis"}
	if dropped > 0 {
		attrs = append(attrs, "suppressed", dropped)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	r.l.WarnContext(ctx, fmt.Sprintf(format, v...), attrs...)
}
