package steadyredis

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// sharedAddr is the Redis the tests use: 127.0.0.1:6379, as the
// project's machines and CI provide it, unless STEADY_REDIS_ADDR says.
var sharedAddr = cmp.Or(os.Getenv("STEADY_REDIS_ADDR"), "127.0.0.1:6379")

// needRedis returns a client of the Redis at sharedAddr, or skips the test
// when it does not answer (fails it when STEADY_REQUIRE_REDIS=1).
func needRedis(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: sharedAddr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond, ContextTimeoutEnabled: true})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		if os.Getenv("STEADY_REQUIRE_REDIS") == "1" {
			t.Fatalf("Redis at %s does not answer (%v) and STEADY_REQUIRE_REDIS=1", sharedAddr, err)
		}
		t.Skipf("Redis tests skipped: no Redis at %s (%v). Start one (redis-server --port 6379 --save '' --appendonly no, or set STEADY_REDIS_ADDR) and run again; STEADY_REQUIRE_REDIS=1 makes this a failure.", sharedAddr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testPrefix returns a key prefix of its own for t, and deletes its keys
// when t ends.
func testPrefix(t testing.TB, c *redis.Client) string {
	var b [6]byte
	rand.Read(b[:])
	p := "steadytest:" + strings.ReplaceAll(t.Name(), "/", ".") + ":" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, p+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	return p
}

// server is a redis-server of a test's own, on a port of its own, for the
// tests that stop, pause or flush it.
type server struct {
	t    testing.TB
	addr string
	port string
	cmd  *exec.Cmd
}

// startServer starts a redis-server on a free port, or skips t when the
// binary is not installed.
func startServer(t testing.TB) *server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed: fault tests skipped (apt-get install redis-server to run them)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	s := &server{t: t, addr: "127.0.0.1:" + port, port: port}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// start runs the server and returns once it accepts connections.
func (s *server) start() {
	s.t.Helper()
	cmd := exec.Command("redis-server", "--port", s.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok && strings.Contains(sc.Text(), "Ready to accept connections") {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	if !<-ready {
		s.stop()
		s.t.Fatalf("redis-server on port %s did not start", s.port)
	}
}

// stop kills the server, losing everything it held.
func (s *server) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// clock is a test clock for the store's retry schedule.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// withClock makes the store read the time from now.
func withClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// changes records what WithNotify reports.
type changes struct {
	mu  sync.Mutex
	got []Change
}

func (c *changes) add(ch Change) {
	c.mu.Lock()
	c.got = append(c.got, ch)
	c.mu.Unlock()
}

func (c *changes) list() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []bool
	for _, ch := range c.got {
		s = append(s, ch.Shared)
	}
	return s
}

// roundTrips counts the commands a client sends.
type roundTrips struct {
	mu sync.Mutex
	n  int
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.mu.Lock()
		r.n++
		r.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.mu.Lock()
		r.n++
		r.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (r *roundTrips) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// must returns the store New made, and panics on the error no test's
// options should cause.
func must(s *Store, err error) *Store {
	if err != nil {
		panic(err)
	}
	return s
}

// fleetShares returns the fleet's inferred share of the key (reserve.lua's
// fs:ID fields) in every partition hash under prefix, keyed by hash and
// window.
func fleetShares(t testing.TB, c *redis.Client, prefix string) map[string]float64 {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, k := range keys {
		if c.Type(ctx, k).Val() != "hash" {
			continue
		}
		for f, v := range c.HGetAll(ctx, k).Val() {
			if strings.HasPrefix(f, "fs:") {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s %s = %q: %v", k, f, v, err)
				}
				out[k+" "+f] = x
			}
		}
	}
	return out
}
