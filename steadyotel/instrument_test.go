package steadyotel_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadyotel"
	"github.com/steady-go/steady/steadytest"
)

const (
	baseURL  = "https://api.openai.com/v1"
	upstream = "https://api.openai.com"
	apiKey   = "sk-test-5ecret-do-not-record"
)

// harness is a Transport instrumented into an in-memory reader and span
// recorder, and the events it emitted.
type harness struct {
	st     *steady.Transport
	ins    *steadyotel.Instrumentation
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	tracer trace.Tracer // the application's tracer, for parent spans

	mu     sync.Mutex
	events []steady.Event
}

func newHarness(t *testing.T, cfg steady.Config) *harness {
	t.Helper()
	h := &harness{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	cfg.OnEvent = func(ev steady.Event) {
		h.mu.Lock()
		h.events = append(h.events, ev)
		h.mu.Unlock()
	}
	h.st = steady.New(cfg)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	h.tracer = tp.Tracer("app")
	ins, err := steadyotel.Instrument(h.st,
		steadyotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))),
		steadyotel.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	h.ins = ins
	t.Cleanup(func() { ins.Stop() })
	return h
}

// client is the real SDK client with steady plugged in as middleware or
// as the HTTP client's transport; the SDK's own retries are left on.
func (h *harness) client(form string, fake http.RoundTripper) openai.Client {
	opts := []option.RequestOption{option.WithBaseURL(baseURL), option.WithAPIKey(apiKey)}
	if form == "middleware" {
		opts = append(opts, option.WithMiddleware(h.st.Middleware), option.WithHTTPClient(&http.Client{Transport: fake}))
	} else {
		// As steady's documentation advises for this form: a transport
		// failure (a refusal while the circuit is open) is not retried
		// again by the SDK.
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: h.st}), option.WithMaxRetries(0))
	}
	return openai.NewClient(opts...)
}

func (h *harness) count(kind steady.EventKind) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ev := range h.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func (h *harness) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// find returns the metric named name, failing the test when absent.
func find(t *testing.T, rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return metricdata.Metrics{}
}

// has reports whether set holds every key=value of want ("k=v").
func has(set attribute.Set, want ...string) bool {
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		got, ok := set.Value(attribute.Key(k))
		if !ok || got.String() != v {
			return false
		}
	}
	return true
}

// sum adds up the int points of a counter or gauge whose attributes hold want.
func sum(t *testing.T, m metricdata.Metrics, want ...string) int64 {
	t.Helper()
	var n int64
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, want...) {
				n += p.Value
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, want...) {
				n += p.Value
			}
		}
	default:
		t.Fatalf("%s: %T is not an int counter or gauge", m.Name, m.Data)
	}
	return n
}

// hcount adds up the counts of a histogram's points whose attributes hold want.
func hcount(t *testing.T, m metricdata.Metrics, want ...string) uint64 {
	t.Helper()
	d, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: %T is not a float histogram", m.Name, m.Data)
	}
	var n uint64
	for _, p := range d.DataPoints {
		if has(p.Attributes, want...) {
			n += p.Count
		}
	}
	return n
}

func chat(c openai.Client, ctx context.Context) error {
	_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	})
	return err
}

// limits are OpenAI's rate-limit headers announcing remaining requests of
// 100 per minute, replenished in reset.
func limits(r steadytest.Response, remaining string, reset time.Duration) steadytest.Response {
	return r.WithHeader(
		"X-Ratelimit-Limit-Requests", "100",
		"X-Ratelimit-Remaining-Requests", remaining,
		"X-Ratelimit-Reset-Requests", reset.String(),
		"X-Request-Id", "req_ok",
	)
}

// TestScriptedRun drives the real SDK through a scripted run: a 429 then a
// retry, a window announced empty (a pacing wait), an outage that opens
// the circuit, a request refused while it is open, and a probe that closes
// it. Every instrument then holds exactly what the script implies, and
// every attempt is a child span of the caller's span.
func TestScriptedRun(t *testing.T) {
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := steadytest.NewFakeT(t,
					// A: a 429, retried after its hint, then a 200.
					steadytest.RateLimited(time.Second).WithHeader("X-Request-Id", "req_429"),
					limits(steadytest.ChatCompletion("Hello!"), "99", time.Second),
					// B: a 200 announcing the window spent for 10 s.
					limits(steadytest.ChatCompletion("Hello!"), "0", 10*time.Second),
					// C: waits for the window, then a 200.
					limits(steadytest.ChatCompletion("Hello!"), "98", time.Second),
					// D: an outage: three 500s open the circuit.
					steadytest.ServerError(500),
					steadytest.ServerError(500),
					steadytest.ServerError(500),
					// F, after the open timeout: a probe that closes it.
					limits(steadytest.ChatCompletion("Hello!"), "97", time.Second),
				)
				cfg := steady.Config{
					Retry:   steady.RetryConfig{MaxRetries: 2, BaseDelay: 100 * time.Millisecond, BudgetRatio: -1},
					Breaker: steady.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 30 * time.Second, HalfOpenProbes: 1},
				}
				if form == "roundtripper" {
					cfg.Base = fake
				}
				h := newHarness(t, cfg)
				c := h.client(form, fake)
				ctx, parent := h.tracer.Start(context.Background(), "caller")

				for _, step := range []string{"A", "B", "C"} {
					if err := chat(c, ctx); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
				}
				rm := h.collect(t)
				rem := find(t, rm, "steady.rate_limit.remaining")
				if got := sum(t, rem, "server.address=api.openai.com", "steady.rate_limit.unit=requests"); got != 98 {
					t.Errorf("remaining after C = %d, want 98", got)
				}
				if got := sum(t, find(t, rm, "steady.rate_limit.limit"), "steady.rate_limit.unit=requests", "gen_ai.request.model=gpt-4o-mini", "gen_ai.provider.name=openai"); got != 100 {
					t.Errorf("limit = %d, want 100", got)
				}

				var aerr *openai.Error
				if err := chat(c, ctx); !errors.As(err, &aerr) || aerr.StatusCode != 500 {
					t.Fatalf("D: err = %v, want the 500", err)
				}
				if got := h.st.BreakerState(upstream); got != steady.BreakerOpen {
					t.Fatalf("breaker after D = %v, want open", got)
				}
				rm = h.collect(t)
				bs := find(t, rm, "steady.breaker.state")
				if sum(t, bs, "steady.breaker.state=open") != 1 || sum(t, bs, "steady.breaker.state=closed") != 0 {
					t.Errorf("breaker state gauge: open=%d closed=%d, want 1 and 0",
						sum(t, bs, "steady.breaker.state=open"), sum(t, bs, "steady.breaker.state=closed"))
				}

				if err := chat(c, ctx); !errors.Is(err, steady.ErrCircuitOpen) {
					t.Fatalf("E: err = %v, want ErrCircuitOpen", err)
				}
				time.Sleep(31 * time.Second)
				if err := chat(c, ctx); err != nil {
					t.Fatalf("F: %v", err)
				}
				parent.End()

				rm = h.collect(t)
				// Attempts: A 2, B 1, C 1, D 3, F 1.
				dur := find(t, rm, "http.client.request.duration")
				if dur.Unit != "s" {
					t.Errorf("duration unit = %q", dur.Unit)
				}
				base := []string{"http.request.method=POST", "server.address=api.openai.com", "server.port=443",
					"gen_ai.provider.name=openai", "gen_ai.operation.name=chat"}
				checks := []struct {
					name string
					got  uint64
					want uint64
				}{
					{"all attempts", hcount(t, dur, base...), 8},
					{"200s", hcount(t, dur, append(base, "http.response.status_code=200")...), 4},
					{"429s", hcount(t, dur, append(base, "http.response.status_code=429", "error.type=429")...), 1},
					{"500s", hcount(t, dur, append(base, "http.response.status_code=500", "error.type=500")...), 3},
					{"resend 1", hcount(t, dur, "http.request.resend_count=1"), 2},
					{"resend 2", hcount(t, dur, "http.request.resend_count=2"), 1},
					{"pacing waits", hcount(t, find(t, rm, "steady.pacing.wait.duration"), "server.address=api.openai.com", "gen_ai.request.model=gpt-4o-mini"), uint64(h.count(steady.EventPace))},
				}
				for _, c := range checks {
					if c.got != c.want {
						t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
					}
				}
				if h.count(steady.EventPace) < 1 {
					t.Errorf("no pacing wait: C should have waited for the window")
				}
				counters := []struct {
					name  string
					attrs []string
					want  int64
				}{
					{"steady.retries", []string{"steady.reason=rate_limited", "gen_ai.operation.name=chat"}, 1},
					{"steady.retries", []string{"steady.reason=server_error"}, 2},
					{"steady.give_ups", []string{"steady.reason=retries_exhausted", "server.address=api.openai.com"}, 1},
					{"steady.give_ups", nil, 1},
					{"steady.rejections", []string{"steady.reason=circuit_open"}, 1},
					{"steady.rate_limited", []string{"server.address=api.openai.com", "gen_ai.provider.name=openai"}, 1},
					{"steady.breaker.transitions", []string{"steady.breaker.previous_state=closed", "steady.breaker.state=open"}, 1},
					{"steady.breaker.transitions", []string{"steady.breaker.previous_state=open", "steady.breaker.state=half_open"}, 1},
					{"steady.breaker.transitions", []string{"steady.breaker.previous_state=half_open", "steady.breaker.state=closed"}, 1},
					{"steady.breaker.transitions", nil, 3},
					{"steady.events", []string{"steady.event.kind=retry"}, 3},
					{"steady.events", []string{"steady.event.kind=give-up"}, 1},
					{"steady.events", []string{"steady.event.kind=rejected"}, 1},
					{"steady.events", []string{"steady.event.kind=breaker"}, 3},
					{"steady.events", []string{"steady.event.kind=pace"}, int64(h.count(steady.EventPace))},
					{"steady.events", []string{"steady.event.kind=cooldown"}, int64(h.count(steady.EventCooldown))},
					{"steady.pacing.cooldowns", nil, int64(h.count(steady.EventCooldown))},
				}
				for _, c := range counters {
					if got := sum(t, find(t, rm, c.name), c.attrs...); got != c.want {
						t.Errorf("%s %v = %d, want %d", c.name, c.attrs, got, c.want)
					}
				}
				if h.count(steady.EventCooldown) < 1 {
					t.Errorf("no cooldown after the 429")
				}
				if _, ok := findOK(rm, "steady.retry_budget.exhausted"); ok {
					// Registered, but nothing exhausted the (disabled) budget.
					if got := sum(t, find(t, rm, "steady.retry_budget.exhausted")); got != 0 {
						t.Errorf("budget exhausted = %d, want 0", got)
					}
				}
				bs = find(t, rm, "steady.breaker.state")
				if sum(t, bs, "steady.breaker.state=closed") != 1 || sum(t, bs, "steady.breaker.state=open") != 0 ||
					sum(t, bs, "steady.breaker.state=half_open") != 0 {
					t.Errorf("breaker state gauge after F is not closed")
				}
				if got := sum(t, find(t, rm, "steady.pacing.waiting")); got != 0 {
					t.Errorf("waiting after the run = %d, want 0", got)
				}
				if got := sum(t, find(t, rm, "steady.pacing.in_flight")); got != 0 {
					t.Errorf("in flight after the run = %d, want 0", got)
				}
				if got := sum(t, find(t, rm, "steady.rate_limit.remaining"), "steady.rate_limit.unit=requests"); got != 97 {
					t.Errorf("remaining after F = %d, want 97", got)
				}
				noFingerprint(t, rm)

				checkSpans(t, h, parent.SpanContext())
			})
		})
	}
}

func findOK(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// checkSpans checks the attempt spans: one per attempt, each a child of
// parent, timed by the attempt, with the resend count, request id and
// breaker state, and no credential anywhere.
func checkSpans(t *testing.T, h *harness, parent trace.SpanContext) {
	t.Helper()
	var attempts []sdktrace.ReadOnlySpan
	for _, s := range h.spans.Ended() {
		if s.InstrumentationScope().Name == steadyotel.ScopeName {
			attempts = append(attempts, s)
		}
	}
	if len(attempts) != 8 {
		t.Fatalf("%d attempt spans, want 8", len(attempts))
	}
	h.mu.Lock()
	var evs []steady.Event
	for _, ev := range h.events {
		if ev.Kind == steady.EventAttempt {
			evs = append(evs, ev)
		}
	}
	h.mu.Unlock()
	resends := 0
	for i, s := range attempts {
		if s.Parent().SpanID() != parent.SpanID() || s.SpanContext().TraceID() != parent.TraceID() {
			t.Errorf("span %d is not a child of the caller's span", i)
		}
		if s.SpanKind() != trace.SpanKindClient || s.Name() != "POST" {
			t.Errorf("span %d: kind %v name %q", i, s.SpanKind(), s.Name())
		}
		ev := evs[i]
		if !s.EndTime().Equal(ev.Time) || !s.StartTime().Equal(ev.Time.Add(-ev.Duration)) {
			t.Errorf("span %d: %v..%v, want %v..%v", i, s.StartTime(), s.EndTime(), ev.Time.Add(-ev.Duration), ev.Time)
		}
		set := attribute.NewSet(s.Attributes()...)
		// The last attempt is the probe a half-open circuit let through.
		state := "closed"
		if i == len(attempts)-1 {
			state = "half_open"
		}
		if !has(set, "url.full="+upstream+"/v1/chat/completions", "server.address=api.openai.com", "steady.breaker.state="+state) {
			t.Errorf("span %d attributes: %v", i, s.Attributes())
		}
		if ev.Attempt > 1 {
			resends++
			if !has(set, "http.request.resend_count="+strconv.Itoa(ev.Attempt-1)) {
				t.Errorf("span %d: no resend count %d", i, ev.Attempt-1)
			}
		}
		if ev.RequestID != "" && !has(set, "steady.upstream.request_id="+ev.RequestID) {
			t.Errorf("span %d: no request id %s", i, ev.RequestID)
		}
		if (ev.Status >= 400) != (s.Status().Code.String() == "Error") {
			t.Errorf("span %d: status %d but span status %v", i, ev.Status, s.Status())
		}
		for _, kv := range s.Attributes() {
			if strings.Contains(kv.Value.String(), "5ecret") || strings.Contains(strings.ToLower(string(kv.Key)), "authorization") {
				t.Errorf("span %d carries a credential: %v", i, kv)
			}
		}
	}
	if resends != 3 {
		t.Errorf("%d resent attempts, want 3", resends)
	}
	ids := []string{}
	for _, s := range attempts {
		for _, kv := range s.Attributes() {
			if kv.Key == "steady.upstream.request_id" {
				ids = append(ids, kv.Value.AsString())
			}
		}
	}
	if !slices.Contains(ids, "req_429") {
		t.Errorf("request ids %v lack the 429's", ids)
	}
}

// noFingerprint fails if any metric attribute holds a partition label
// (which carries a credential fingerprint after '#') or the key itself.
func noFingerprint(t *testing.T, rm metricdata.ResourceMetrics) {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, set := range attrSets(m) {
				for _, kv := range set.ToSlice() {
					if v := kv.Value.String(); strings.Contains(v, "#") || strings.Contains(v, "5ecret") {
						t.Errorf("%s carries %s=%s", m.Name, kv.Key, v)
					}
				}
			}
		}
	}
}

func attrSets(m metricdata.Metrics) []attribute.Set {
	var out []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	}
	return out
}
