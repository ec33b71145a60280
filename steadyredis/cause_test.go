package steadyredis

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
	"github.com/steady-go/steady/store"
)

// closedAddr returns an address where nothing listens: a dial there is
// refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// silentAddr returns the address of a listener that accepts connections
// and never answers; they are closed when t ends.
func silentAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// TestFallbackCause: the error of a fall back names its real cause, in
// the store's Change, in the grant and in the pacer's EventStore: a
// refused connection is not "did not answer in time", and a connection
// accepted and never answered is, with either kind of client (one that
// honours context deadlines, one that does not).
func TestFallbackCause(t *testing.T) {
	needRedis(t) // the tests that need Redis run together
	for _, tc := range []struct {
		name      string
		addr      func(*testing.T) string
		want, not error
	}{
		{"refused", closedAddr, ErrRefused, ErrTimeout},
		{"silent", silentAddr, ErrTimeout, ErrRefused},
	} {
		for _, direct := range []bool{true, false} {
			name := tc.name + "/ContextTimeoutEnabled"
			if !direct {
				name = tc.name + "/ReadTimeout"
			}
			t.Run(name, func(t *testing.T) {
				c := redis.NewClient(&redis.Options{Addr: tc.addr(t), ContextTimeoutEnabled: direct,
					DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
				defer c.Close()
				var ch changes
				// A timeout long beside a refused dial (immediate on
				// loopback), so that a loaded machine still sees it.
				s := must(New(c, WithNotify(ch.add), WithTimeout(300*time.Millisecond)))
				defer s.Close()
				g := mustReserve(t, s, reservation(1))
				check := func(what string, err error) {
					t.Helper()
					if !errors.Is(err, tc.want) || errors.Is(err, tc.not) {
						t.Errorf("%s %v, want %v", what, err, tc.want)
					}
					if tc.want == ErrRefused && (err == nil || strings.Contains(err.Error(), "in time") ||
						!strings.Contains(err.Error(), "refused") || !errors.Is(err, syscall.ECONNREFUSED)) {
						t.Errorf("%s %q, want it to say the connection was refused", what, err)
					}
				}
				if g.Shared {
					t.Fatalf("grant %+v, want local", g)
				}
				check("grant's Err", g.Err)
				ch.mu.Lock()
				got := append([]Change(nil), ch.got...)
				ch.mu.Unlock()
				if len(got) != 1 || got[0].Shared {
					t.Fatalf("changes %+v, want one fall back", got)
				}
				check("change's Err", got[0].Err)
				// Within the retry interval the store does not call Redis:
				// the grant still names the cause.
				check("next grant's Err", mustReserve(t, s, reservation(1)).Err)

				// Through a Transport: its EventStore names the cause.
				var evs eventLog
				tr := steady.New(steady.Config{Base: okUpstream(), Pacing: steady.PacingConfig{Store: s}, OnEvent: evs.add})
				req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				fb := evs.of(steady.EventStore)
				if len(fb) != 1 || fb[0].Reason != "fallback" {
					t.Fatalf("store events %+v, want one fallback", fb)
				}
				check("EventStore's Err", fb[0].Err)
			})
		}
	}
}

// okUpstream answers every request 200 with a small window.
func okUpstream() http.RoundTripper {
	fake := steadytest.NewFake()
	fake.OnFunc(nil, func(*steadytest.Request) steadytest.Response {
		return steadytest.Response{Status: 200, Body: `{"id":"x","object":"chat.completion","choices":[]}`}.WithHeader(
			"X-Ratelimit-Limit-Requests", "100", "X-Ratelimit-Remaining-Requests", "99", "X-Ratelimit-Reset-Requests", "1s")
	})
	return fake
}

// eventLog records a Transport's events.
type eventLog struct {
	mu  sync.Mutex
	evs []steady.Event
}

func (l *eventLog) add(ev steady.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) of(k steady.EventKind) []steady.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []steady.Event
	for _, ev := range l.evs {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// failHook makes the store's script calls fail, while on, as a refused
// connection would.
type failHook struct{ on atomic.Bool }

func (h *failHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); h.on.Load() && (n == "evalsha" || n == "eval") {
			err := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (h *failHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestLapseReported: when only a settlement finds Redis down (the
// partition reserves nothing until Redis answers again), the partition's
// next grant is shared and tells the lapse, and the pacer reports the
// fall back (with its cause) and the rejoin: every fall back the store
// logs and notifies is an EventStore too.
func TestLapseReported(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	h := &failHook{}
	hc := redis.NewClient(&redis.Options{Addr: sharedAddr, ContextTimeoutEnabled: true})
	defer hc.Close()
	hc.AddHook(h)
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	var ch changes
	s := must(New(hc, WithPrefix(prefix), WithNotify(ch.add), withClock(clk.now), WithTimeout(time.Second)))
	defer s.Close()
	var evs eventLog
	tr := steady.New(steady.Config{Base: okUpstream(), Pacing: steady.PacingConfig{Store: s}, OnEvent: evs.add})
	send := func() {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	send()
	if s.Shared() == false || len(evs.of(steady.EventStore)) != 0 {
		t.Fatalf("store shared %v, events %+v before the fault", s.Shared(), evs.of(steady.EventStore))
	}
	// Only a settlement goes to Redis while it fails: a 429's cooldown,
	// sent at once, for the partition the request used.
	var part store.Partition
	s.mu.Lock()
	for _, pt := range s.parts.list {
		if pt.id.Key != "" {
			part = pt.id
		}
	}
	s.mu.Unlock()
	h.on.Store(true)
	s.Settle(context.Background(), store.Settlement{Partition: part, Grant: store.Grant{Shared: true}, Sent: true, Cooldown: time.Millisecond})
	if s.Shared() {
		t.Fatal("store shared after a settlement failed")
	}
	h.on.Store(false)
	clk.advance(DefaultRetryInterval)
	send()
	if got := ch.list(); len(got) != 2 || got[0] || !got[1] {
		t.Fatalf("changes %v, want a fall back and a rejoin", got)
	}
	se := evs.of(steady.EventStore)
	if len(se) != 2 || se[0].Reason != "fallback" || !errors.Is(se[0].Err, ErrRefused) || se[1].Reason != "rejoined" {
		t.Fatalf("store events %+v, want the fall back (refused) and the rejoin", se)
	}
}
