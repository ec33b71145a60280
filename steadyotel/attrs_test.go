package steadyotel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/steady-go/steady"
)

func TestHostCap(t *testing.T) {
	l := newLabels()
	seen := map[string]bool{}
	for i := range maxHosts + 10 {
		h := l.host(fmt.Sprintf("https://h%d.example.test", i))
		seen[h.address] = true
	}
	if len(seen) != maxHosts+1 || !seen[otherValue] {
		t.Fatalf("%d distinct addresses (other: %v), want %d and other", len(seen), seen[otherValue], maxHosts+1)
	}
	// A host seen before the cap keeps its own name.
	if got := l.host("https://h3.example.test").address; got != "h3.example.test" {
		t.Fatalf("h3 = %q", got)
	}
}

func TestModelAndWindowCaps(t *testing.T) {
	l := newLabels()
	for i := range maxModels {
		if got := l.model(fmt.Sprint("m", i)); got != fmt.Sprint("m", i) {
			t.Fatalf("model %d = %q", i, got)
		}
	}
	if got := l.model("one-more"); got != otherValue {
		t.Fatalf("model past the cap = %q, want %q", got, otherValue)
	}
	if got := l.model("m7"); got != "m7" {
		t.Fatalf("known model = %q", got)
	}
	if got := l.model(""); got != "" {
		t.Fatalf("no model = %q", got)
	}
	for i := range maxWindows {
		l.window(fmt.Sprint("w", i))
	}
	if got := l.window("w-extra"); got != otherValue {
		t.Fatalf("window past the cap = %q", got)
	}
}

func TestParseHost(t *testing.T) {
	for _, c := range []struct {
		upstream, address string
		port              int
		provider          string
	}{
		{"https://api.openai.com", "api.openai.com", 443, "openai"},
		{"https://myres.openai.azure.com", "myres.openai.azure.com", 443, "azure.ai.openai"},
		{"https://api.anthropic.com", "api.anthropic.com", 443, "anthropic"},
		{"https://api.groq.com", "api.groq.com", 443, "groq"},
		{"https://us.inference.heroku.com", "us.inference.heroku.com", 443, "heroku"},
		{"https://API.OpenAI.com.", "api.openai.com", 443, "openai"},
		{"http://localhost:8080", "localhost", 8080, ""},
		{"http://10.0.0.1", "10.0.0.1", 80, ""},
		{"https://[::1]:9000", "::1", 9000, ""},
	} {
		h := parseHost(c.upstream)
		if h.address != c.address || h.port != c.port || h.provider != c.provider {
			t.Errorf("%s: %q %d %q, want %q %d %q", c.upstream, h.address, h.port, h.provider, c.address, c.port, c.provider)
		}
	}
}

func TestOperationOf(t *testing.T) {
	for path, want := range map[string]string{
		"/v1/chat/completions":                     "chat",
		"/openai/deployments/gpt/chat/completions": "chat",
		"/v1/completions":                          "text_completion",
		"/v1/embeddings":                           "embeddings",
		"/v1/responses":                            "chat",
		"/v1/messages":                             "chat",
		"/v1/models":                               "",
		"":                                         "",
	} {
		if got := operationOf(path); got != want {
			t.Errorf("%q: %q, want %q", path, got, want)
		}
	}
}

// TestReason maps every reason steady writes today, and the statuses and
// errors behind reasons it may write later, to the bounded set.
func TestReason(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, c := range []struct {
		ev   steady.Event
		want string
	}{
		{steady.Event{Reason: "429 rate limit", Status: 429}, reasonRateLimited},
		{steady.Event{Reason: "500 server error", Status: 500}, reasonServerError},
		{steady.Event{Reason: "503 service unavailable", Status: 503}, reasonServerError},
		{steady.Event{Reason: "529 overloaded", Status: 529}, reasonOverloaded},
		{steady.Event{Reason: "retries exhausted", Status: 500}, reasonRetriesDone},
		{steady.Event{Reason: "retry budget exhausted", Status: 503}, reasonBudget},
		{steady.Event{Reason: "circuit open"}, reasonCircuitOpen},
		{steady.Event{Reason: "pacing wait"}, reasonPacingWait},
		{steady.Event{Reason: "pacing: steady: pacing wait too long"}, reasonPacingWait},
		{steady.Event{Reason: "retry hint 5m0s above cap 2m0s", Status: 429}, reasonHintTooLong},
		{steady.Event{Reason: "deadline before retry in 2s", Status: 429}, reasonDeadline},
		{steady.Event{Reason: "context done while waiting"}, reasonCanceled},
		{steady.Event{Reason: "request body cannot be replayed", Status: 500}, reasonNotReplayable},
		{steady.Event{Reason: "request body cannot be rewound: boom", Status: 500}, reasonNotReplayable},
		{steady.Event{Reason: "insufficient quota", Status: 429}, reasonQuota},
		{steady.Event{Reason: "400 bad request", Status: 400}, reasonClientError},
		{steady.Event{Reason: "connection failure: reset", Err: reset}, reasonConnection},
		{steady.Event{Reason: "an inner layer said not to retry"}, reasonNotRetryable},
		{steady.Event{Reason: "shared store unreachable: using local limits"}, reasonStoreFallback},
		{steady.Event{Status: 502}, reasonServerError},
		{steady.Event{Err: context.DeadlineExceeded}, reasonTimeout},
		{steady.Event{Err: reset}, reasonConnection},
		{steady.Event{Reason: "something new"}, reasonOther},
		{steady.Event{Kind: steady.EventCooldown, Reason: "retry-after 2s", Status: 429}, reasonRateLimited},
		{steady.Event{Reason: "retry hint too long"}, reasonHintTooLong},
	} {
		if got := reason(c.ev); got != c.want {
			t.Errorf("%q (status %d, err %v): %q, want %q", c.ev.Reason, c.ev.Status, c.ev.Err, got, c.want)
		}
	}
}

func TestErrorType(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, c := range []struct {
		status int
		err    error
		want   string
	}{
		{200, nil, ""},
		{429, nil, "429"},
		{503, nil, "503"},
		{0, context.DeadlineExceeded, "timeout"},
		{0, context.Canceled, "canceled"},
		{0, reset, "connection"},
		{0, &net.DNSError{Err: "no such host", IsNotFound: true}, "dns"},
		{0, errors.New("something"), otherValue},
	} {
		if got := errorType(c.status, c.err); got != c.want {
			t.Errorf("%d %v: %q, want %q", c.status, c.err, got, c.want)
		}
	}
}

func TestMethod(t *testing.T) {
	for in, want := range map[string]string{"POST": "POST", "GET": "GET", "": "GET", "BREW": otherValue, "post": otherValue} {
		if got := method(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// TestSpanEvents: an event that carries its request's context is added to
// the caller's span, when that span is recorded.
func TestSpanEvents(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	in, err := Instrument(steady.New(steady.Config{}), WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	ctx, parent := tp.Tracer("app").Start(context.Background(), "caller")
	now := time.Now()
	in.observe(steady.Event{Kind: steady.EventRetry, Time: now, Context: ctx, Upstream: "https://api.openai.com",
		Reason: "429 rate limit", Status: 429, Attempt: 1, Wait: 2 * time.Second, RequestID: "req_9"})
	in.observe(steady.Event{Kind: steady.EventRejected, Time: now, Context: ctx, Upstream: "https://api.openai.com",
		Reason: "circuit open", Attempt: 1})
	in.observe(steady.Event{Kind: steady.EventRetry, Time: now, Context: context.Background(), Reason: "429 rate limit"})
	parent.End()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want the caller's only", len(spans))
	}
	evs := spans[0].Events()
	if len(evs) != 2 || evs[0].Name != "steady.retry" || evs[1].Name != "steady.rejected" {
		t.Fatalf("events %+v", evs)
	}
	got := attribute.NewSet(evs[0].Attributes...)
	for k, want := range map[string]string{"steady.reason": "rate_limited", "http.response.status_code": "429",
		"steady.wait": "2", "steady.upstream.request_id": "req_9", "http.request.resend_count": "0"} {
		if v, ok := got.Value(attribute.Key(k)); !ok || v.String() != want {
			t.Errorf("%s = %v, want %s", k, v.String(), want)
		}
	}
	rej := attribute.NewSet(evs[1].Attributes...)
	if v, _ := rej.Value("steady.reason"); v.String() != "circuit_open" {
		t.Errorf("rejection reason = %q", v.String())
	}
}
