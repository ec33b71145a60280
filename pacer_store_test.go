package steady_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/steadytest"
	"github.com/steady-go/steady/store"
)

// scriptStore is an in-memory Store: it answers each reservation with
// grant(n) (n counts from 0) and records what it is asked and told.
type scriptStore struct {
	grant func(n int) store.Grant

	mu      sync.Mutex
	reserve []store.Reservation
	settle  []store.Settlement
}

func (s *scriptStore) Reserve(ctx context.Context, r store.Reservation) (store.Grant, error) {
	if err := ctx.Err(); err != nil {
		return store.Grant{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.reserve)
	s.reserve = append(s.reserve, r)
	g := store.Grant{Shared: true, Fleet: 1, Seq: uint64(n + 1)}
	if s.grant != nil {
		g = s.grant(n)
	}
	return g, nil
}

func (s *scriptStore) Settle(_ context.Context, st store.Settlement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle = append(s.settle, st)
}

func (s *scriptStore) calls() ([]store.Reservation, []store.Settlement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.Reservation(nil), s.reserve...), append([]store.Settlement(nil), s.settle...)
}

// limited is a completion announcing a requests window.
func limited(remaining string) steadytest.Response {
	return steadytest.ChatCompletion("Hi").WithHeader(
		"X-Ratelimit-Limit-Requests", "60",
		"X-Ratelimit-Remaining-Requests", remaining,
		"X-Ratelimit-Reset-Requests", "1s",
	)
}

// storeClient returns an SDK client through a Transport of cfg, sending
// to rt, in the given form.
func storeClient(cfg steady.Config, rt http.RoundTripper, form string) openai.Client {
	opts := []option.RequestOption{option.WithBaseURL("https://api.test/v1"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0)}
	if form == "middleware" {
		t := steady.New(cfg)
		return openai.NewClient(append(opts, option.WithHTTPClient(&http.Client{Transport: rt}), option.WithMiddleware(t.Middleware))...)
	}
	cfg.Base = rt
	return openai.NewClient(append(opts, option.WithHTTPClient(&http.Client{Transport: steady.New(cfg)}))...)
}

func sdkChat(ctx context.Context, c openai.Client) error {
	_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	return err
}

// TestStoreReservesEveryAttempt: each attempt is reserved once, in the
// windows the partition knows (none before its first response), waits
// the
// store's wait, and is settled with what its response announced, under
// the grant's Seq.
func TestStoreReservesEveryAttempt(t *testing.T) {
	for _, form := range []string{"roundtripper", "middleware"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := &scriptStore{grant: func(n int) store.Grant {
					return store.Grant{Shared: true, Fleet: 2, Seq: uint64(10 + n), Wait: time.Duration(n) * time.Second}
				}}
				fake := steadytest.NewFakeT(t, limited("59"), limited("58"), limited("57"))
				c := storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}}, fake, form)
				start := time.Now()
				for range 3 {
					if err := sdkChat(context.Background(), c); err != nil {
						t.Fatal(err)
					}
				}
				if took := time.Since(start); took != 3*time.Second {
					t.Errorf("three calls took %v, want the store's waits: 0+1+2s", took)
				}
				rs, ss := fs.calls()
				if len(rs) != 3 || len(ss) != 3 {
					t.Fatalf("%d reservations and %d settlements, want 3 and 3", len(rs), len(ss))
				}
				if len(rs[0].Windows) != 0 || rs[0].ColdStart != 4 {
					t.Errorf("first reservation has windows %+v and cold-start bound %d before any response, want none and 4", rs[0].Windows, rs[0].ColdStart)
				}
				for i, r := range rs[1:] {
					if len(r.Windows) != 1 || r.Windows[0].ID != store.WindowID(ratelimit.UnitRequests, "") || r.Windows[0].Cost != 1 || r.Windows[0].Rate <= 0 || r.Windows[0].Burst > -1 {
						t.Errorf("reservation %d: windows %+v, want one requests window that resets (a negative burst)", i+1, r.Windows)
					}
					if r.Partition.Upstream != "https://api.test" || r.Partition.Key == "" {
						t.Errorf("reservation %d: partition %+v", i+1, r.Partition)
					}
				}
				for i, s := range ss {
					if !s.Sent || s.Observed == nil || s.Observed.Seq != uint64(10+i) || s.Grant.Seq != uint64(10+i) {
						t.Errorf("settlement %d: sent %v, observed %+v, grant seq %d", i, s.Sent, s.Observed, s.Grant.Seq)
					}
				}
			})
		})
	}
}

// TestStoreRefusal: a reservation the store refuses (its wait passes the
// deadline) fails the call without sending it, with a *WaitError.
func TestStoreRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := &scriptStore{grant: func(int) store.Grant {
			return store.Grant{Shared: true, Fleet: 4, Refused: true, Wait: time.Minute}
		}}
		fake := steadytest.NewFakeT(t, limited("59"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := sdkChat(ctx, storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}}, fake, "roundtripper"))
		var we *steady.WaitError
		if !errors.As(err, &we) || !errors.Is(err, context.DeadlineExceeded) || we.Wait != time.Minute {
			t.Fatalf("err = %v, want a WaitError for the store's minute", err)
		}
		if fake.Calls() != 0 {
			t.Errorf("%d requests sent", fake.Calls())
		}
		if _, ss := fs.calls(); len(ss) != 0 {
			t.Errorf("refused reservation settled: %+v", ss)
		}
	})
}

// TestStoreFleetCircuit: when the fleet's circuit is open, a call fails at
// once with ErrCircuitOpen, or with Hold waits for the next probe; the
// fleet's probe that succeeds closes it; a local circuit that opens opens
// the fleet's.
func TestStoreFleetCircuit(t *testing.T) {
	t.Run("open fails at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := &scriptStore{grant: func(int) store.Grant {
				return store.Grant{Shared: true, Fleet: 4, Breaker: store.BreakerOpen, Wait: 5 * time.Second}
			}}
			fake := steadytest.NewFakeT(t, limited("59"))
			start := time.Now()
			err := sdkChat(context.Background(), storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}}, fake, "roundtripper"))
			if !errors.Is(err, steady.ErrCircuitOpen) || time.Since(start) != 0 {
				t.Fatalf("err = %v after %v, want ErrCircuitOpen at once", err, time.Since(start))
			}
			if fake.Calls() != 0 {
				t.Errorf("%d requests sent through an open circuit", fake.Calls())
			}
		})
	})
	t.Run("hold waits, probe closes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := &scriptStore{grant: func(n int) store.Grant {
				switch n {
				case 0:
					return store.Grant{Shared: true, Fleet: 4, Breaker: store.BreakerOpen, Wait: 5 * time.Second}
				case 1:
					return store.Grant{Shared: true, Fleet: 4, Breaker: store.BreakerHalfOpen, Seq: 7}
				}
				return store.Grant{Shared: true, Fleet: 4, Seq: uint64(7 + n)}
			}}
			fake := steadytest.NewFakeT(t, limited("59"))
			start := time.Now()
			if err := sdkChat(context.Background(), storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}, Breaker: steady.BreakerConfig{Hold: true}}, fake, "middleware")); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took != 5*time.Second {
				t.Errorf("held %v, want the fleet's 5s", took)
			}
			_, ss := fs.calls()
			if len(ss) != 1 || !ss[0].BreakerClosed || ss[0].Grant.Breaker != store.BreakerHalfOpen {
				t.Errorf("settlements %+v, want the probe's success", ss)
			}
		})
	})
	t.Run("local open opens the fleet", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := &scriptStore{}
			fake := steadytest.NewFakeT(t)
			fake.OnFunc(nil, func(*steadytest.Request) steadytest.Response { return steadytest.ServerError(503) })
			opens := 0
			onEvent := func(ev steady.Event) {
				if ev.Kind == steady.EventBreakerState && ev.To == steady.BreakerOpen {
					opens++ // delivered on the caller's goroutine
				}
			}
			_ = sdkChat(context.Background(), storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}, Breaker: steady.BreakerConfig{ConsecutiveFailures: 3}, OnEvent: onEvent}, fake, "roundtripper"))
			_, ss := fs.calls()
			opened := 0
			for _, s := range ss {
				if s.BreakerOpen > 0 {
					opened++
					if s.Partition.Key != "" || s.Partition.Upstream != "https://api.test" {
						t.Errorf("breaker settlement for %+v, want the upstream alone", s.Partition)
					}
				}
			}
			if opened == 0 || opened != opens {
				t.Errorf("%d settlements opened the fleet's circuit, want one for each of the %d local opens", opened, opens)
			}
		})
	})
}

// TestStoreCooldownAndCancel: a 429 sends its cooldown to the fleet; a
// request whose context ends during the store's wait gives its
// reservation back unsent.
func TestStoreCooldownAndCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := &scriptStore{grant: func(n int) store.Grant {
			g := store.Grant{Shared: true, Fleet: 2, Seq: uint64(n + 1)}
			if n == 1 {
				g.Wait = time.Hour
			}
			return g
		}}
		fake := steadytest.NewFakeT(t, steadytest.RateLimited(3*time.Second))
		c := storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}, Retry: steady.RetryConfig{MaxRetries: -1}}, fake, "roundtripper")
		if err := sdkChat(context.Background(), c); err == nil {
			t.Fatal("the 429 succeeded")
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(5*time.Second, cancel) // after the local 3s cooldown, during the store's wait
		if err := sdkChat(ctx, c); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want the context's end", err)
		}
		_, ss := fs.calls()
		if len(ss) != 2 {
			t.Fatalf("%d settlements, want 2: %+v", len(ss), ss)
		}
		if !ss[0].Sent || ss[0].Cooldown < 2*time.Second {
			t.Errorf("429 settled with cooldown %v (sent %v), want the 3s hint", ss[0].Cooldown, ss[0].Sent)
		}
		if ss[1].Sent || ss[1].Grant.Seq != 2 {
			t.Errorf("canceled request settled %+v, want its reservation given back", ss[1])
		}
		if fake.Calls() != 1 {
			t.Errorf("%d requests sent, want 1", fake.Calls())
		}
	})
}

// TestStoreEvents: the store falling back to local pacing and rejoining is
// reported once each, with a reason.
func TestStoreEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := &scriptStore{grant: func(n int) store.Grant {
			return store.Grant{Shared: n == 0 || n >= 3, Fleet: 2}
		}}
		fake := steadytest.NewFakeT(t)
		fake.OnFunc(nil, func(*steadytest.Request) steadytest.Response { return limited("50") })
		var log eventLog
		c := storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}, OnEvent: log.add}, fake, "middleware")
		for range 5 {
			if err := sdkChat(context.Background(), c); err != nil {
				t.Fatal(err)
			}
		}
		evs := log.of(steady.EventStore)
		if len(evs) != 2 || evs[0].Reason != "fallback" || evs[0].Err == nil || evs[1].Reason != "rejoined" || evs[1].Kind.String() != "store" {
			t.Errorf("store events %+v, want a fallback then a rejoin", evs)
		}
	})
}

// TestStoreEventCauses: an EventStore's Err names the cause the store
// gave for falling back, and a grant that reports a lapse (the store fell
// back and rejoined between two of the partition's grants, as when only
// a settlement found the backend down) is told as a fallback and a rejoin.
func TestStoreEventCauses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := errors.New("backend refused the connection")
		timeout := errors.New("backend did not answer in time")
		fs := &scriptStore{grant: func(n int) store.Grant {
			switch n {
			case 1:
				return store.Grant{Fleet: 2, Err: refused}
			case 3:
				return store.Grant{Shared: true, Fleet: 2, Lapse: timeout}
			case 4:
				return store.Grant{Fleet: 2}
			}
			return store.Grant{Shared: true, Fleet: 2}
		}}
		fake := steadytest.NewFakeT(t)
		fake.OnFunc(nil, func(*steadytest.Request) steadytest.Response { return limited("50") })
		var log eventLog
		c := storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}, OnEvent: log.add}, fake, "middleware")
		for range 5 {
			if err := sdkChat(context.Background(), c); err != nil {
				t.Fatal(err)
			}
		}
		evs := log.of(steady.EventStore)
		want := []struct {
			reason string
			cause  error
		}{{"fallback", refused}, {"rejoined", nil}, {"fallback", timeout}, {"rejoined", nil}, {"fallback", nil}}
		if len(evs) != len(want) {
			t.Fatalf("store events %+v, want %d", evs, len(want))
		}
		for i, w := range want {
			ev := evs[i]
			switch {
			case ev.Reason != w.reason:
				t.Errorf("event %d: reason %q, want %q", i, ev.Reason, w.reason)
			case w.reason == "rejoined" && ev.Err != nil:
				t.Errorf("event %d: rejoin with Err %v", i, ev.Err)
			case w.reason == "fallback" && ev.Err == nil:
				t.Errorf("event %d: fallback without Err", i)
			case w.cause != nil && (!errors.Is(ev.Err, w.cause) || !strings.Contains(ev.Err.Error(), w.cause.Error())):
				t.Errorf("event %d: Err %v, want it to name %v", i, ev.Err, w.cause)
			}
		}
	})
}

// budgetStore is a scriptStore that keeps a fleet's retry budget: it
// answers every Retry with ok and shared, and records what it is told.
type budgetStore struct {
	scriptStore
	ok, shared bool

	bmu    sync.Mutex
	asks   int
	earned float64
}

func (s *budgetStore) Retry(_ context.Context, r store.Retry) (bool, bool) {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	s.asks++
	s.earned += r.Earned
	return s.ok, s.shared
}

// TestStoreRetryBudget: a Transport whose Store keeps the fleet's retry
// budget asks it before each retry (credited with what its first attempts
// earned) and obeys it; when the store decides nothing, its own budget
// does.
func TestStoreRetryBudget(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ok, shared  bool
		wantRetries bool
	}{
		{"fleet refuses", false, true, false},
		{"fleet allows", true, true, true},
		{"store down: local budget", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := &budgetStore{ok: tc.ok, shared: tc.shared}
				fake := steadytest.NewFakeT(t)
				fake.OnFunc(nil, func(*steadytest.Request) steadytest.Response {
					return steadytest.Response{Status: 500, Body: `{"error":{"message":"down"}}`}
				})
				c := storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}, Breaker: steady.BreakerConfig{Disabled: true},
					Retry: steady.RetryConfig{MaxRetries: 1}}, fake, "middleware")
				const calls = 5
				for range calls {
					if err := sdkChat(context.Background(), c); err == nil {
						t.Fatal("a call to a dead upstream succeeded")
					}
				}
				fs.bmu.Lock()
				asks, earned := fs.asks, fs.earned
				fs.bmu.Unlock()
				if asks != calls {
					t.Errorf("%d asks of the fleet's budget, want %d (one per retry)", asks, calls)
				}
				if tc.shared && (earned < 0.2*calls-1e-9 || earned > 0.2*calls+1e-9) {
					t.Errorf("the fleet was credited %v retries, want %v (0.2 per first attempt)", earned, 0.2*calls)
				}
				retries := fake.Calls() - calls
				if tc.wantRetries && retries != calls || !tc.wantRetries && retries != 0 {
					t.Errorf("%d retries sent, want retries %v", retries, tc.wantRetries)
				}
			})
		})
	}
}
