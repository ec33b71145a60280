package steadyotel_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadyotel"
)

// BenchmarkPartitions is the success path with 10 and with 10,000
// partitions alive (one model each, every call to the next model in
// turn), through steady alone and instrumented with metrics into the SDK
// (a manual reader): what steadyotel adds per call does not grow with the
// partitions, because events carry their model and no observer reads the
// Transport's snapshot per event or per partition.
//
//	go test -run '^$' -bench Partitions -benchmem .
func BenchmarkPartitions(b *testing.B) {
	for _, n := range []int{10, 10000} {
		for _, instrumented := range []bool{false, true} {
			name := fmt.Sprintf("partitions=%d/steady", n)
			if instrumented {
				name = fmt.Sprintf("partitions=%d/instrumented", n)
			}
			b.Run(name, func(b *testing.B) {
				st := steady.New(steady.Config{Base: newOKBase(), Pacing: steady.PacingConfig{MaxPartitions: 2 * n}})
				if instrumented {
					ins, err := steadyotel.Instrument(st,
						steadyotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))))
					if err != nil {
						b.Fatal(err)
					}
					defer ins.Stop()
				}
				reqs := modelRequests(b, n)
				for _, req := range reqs { // every partition alive before the clock starts
					send(b, st, req)
				}
				b.ReportAllocs()
				b.ResetTimer()
				i := 0
				for b.Loop() {
					send(b, st, reqs[i])
					if i++; i == n {
						i = 0
					}
				}
			})
		}
	}
}

// modelRequests returns n chat requests, each naming its own model.
func modelRequests(b *testing.B, n int) []*http.Request {
	b.Helper()
	content := strings.Repeat("lorem ipsum ", 160)
	reqs := make([]*http.Request, n)
	for i := range reqs {
		body := []byte(fmt.Sprintf(`{"model":"model-%05d","messages":[{"role":"user","content":%q}],"max_completion_tokens":256}`, i, content))
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "https://api.openai.com/v1/chat/completions", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer sk-bench")
		req.Header.Set("Content-Type", "application/json")
		reqs[i] = req
	}
	return reqs
}

func send(b *testing.B, rt http.RoundTripper, req *http.Request) {
	req.Body, _ = req.GetBody()
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 {
		b.Fatal(resp, err)
	}
	resp.Body.Close()
}
