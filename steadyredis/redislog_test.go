package steadyredis

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisLoggerBounds: lines of one kind pass at most once per interval,
// the next one saying how many were left out; other kinds pass on their
// own.
func TestRedisLoggerBounds(t *testing.T) {
	var buf lockedBuffer
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	rl := RedisLogger(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute).(*redisLogger)
	rl.now = clk.now
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	for range 60 { // a minute of Redis down, a line a second
		rl.Printf(context.Background(), dial, 5, "dial tcp 127.0.0.1:1: connect: connection refused")
		clk.advance(time.Second)
	}
	rl.Printf(context.Background(), "sentinel: new master=%q addr=%q", "m", "a")
	rl.Printf(context.Background(), dial, 5, "dial tcp 127.0.0.1:1: connect: connection refused")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "connection refused") || strings.Contains(lines[0], "suppressed") {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.Contains(lines[1], "sentinel: new master") {
		t.Errorf("second line %q, want the other kind", lines[1])
	}
	if !strings.Contains(lines[2], "suppressed=59") {
		t.Errorf("third line %q, want suppressed=59", lines[2])
	}
}

// TestRedisLoggerRealDials installs RedisLogger for go-redis while a
// store's Redis refuses connections: go-redis's dial-failure lines reach
// the given logger, at most one in the interval, however many dials fail.
func TestRedisLoggerRealDials(t *testing.T) {
	needRedis(t)
	var buf lockedBuffer
	redis.SetLogger(RedisLogger(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour))
	t.Cleanup(func() { redis.SetLogger(quiet{}) }) // as TestMain set it
	c := redis.NewClient(&redis.Options{Addr: closedAddr(t), ContextTimeoutEnabled: true, DialTimeout: 100 * time.Millisecond,
		DialerRetries: 1, MaxRetries: -1})
	defer c.Close()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	s := must(New(c, withClock(clk.now), WithTimeout(200*time.Millisecond)))
	defer s.Close()
	for range 5 { // each one a try of Redis, a dial that fails
		if g := mustReserve(t, s, reservation(1)); g.Shared {
			t.Fatalf("grant %+v, want local", g)
		}
		clk.advance(DefaultRetryInterval)
	}
	// go-redis dials in a goroutine of its own, which may log after the
	// call gave up: wait for it, boundedly.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && !strings.Contains(buf.String(), "failed to dial"); {
		time.Sleep(10 * time.Millisecond)
	}
	log := buf.String()
	if n := strings.Count(log, "failed to dial"); n != 1 {
		t.Errorf("%d dial-failure lines in the logger, want 1:\n%s", n, log)
	}
}
