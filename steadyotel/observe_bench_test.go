package steadyotel

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/steady-go/steady"
)

// BenchmarkObserveAttempt is what steadyotel adds to each successful
// attempt, alone: recording an EventAttempt into the metrics SDK.
func BenchmarkObserveAttempt(b *testing.B) {
	st := steady.New(steady.Config{})
	in, err := Instrument(st, WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))))
	if err != nil {
		b.Fatal(err)
	}
	defer in.Stop()
	ev := steady.Event{
		Kind: steady.EventAttempt, Time: time.Now(), Upstream: "https://api.openai.com", Method: "POST",
		Path: "/v1/chat/completions", RequestID: "req_1", Status: 200, Attempt: 1, Duration: 300 * time.Millisecond,
		Context: context.Background(),
	}
	b.ReportAllocs()
	for b.Loop() {
		in.observe(ev)
	}
}
