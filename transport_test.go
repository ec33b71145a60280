package steady

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady/steadytest"
)

// bodyProbe records whether a response body was closed and how much of
// it was read.
type bodyProbe struct {
	io.ReadCloser
	mu     sync.Mutex
	read   int
	closed bool
}

func (b *bodyProbe) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	b.read += n
	b.mu.Unlock()
	return n, err
}

func (b *bodyProbe) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.ReadCloser.Close()
}

// probingRT wraps a RoundTripper and tracks every response body.
type probingRT struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies []*bodyProbe
}

func (tr *probingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tr.next.RoundTrip(req)
	if resp != nil {
		b := &bodyProbe{ReadCloser: resp.Body}
		resp.Body = b
		tr.mu.Lock()
		tr.bodies = append(tr.bodies, b)
		tr.mu.Unlock()
	}
	return resp, err
}

func newRTRequest(t *testing.T, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://api.example.test/v1/chat/completions", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk-secret")
	req.Header.Set("Content-Type", "application/json")
	return req
}

const rtBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

func TestNewDefaults(t *testing.T) {
	st := New(Config{})
	tr, ok := st.base.(*http.Transport)
	if !ok {
		t.Fatalf("default base is %T, want *http.Transport", st.base)
	}
	if tr == http.DefaultTransport {
		t.Fatal("default base is http.DefaultTransport itself, want a clone")
	}
	if tr.ResponseHeaderTimeout != 10*time.Minute || tr.MaxIdleConnsPerHost < 32 {
		t.Fatalf("ResponseHeaderTimeout %v, MaxIdleConnsPerHost %d", tr.ResponseHeaderTimeout, tr.MaxIdleConnsPerHost)
	}
	if st.breakers == nil || st.budget == nil || st.retry.maxRetries != defaultMaxRetries {
		t.Fatal("a zero Config must enable the breaker, the budget and retries")
	}
}

func TestNonReplayableBodyNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503), steadytest.ChatCompletion("ok"))
		var reasons []string
		st := New(Config{Base: fake, OnEvent: func(ev Event) {
			if ev.Kind != EventAttempt {
				reasons = append(reasons, ev.Reason)
			}
		}})
		req := newRTRequest(t, io.MultiReader(strings.NewReader(rtBody))) // no GetBody
		resp, err := st.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("X-Should-Retry") != "false" {
			t.Fatalf("status %d, X-Should-Retry %q; want the 503 marked final", resp.StatusCode, resp.Header.Get("X-Should-Retry"))
		}
		if fake.Calls() != 1 {
			t.Fatalf("%d attempts, want 1", fake.Calls())
		}
		if len(reasons) != 1 || reasons[0] != "request body cannot be replayed" {
			t.Fatalf("events %q", reasons)
		}
	})
}

func TestCallerRequestUnmodified(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503), steadytest.RateLimited(time.Second), steadytest.ChatCompletion("ok"))
		st := New(Config{Base: fake})
		req := newRTRequest(t, strings.NewReader(rtBody))
		hdr, url, body, cl := req.Header.Clone(), req.URL.String(), req.Body, req.ContentLength
		resp, err := st.RoundTrip(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("RoundTrip: %v, %v", resp, err)
		}
		resp.Body.Close()
		if !reflect.DeepEqual(req.Header, hdr) || req.URL.String() != url || req.Body != body || req.ContentLength != cl {
			t.Fatalf("the caller's request changed: header %v url %s", req.Header, req.URL)
		}
		reqs := fake.Requests()
		if len(reqs) != 3 {
			t.Fatalf("%d attempts, want 3", len(reqs))
		}
		for i, r := range reqs {
			if string(r.Body) != rtBody || !reflect.DeepEqual(r.Header, reqs[0].Header) {
				t.Fatalf("attempt %d sent body %q header %v", i+1, r.Body, r.Header)
			}
		}
	})
}

func TestDiscardedBodiesClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		big := steadytest.ServerError(502)
		big.Body = strings.Repeat("x", 200<<10) // beyond the drain bound
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503), big, steadytest.ChatCompletion("ok"))
		tr := &probingRT{next: fake}
		st := New(Config{Base: tr})
		resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
		if err != nil {
			t.Fatal(err)
		}
		if len(tr.bodies) != 3 {
			t.Fatalf("%d responses, want 3", len(tr.bodies))
		}
		for i, b := range tr.bodies[:2] {
			if !b.closed {
				t.Fatalf("discarded response %d not closed", i+1)
			}
		}
		if tr.bodies[0].read == 0 {
			t.Fatal("a small discarded body was not drained")
		}
		if r := tr.bodies[1].read; r > 3*maxDrain {
			t.Fatalf("read %d bytes of a discarded body, want a bounded drain", r)
		}
		if tr.bodies[2].closed || tr.bodies[2].read != 0 {
			t.Fatal("steady touched the body of the 2xx it handed back")
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(b, []byte(`"ok"`)) {
			t.Fatalf("final body %q", b)
		}
	})
}

func TestFinalResponsesMarked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t,
			steadytest.ChatCompletion("ok"),
			steadytest.OpenAIError(404, "invalid_request_error", "model_not_found", "no such model"),
			steadytest.ServerError(500).WithHeader("X-Should-Retry", "true"),
			steadytest.ServerError(500).WithHeader("X-Should-Retry", "true"),
		)
		st := New(Config{Base: fake, Retry: RetryConfig{MaxRetries: 1}})
		for i, want := range []struct {
			status int
			mark   string
		}{{200, ""}, {404, "false"}, {500, "false"}} {
			resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want.status || resp.Header.Get("X-Should-Retry") != want.mark {
				t.Fatalf("call %d: status %d X-Should-Retry %q, want %d %q", i+1, resp.StatusCode, resp.Header.Get("X-Should-Retry"), want.status, want.mark)
			}
		}
		if fake.Calls() != 4 {
			t.Fatalf("%d attempts, want 4", fake.Calls())
		}
	})
}

func TestTransportErrorsThroughRoundTripper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := steadytest.ConnReset()
		fake := &steadytest.Fake{Fallback: &fail}
		st := New(Config{Base: fake, Retry: RetryConfig{MaxRetries: 2}})
		resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
		if resp != nil || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("RoundTrip = %v, %v; want no response and the reset", resp, err)
		}
		if fake.Calls() != 3 {
			t.Fatalf("%d attempts, want 3", fake.Calls())
		}
	})
}

func TestCircuitOpenRoundTripper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(500))
		st := New(Config{Base: fake, Retry: RetryConfig{MaxRetries: -1}, Breaker: BreakerConfig{ConsecutiveFailures: 1}})
		resp, _ := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
		resp.Body.Close()
		body := &bodyProbe{ReadCloser: io.NopCloser(strings.NewReader(rtBody))}
		req := newRTRequest(t, body)
		resp, err := st.RoundTrip(req)
		if resp != nil || !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("RoundTrip = %v, %v; want ErrCircuitOpen", resp, err)
		}
		if !body.closed {
			t.Fatal("a rejected request's body was not closed")
		}
		if fake.Calls() != 1 {
			t.Fatalf("%d attempts, want 1", fake.Calls())
		}
	})
}

func TestRetryAttemptRejectedHandsBackLastResponse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The first failure opens the circuit: the retry is refused, and the
		// caller gets the real 503, body intact.
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503))
		st := New(Config{Base: fake, Breaker: BreakerConfig{ConsecutiveFailures: 1}})
		resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !bytes.Contains(b, []byte("server_error")) || resp.Header.Get("X-Should-Retry") != "false" {
			t.Fatalf("status %d body %q", resp.StatusCode, b)
		}
	})
}

func TestCallerCancelNotCountedNorRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ChatCompletion("late").WithDelay(time.Minute))
		st := New(Config{Base: fake, Breaker: BreakerConfig{ConsecutiveFailures: 1}})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		req := newRTRequest(t, strings.NewReader(rtBody)).WithContext(ctx)
		_, err := st.RoundTrip(req)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		if fake.Calls() != 1 || st.BreakerState("https://api.example.test") != BreakerClosed {
			t.Fatalf("%d attempts, breaker %v; want 1 and closed", fake.Calls(), st.BreakerState("https://api.example.test"))
		}
	})
}

func TestGetBodyFailureHandsBackLastResponse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503))
		st := New(Config{Base: fake})
		req := newRTRequest(t, strings.NewReader(rtBody))
		req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
		resp, err := st.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || fake.Calls() != 1 {
			t.Fatalf("status %d after %d attempts, want the 503 after 1", resp.StatusCode, fake.Calls())
		}
	})
}

// TestLoopInvariants runs random scripts of failures through the
// RoundTripper form and checks what must hold whatever the upstream does.
func TestLoopInvariants(t *testing.T) {
	menu := []steadytest.Response{
		steadytest.ChatCompletion("ok"),
		steadytest.OpenAIError(400, "invalid_request_error", "", "bad"),
		steadytest.OpenAIError(401, "invalid_request_error", "invalid_api_key", "no"),
		steadytest.OpenAIError(404, "invalid_request_error", "model_not_found", "no"),
		steadytest.OpenAIError(408, "timeout", "", "slow"),
		steadytest.OpenAIError(409, "conflict", "", "busy"),
		steadytest.RateLimited(0),
		steadytest.RateLimited(1500 * time.Millisecond),
		steadytest.RateLimited(10 * time.Minute),
		steadytest.InsufficientQuota(),
		steadytest.ServerError(500),
		steadytest.ServerError(502).WithHeader("Retry-After", "2"),
		steadytest.ServerError(503).WithHeader("X-Should-Retry", "false"),
		steadytest.ServerError(529),
		steadytest.OpenAIError(400, "invalid_request_error", "", "try again").WithHeader("X-Should-Retry", "true"),
		steadytest.ConnReset(),
		steadytest.Response{Status: 502, Body: "<html>bad gateway</html>"}.WithHeader("Content-Type", "text/html"),
	}
	for seed := range uint64(300) {
		synctest.Test(t, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 1))
			var script []steadytest.Response
			for range 1 + rnd.IntN(6) {
				script = append(script, menu[rnd.IntN(len(menu))])
			}
			ok := steadytest.ChatCompletion("fallback")
			fake := &steadytest.Fake{Fallback: &ok}
			fake.Add(script...)
			tr := &probingRT{next: fake}
			maxRetries := rnd.IntN(5)
			cfg := RetryConfig{MaxRetries: maxRetries}
			if maxRetries == 0 {
				cfg.MaxRetries = -1 // zero would mean the default
			}
			st := New(Config{Base: tr, Retry: cfg})
			ctx := t.Context()
			if rnd.IntN(3) == 0 {
				c, cancel := context.WithTimeout(ctx, time.Duration(rnd.IntN(5000))*time.Millisecond)
				defer cancel()
				ctx = c
			}
			req := newRTRequest(t, strings.NewReader(rtBody)).WithContext(ctx)
			resp, err := st.RoundTrip(req)

			calls := fake.Calls()
			if calls < 1 || calls > 1+maxRetries {
				t.Fatalf("seed %d: %d attempts with MaxRetries %d", seed, calls, maxRetries)
			}
			if (resp == nil) == (err == nil) {
				t.Fatalf("seed %d: RoundTrip = %v, %v", seed, resp, err)
			}
			tr.mu.Lock()
			bodies := tr.bodies
			tr.mu.Unlock()
			if resp != nil {
				if resp.StatusCode >= 300 && resp.Header.Get("X-Should-Retry") != "false" {
					t.Fatalf("seed %d: final %d not marked", seed, resp.StatusCode)
				}
				if resp.StatusCode < 300 && resp.Header.Get("X-Should-Retry") != "" {
					t.Fatalf("seed %d: a success was marked", seed)
				}
				resp.Body.Close()
			}
			for i, b := range bodies {
				if !b.closed {
					t.Fatalf("seed %d: response %d of %d left open", seed, i+1, len(bodies))
				}
			}
			for n, r := range fake.Requests() {
				if string(r.Body) != rtBody {
					t.Fatalf("seed %d: attempt %d sent %q", seed, n+1, r.Body)
				}
			}
		})
	}
}

// TestGetBodyNoBodyNotReplayed: a GetBody that returns neither a body nor
// an error marks a body that cannot be replayed.
func TestGetBodyNoBodyNotReplayed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503))
		st := New(Config{Base: fake})
		req := newRTRequest(t, strings.NewReader(rtBody))
		req.GetBody = func() (io.ReadCloser, error) { return nil, nil }
		resp, err := st.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || fake.Calls() != 1 || !strings.Contains(resp.Header.Get("X-Steady-Give-Up"), "cannot be rewound") {
			t.Fatalf("status %d after %d attempts, give-up %q", resp.StatusCode, fake.Calls(), resp.Header.Get("X-Steady-Give-Up"))
		}
	})
}

// TestPanickingGetBodyLeavesStateIntact: a GetBody that panics, read for a
// half-open probe and for a closed circuit, leaves no breaker slot and no
// in-flight count behind.
func TestPanickingGetBodyLeavesStateIntact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503))
		st := New(Config{Base: fake, Retry: RetryConfig{MaxRetries: -1}, Breaker: BreakerConfig{ConsecutiveFailures: 1, HalfOpenProbes: 1}})
		if resp, _ := st.RoundTrip(newRTRequest(t, nil)); resp.StatusCode != 503 {
			t.Fatalf("first call: %d", resp.StatusCode)
		}
		time.Sleep(2 * time.Second) // half-open
		explode := func() {
			req := newRTRequest(t, strings.NewReader(rtBody))
			req.GetBody = func() (io.ReadCloser, error) { panic("GetBody exploded") }
			defer func() {
				if r := recover(); r != "GetBody exploded" {
					t.Fatalf("recovered %v, want GetBody's panic", r)
				}
			}()
			st.RoundTrip(req)
		}
		for range 4 {
			explode()
		}
		fake.Add(steadytest.ChatCompletion("a"), steadytest.ChatCompletion("b"))
		for range 4 {
			explode() // closed now? not yet: the probe slot must be free
		}
		for i := range 2 {
			resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("healthy call %d after panics: %v", i, err)
			}
			resp.Body.Close()
		}
		if s := st.BreakerState("https://api.example.test"); s != BreakerClosed {
			t.Fatalf("breaker %v after a good probe", s)
		}
		for _, p := range st.Snapshot() {
			if p.InFlight != 0 {
				t.Fatalf("partition %s: %d in flight after panics", p.Key, p.InFlight)
			}
		}
	})
}

// TestRetryNegativeMeansNone: the config rule for RetryConfig and
// RetryConfig.BudgetRatio and BudgetMinPerSecond.
func TestRetryNegativeMeansNone(t *testing.T) {
	p := newRetryPolicy(RetryConfig{MaxRetries: -1, BaseDelay: -1, MaxDelay: -1, MaxRetryAfter: -1})
	if p.maxRetries != 0 || p.maxRetryAfter >= 0 || p.max != math.MaxInt64 {
		t.Fatalf("policy %+v", p)
	}
	for n := range 10 {
		if d := p.backoff(n+1, time.Second); d != 0 {
			t.Fatalf("no base delay: backoff %v", d)
		}
	}
	p = newRetryPolicy(RetryConfig{MaxDelay: -1})
	if d := p.backoff(40, 0); d < 0 {
		t.Fatalf("uncapped backoff overflowed: %v", d)
	}
	if newBudget(-1, 0) != nil {
		t.Fatal("a negative ratio did not turn the budget off")
	}
	if b := newBudget(0, -1); b.floor != nil || b.withdraw() {
		t.Fatal("a negative floor still allowed a retry with nothing earned")
	}
}

// recordHandler keeps log records.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// TestLogBurstsAggregated: a burst of identical refusals writes one line,
// then one line with the count of the rest.
func TestLogBurstsAggregated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &recordHandler{}
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503))
		st := New(Config{Base: fake, Logger: slog.New(h), Retry: RetryConfig{MaxRetries: -1}, Breaker: BreakerConfig{ConsecutiveFailures: 1}})
		st.RoundTrip(newRTRequest(t, nil))
		for range 50 {
			if _, err := st.RoundTrip(newRTRequest(t, nil)); !errors.Is(err, ErrCircuitOpen) {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * time.Second)
		var lines []string
		count := int64(0)
		h.mu.Lock()
		for _, r := range h.recs {
			if strings.HasPrefix(r.Message, "steady: rejected") {
				lines = append(lines, r.Message)
				r.Attrs(func(a slog.Attr) bool {
					if a.Key == "count" {
						count = a.Value.Int64()
					}
					return true
				})
			}
			if r.Message == "steady: give-up" && r.Level != slog.LevelWarn {
				t.Errorf("give-up logged at %v", r.Level)
			}
		}
		h.mu.Unlock()
		if len(lines) != 2 || count != 49 {
			t.Fatalf("rejected lines %q with count %d, want 2 lines, the second counting 49", lines, count)
		}
	})
}
