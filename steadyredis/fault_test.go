package steadyredis

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/store"
	"go.uber.org/goleak"
)

// ignoreServer ignores the goroutine reading a test server's output.
var ignoreServer = goleak.IgnoreAnyFunction("github.com/steady-go/steady/steadyredis.(*server).start.func1")

// run reserves and settles n requests from each of g goroutines, failing
// t on any error, and returns how many grants were shared.
func run(t *testing.T, s *Store, g, n int, r store.Reservation) (shared int) {
	t.Helper()
	var count atomic.Int64
	var wg sync.WaitGroup
	for range g {
		wg.Go(func() {
			for range n {
				gr, err := s.Reserve(context.Background(), r)
				if err != nil {
					t.Errorf("Reserve failed: %v", err)
					return
				}
				if gr.Shared {
					count.Add(1)
				}
				s.Settle(context.Background(), store.Settlement{Partition: r.Partition, Windows: r.Windows, Grant: gr, Sent: true,
					Observed: &store.Observation{Windows: []store.ObservedWindow{{ID: "requests:minute", Limit: 600, Remaining: 500, Reset: time.Second, Issued: -1}}}})
			}
		})
	}
	wg.Wait()
	return int(count.Load())
}

// TestUnreachableAtStart checks that a store whose Redis never answers
// paces locally at its share of the limits, without failing a call, and
// tries Redis once per retry interval.
func TestUnreachableAtStart(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), ignoreServer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	rt := &roundTrips{}
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 20 * time.Millisecond})
	defer c.Close()
	c.AddHook(rt)
	clk := &clock{t: time.Unix(1e9, 0)}
	var ch changes
	s := must(New(c, WithFleetHint(4), WithNotify(ch.add), withClock(clk.now), WithTimeout(100*time.Millisecond)))
	defer s.Close()
	// A quarter of 100/s with a burst of 8: 25/s, bursts of 2.
	r := reservation(1, store.Window{ID: "requests:minute", Cost: 1, Rate: 100, Burst: 8})
	var waits []time.Duration
	for range 4 {
		g := mustReserve(t, s, r)
		if g.Shared || g.Refused || g.Fleet != 4 {
			t.Fatalf("grant %+v without Redis, want local with a fleet of 4", g)
		}
		waits = append(waits, g.Wait)
	}
	if want := []time.Duration{0, 0, 40 * time.Millisecond, 80 * time.Millisecond}; !slices.Equal(waits, want) {
		t.Errorf("local waits %v, want %v", waits, want)
	}
	// A local reservation given back is returned to the local share; a
	// 429 pauses the local share too.
	g := mustReserve(t, s, r)
	s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: false})
	if g2 := mustReserve(t, s, r); g2.Wait != g.Wait {
		t.Errorf("wait %v after a give-back, want %v again", g2.Wait, g.Wait)
	} else {
		s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g2, Sent: true, Cooldown: 5 * time.Second})
	}
	if g := mustReserve(t, s, r); g.Wait < 5*time.Second {
		t.Errorf("wait %v after a 5s cooldown, want at least 5s", g.Wait)
	}
	if got := rt.count(); got != 1 {
		t.Errorf("%d calls to Redis within the retry interval, want 1", got)
	}
	clk.advance(DefaultRetryInterval)
	mustReserve(t, s, r)
	mustReserve(t, s, r)
	if got := rt.count(); got != 2 {
		t.Errorf("%d calls to Redis after one retry interval, want 2", got)
	}
	if got := ch.list(); !slices.Equal(got, []bool{false}) {
		t.Errorf("changes %v, want one fall back", got)
	}
}

// TestRestartedEmpty stops Redis while many goroutines reserve, starts it
// again empty, and checks that no call fails, that the store falls back
// and rejoins once each, and that the partition's state is built anew.
func TestRestartedEmpty(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), ignoreServer)
	srv := startServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.addr, ContextTimeoutEnabled: true, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	clk := &clock{t: time.Unix(1e9, 0)}
	var ch changes
	s := must(New(c, WithNotify(ch.add), withClock(clk.now), WithTimeout(time.Second), WithPrefix("restart:")))
	defer s.Close()
	r := reservation(1, store.Window{ID: "requests:minute", Cost: 1, Rate: 1000, Burst: 100})

	// Mid-run: the server dies while goroutines reserve.
	var wg sync.WaitGroup
	var done atomic.Int64
	var fails atomic.Int64
	stop := make(chan struct{})
	halfway, later := make(chan struct{}), make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				g, err := s.Reserve(context.Background(), r)
				if err != nil {
					fails.Add(1)
				}
				s.Settle(context.Background(), store.Settlement{Partition: r.Partition, Windows: r.Windows, Grant: g, Sent: true})
				switch done.Add(1) {
				case 200:
					close(halfway)
				case 400:
					close(later)
				}
			}
		})
	}
	<-halfway
	srv.stop()
	<-later // the goroutines go on, deciding locally
	close(stop)
	wg.Wait()
	if fails.Load() > 0 {
		t.Fatalf("%d reservations failed while Redis was down", fails.Load())
	}
	if s.Shared() {
		t.Fatal("store still shared after Redis stopped")
	}

	srv.start() // empty
	// Not yet due for a retry: still local, no error.
	if shared := run(t, s, 4, 10, r); shared != 0 {
		t.Errorf("%d shared grants before the retry was due", shared)
	}
	// Due: one call tries Redis while the others go on locally; once it
	// answers, every reservation is shared again.
	clk.advance(DefaultRetryInterval)
	if shared := run(t, s, 4, 10, r); shared == 0 {
		t.Error("no grant shared after Redis returned")
	}
	if shared := run(t, s, 4, 10, r); shared != 40 {
		t.Errorf("%d of 40 grants shared after the store rejoined", shared)
	}
	if n, _ := c.Exists(context.Background(), s.keys(testPart)[:2]...).Result(); n != 2 {
		t.Errorf("%d of the partition's budget and heartbeat keys exist after the restart, want 2", n)
	}
	if got := ch.list(); !slices.Equal(got, []bool{false, true}) {
		t.Errorf("changes %v, want one fall back and one rejoin", got)
	}
}

// TestPaused pauses Redis (CLIENT PAUSE) for longer than the timeout and
// checks that reservations are decided locally within about the timeout,
// and that the store rejoins once Redis answers.
func TestPaused(t *testing.T) {
	for _, direct := range []bool{true, false} {
		name := "ContextTimeoutEnabled"
		if !direct {
			name = "ReadTimeout"
		}
		t.Run(name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), ignoreServer)
			srv := startServer(t)
			admin := redis.NewClient(&redis.Options{Addr: srv.addr})
			defer admin.Close()
			c := redis.NewClient(&redis.Options{Addr: srv.addr, ContextTimeoutEnabled: direct})
			defer c.Close()
			clk := &clock{t: time.Unix(1e9, 0)}
			var ch changes
			var logs lockedBuffer
			const timeout = 50 * time.Millisecond
			s := must(New(c, WithNotify(ch.add), withClock(clk.now), WithTimeout(timeout), WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))))
			defer s.Close()
			r := reservation(1)
			if g := mustReserve(t, s, r); !g.Shared {
				t.Fatalf("grant %+v before the pause, want shared", g)
			}
			if err := admin.ClientPause(context.Background(), 500*time.Millisecond).Err(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if shared := run(t, s, 4, 5, r); shared != 0 {
				t.Errorf("%d grants shared while Redis was paused", shared)
			}
			if d := time.Since(start); d > 400*time.Millisecond {
				t.Errorf("20 reservations took %v while paused; the timeout is %v", d, timeout)
			}
			// PING returns when the pause ends.
			if err := admin.Ping(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			clk.advance(DefaultRetryInterval)
			if g := mustReserve(t, s, r); !g.Shared {
				t.Errorf("grant %+v after the pause, want shared", g)
			}
			if got := ch.list(); !slices.Equal(got, []bool{false, true}) {
				t.Errorf("changes %v, want one fall back and one rejoin", got)
			}
			log := logs.String()
			if !strings.Contains(log, "level=WARN msg=\"steadyredis: Redis unavailable; pacing locally") || !strings.Contains(log, "level=INFO msg=\"steadyredis: Redis answers again") {
				t.Errorf("log %q, want a warning on fall back and a line on rejoin", log)
			}
		})
	}
}

// TestScriptFlush checks that an evicted script is loaded again at the
// cost of one more round trip, without a fall back.
func TestScriptFlush(t *testing.T) {
	srv := startServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.addr})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil { // connect first
		t.Fatal(err)
	}
	rt := &roundTrips{}
	c.AddHook(rt)
	var ch changes
	s := must(New(c, WithNotify(ch.add)))
	defer s.Close()
	r := reservation(1)
	trips := func() int {
		t.Helper()
		n := rt.count()
		if g := mustReserve(t, s, r); !g.Shared {
			t.Fatalf("grant %+v, want shared", g)
		}
		return rt.count() - n
	}
	if n := trips(); n != 2 {
		t.Errorf("first reservation took %d round trips, want 2 (EVALSHA, EVAL)", n)
	}
	if n := trips(); n != 1 {
		t.Errorf("reservation took %d round trips, want 1", n)
	}
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if n := trips(); n != 2 {
		t.Errorf("reservation after SCRIPT FLUSH took %d round trips, want 2", n)
	}
	if n := trips(); n != 1 {
		t.Errorf("reservation took %d round trips, want 1", n)
	}
	if got := ch.list(); len(got) != 0 {
		t.Errorf("changes %v, want none", got)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
