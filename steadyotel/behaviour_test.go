package steadyotel_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.opentelemetry.io/otel"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/steadyotel"
	"github.com/steady-go/steady/steadytest"
	"github.com/steady-go/steady/store"
)

// TestBudgetExhausted: a retry budget that allows no retry turns a 500
// into a give-up counted by reason and as budget exhaustion.
func TestBudgetExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(500))
		h := newHarness(t, steady.Config{Retry: steady.RetryConfig{BudgetRatio: 0.01, BudgetMinPerSecond: -1}})
		c := h.client("middleware", fake)
		var aerr *openai.Error
		if err := chat(c, context.Background()); !errors.As(err, &aerr) || aerr.StatusCode != 500 {
			t.Fatalf("err = %v, want the 500", err)
		}
		rm := h.collect(t)
		for _, c := range []struct {
			name  string
			attrs []string
			want  int64
		}{
			{"steady.retry_budget.exhausted", []string{"server.address=api.openai.com", "gen_ai.operation.name=chat"}, 1},
			{"steady.give_ups", []string{"steady.reason=retry_budget_exhausted"}, 1},
			{"steady.give_ups", nil, 1},
			{"steady.events", []string{"steady.event.kind=give-up", "steady.reason=retry_budget_exhausted"}, 1},
		} {
			if got := sum(t, find(t, rm, c.name), c.attrs...); got != c.want {
				t.Errorf("%s %v = %d, want %d", c.name, c.attrs, got, c.want)
			}
		}
		if _, ok := findOK(rm, "steady.retries"); ok {
			t.Errorf("a retry was counted")
		}
	})
}

// TestPacingRejection: a window announced spent, with a MaxWait shorter
// than the wait for its next slot, makes the next request fail at once,
// counted as a pacing rejection.
func TestPacingRejection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, limits(steadytest.ChatCompletion("Hi"), "0", 30*time.Second))
		h := newHarness(t, steady.Config{Pacing: steady.PacingConfig{MaxWait: 100 * time.Millisecond}})
		c := h.client("middleware", fake)
		if err := chat(c, context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := chat(c, context.Background()); err == nil {
			t.Fatal("the second request was sent into a spent window")
		}
		rm := h.collect(t)
		if got := sum(t, find(t, rm, "steady.rejections"), "steady.reason=pacing_wait", "server.address=api.openai.com"); got != 1 {
			t.Errorf("pacing rejections = %d, want 1", got)
		}
		if got := sum(t, find(t, rm, "steady.rate_limit.remaining"), "steady.rate_limit.unit=requests"); got != 0 {
			t.Errorf("remaining = %d, want 0", got)
		}
		g, ok := find(t, rm, "steady.rate_limit.reset").Data.(metricdata.Gauge[float64])
		if !ok || len(g.DataPoints) != 1 || g.DataPoints[0].Value <= 0 || g.DataPoints[0].Value > 30 {
			t.Errorf("reset gauge = %+v, want one point in (0, 30] s", g.DataPoints)
		}
	})
}

// TestProviderGauges runs the real SDK against a simulated provider and
// checks that the limit gauges say what the provider enforces and what
// the Transport's snapshot holds.
func TestProviderGauges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 50, TokensPerWindow: 100000, Window: time.Minute})
		h := newHarness(t, steady.Config{})
		c := h.client("middleware", p)
		for range 5 {
			if err := chat(c, context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		rm := h.collect(t)
		lim := find(t, rm, "steady.rate_limit.limit")
		if got := sum(t, lim, "steady.rate_limit.unit=requests", "gen_ai.request.model=gpt-4o-mini"); got != 50 {
			t.Errorf("requests limit = %d, want 50", got)
		}
		if got := sum(t, lim, "steady.rate_limit.unit=tokens"); got != 100000 {
			t.Errorf("tokens limit = %d, want 100000", got)
		}
		var want int64 = -1
		for _, s := range h.st.Snapshot() {
			for _, w := range s.Windows {
				if w.Unit == ratelimit.UnitRequests && w.Remaining >= 0 {
					want = w.Remaining
				}
			}
		}
		if got := sum(t, find(t, rm, "steady.rate_limit.remaining"), "steady.rate_limit.unit=requests"); got != want || want != 45 {
			t.Errorf("requests remaining = %d, snapshot %d, want 45", got, want)
		}
		if got := hcount(t, find(t, rm, "http.client.request.duration"), "http.response.status_code=200"); got != 5 {
			t.Errorf("attempts = %d, want 5", got)
		}
		if st := p.Stats(); st.RateLimited != 0 {
			t.Errorf("provider answered %d 429s", st.RateLimited)
		}
	})
}

// TestGlobalTracer: through the global tracer provider, attempts become
// spans only under a sampled caller span, so that nothing is done for a
// caller that does not trace.
func TestGlobalTracer(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	old := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(old) })

	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ChatCompletion("a"), steadytest.ChatCompletion("b"))
		st := steady.New(steady.Config{Base: fake})
		ins, err := steadyotel.Instrument(st, steadyotel.WithMeterProvider(metricnoop.NewMeterProvider()))
		if err != nil {
			t.Fatal(err)
		}
		defer ins.Stop()
		c := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey(apiKey), option.WithHTTPClient(&http.Client{Transport: st}))
		if err := chat(c, context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(rec.Ended()); n != 0 {
			t.Fatalf("%d spans without a caller span, want 0", n)
		}
		ctx, parent := tp.Tracer("app").Start(context.Background(), "caller")
		if err := chat(c, ctx); err != nil {
			t.Fatal(err)
		}
		parent.End()
		spans := rec.Ended()
		if len(spans) != 2 || spans[0].Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("spans %v, want the attempt under the caller", spans)
		}
	})
}

// TestNoop: with no-op providers, Instrument observes nothing and the
// Transport works as before; a nil Transport is an error.
func TestNoop(t *testing.T) {
	if _, err := steadyotel.Instrument(nil); err == nil {
		t.Fatal("Instrument(nil) gave no error")
	}
	fake := steadytest.NewFakeT(t, steadytest.ChatCompletion("a"))
	var events int
	st := steady.New(steady.Config{Base: fake})
	ins, err := steadyotel.Instrument(st,
		steadyotel.WithMeterProvider(metricnoop.NewMeterProvider()),
		steadyotel.WithTracerProvider(tracenoop.NewTracerProvider()))
	if err != nil {
		t.Fatal(err)
	}
	remove := st.Observe(func(ev steady.Event) {
		if ev.Kind == steady.EventAttempt {
			events++
		}
	})
	defer remove()
	c := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey(apiKey), option.WithHTTPClient(&http.Client{Transport: st}))
	if err := chat(c, context.Background()); err != nil {
		t.Fatal(err)
	}
	if events != 1 {
		t.Fatalf("%d events, want the attempt", events)
	}
	if err := ins.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := ins.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestStop: after Stop, attempts are no longer recorded and the state
// gauges are no longer observed.
func TestStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, limits(steadytest.ChatCompletion("a"), "9", time.Second), steadytest.ChatCompletion("b"))
		reader := sdkmetric.NewManualReader()
		st := steady.New(steady.Config{Base: fake})
		ins, err := steadyotel.Instrument(st, steadyotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
		if err != nil {
			t.Fatal(err)
		}
		c := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey(apiKey), option.WithHTTPClient(&http.Client{Transport: st}))
		if err := chat(c, context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := ins.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := chat(c, context.Background()); err != nil {
			t.Fatal(err)
		}
		h := &harness{reader: reader}
		rm := h.collect(t)
		if got := hcount(t, find(t, rm, "http.client.request.duration")); got != 1 {
			t.Errorf("attempts recorded = %d, want 1 (before Stop)", got)
		}
		if _, ok := findOK(rm, "steady.rate_limit.remaining"); ok {
			t.Errorf("a gauge was observed after Stop")
		}
	})
}

// TestConcurrent: many callers through the SDK against a provider that
// rate-limits and fails some requests, with collections running beside
// them; afterwards the attempts counted equal the requests the provider
// saw, and the 429s equal its 429s.
func TestConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{
			RequestsPerWindow: 20, Window: 10 * time.Second,
			Faults: steadytest.Faults{ErrorRatio: 0.1, Seed: 7},
		})
		h := newHarness(t, steady.Config{Pacing: steady.PacingConfig{Disabled: true}})
		c := h.client("middleware", p)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 10 {
					chat(c, context.Background())
				}
			})
		}
		wg.Go(func() {
			for range 20 {
				h.collect(t)
				time.Sleep(time.Second)
			}
		})
		wg.Wait()
		rm := h.collect(t)
		st := p.Stats()
		if got := hcount(t, find(t, rm, "http.client.request.duration")); got != uint64(st.Requests) {
			t.Errorf("attempts recorded = %d, provider saw %d", got, st.Requests)
		}
		if st.RateLimited == 0 {
			t.Fatal("the provider answered no 429: the test shows nothing")
		}
		if got := sum(t, find(t, rm, "steady.rate_limited")); got != st.RateLimited {
			t.Errorf("429s recorded = %d, provider sent %d", got, st.RateLimited)
		}
		if got := hcount(t, find(t, rm, "http.client.request.duration"), "http.response.status_code=429"); got != uint64(st.RateLimited) {
			t.Errorf("429 attempts = %d, provider sent %d", got, st.RateLimited)
		}
	})
}

// localStore is a pacing store whose backend never answers: it decides
// every reservation locally, as a store that fell back does.
type localStore struct{}

func (localStore) Reserve(context.Context, store.Reservation) (store.Grant, error) {
	return store.Grant{Fleet: 1}, nil
}

func (localStore) Settle(context.Context, store.Settlement) {}

// TestStoreFallback: a store that cannot reach its backend is counted once
// as a fall back, however many requests it then decides alone.
func TestStoreFallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ChatCompletion("Hi"), steadytest.ChatCompletion("Hi"))
		h := newHarness(t, steady.Config{Pacing: steady.PacingConfig{Store: localStore{}}})
		c := h.client("middleware", fake)
		for range 2 {
			if err := chat(c, context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		rm := h.collect(t)
		if got := sum(t, find(t, rm, "steady.store.fallbacks"), "server.address=api.openai.com"); got != 1 {
			t.Errorf("store fallbacks = %d, want 1", got)
		}
	})
}

// TestEstimateError: the usage a response reports is recorded, per call, as
// the token estimate's error (reserved less used), in both forms, and not
// counted in steady.events.
func TestEstimateError(t *testing.T) {
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := steadytest.NewFakeT(t, steadytest.ChatCompletion("hello there"), steadytest.ChatCompletion("hello there"))
				cfg := steady.Config{}
				if form == "roundtripper" {
					cfg.Base = fake
				}
				h := newHarness(t, cfg)
				c := h.client(form, fake)
				for range 2 {
					if err := chat(c, context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				var want int64
				n := 0
				for _, ev := range h.events {
					if ev.Kind == steady.EventUsage {
						want += ev.Reserved.Total() - ev.Used.Total()
						n++
					}
				}
				if n != 2 {
					t.Fatalf("%d usage events, want 2", n)
				}
				rm := h.collect(t)
				d, ok := find(t, rm, "steady.tokens.estimate.error").Data.(metricdata.Histogram[int64])
				if !ok {
					t.Fatal("steady.tokens.estimate.error is not an int histogram")
				}
				var count uint64
				var total int64
				for _, p := range d.DataPoints {
					if !has(p.Attributes, "server.address=api.openai.com", "gen_ai.request.model=gpt-4o-mini") {
						t.Errorf("attributes %v", p.Attributes.ToSlice())
					}
					count += p.Count
					total += p.Sum
				}
				if count != 2 || total != want {
					t.Errorf("estimate error: %d points summing %d, want 2 summing %d", count, total, want)
				}
				if m, ok := findOK(rm, "steady.events"); ok {
					if got := sum(t, m, "steady.event.kind=usage"); got != 0 {
						t.Errorf("steady.events counted %d usage events", got)
					}
				}
			})
		})
	}
}
