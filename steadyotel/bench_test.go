package steadyotel_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadyotel"
)

// okBase answers every request with the same small 200 and its rate-limit
// headers, reading and closing the request body as a real transport does.
type okBase struct{ header http.Header }

const okBody = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}`

func (b okBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{
		StatusCode:    200,
		Header:        b.header,
		Body:          io.NopCloser(strings.NewReader(okBody)),
		ContentLength: int64(len(okBody)),
		Request:       req,
	}, nil
}

func newOKBase() okBase {
	return okBase{header: http.Header{
		"Content-Type":                   {"application/json"},
		"X-Request-Id":                   {"req_1"},
		"X-Ratelimit-Limit-Requests":     {"1000000"},
		"X-Ratelimit-Remaining-Requests": {"999999"},
		"X-Ratelimit-Reset-Requests":     {"1ms"},
	}}
}

// runBench sends a 2 KB chat request through rt, in ctx, until b is done.
func runBench(b *testing.B, ctx context.Context, rt http.RoundTripper) {
	content := strings.Repeat("lorem ipsum ", 160)
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + content + `"}],"max_completion_tokens":256}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.openai.com/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk-bench")
	req.Header.Set("Content-Type", "application/json")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req.Body, _ = req.GetBody()
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(resp, err)
		}
		resp.Body.Close()
	}
}

// BenchmarkSteady is the success path through steady alone: the baseline.
func BenchmarkSteady(b *testing.B) {
	runBench(b, context.Background(), steady.New(steady.Config{Base: newOKBase()}))
}

// BenchmarkInstrumented is the same path with metrics into the SDK (a
// manual reader) and tracing left to the global provider, not set up: the
// cost of steadyotel in a service that exports metrics only.
func BenchmarkInstrumented(b *testing.B) {
	st := steady.New(steady.Config{Base: newOKBase()})
	ins, err := steadyotel.Instrument(st,
		steadyotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))))
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Stop()
	runBench(b, context.Background(), st)
}

// BenchmarkInstrumentedTraced adds a span per attempt, child of a sampled
// caller span, into a trace SDK that keeps nothing: the cost of a
// recorded span, beyond the metrics.
func BenchmarkInstrumentedTraced(b *testing.B) {
	st := steady.New(steady.Config{Base: newOKBase()})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	ins, err := steadyotel.Instrument(st,
		steadyotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))),
		steadyotel.WithTracerProvider(tp))
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Stop()
	ctx, span := tp.Tracer("app").Start(context.Background(), "caller")
	defer span.End()
	runBench(b, ctx, st)
}

// BenchmarkInstrumentedUnsampled traces through the global provider
// under a caller span that is not sampled: no span is made.
func BenchmarkInstrumentedUnsampled(b *testing.B) {
	st := steady.New(steady.Config{Base: newOKBase()})
	ins, err := steadyotel.Instrument(st,
		steadyotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))))
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Stop()
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}})
	runBench(b, trace.ContextWithSpanContext(context.Background(), sc), st)
}
