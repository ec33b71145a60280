package steady_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/steady-go/steady"
)

// sseOnce answers every request at once with a short chat stream.
type sseOnce struct{}

const benchStream = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
	"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
	"data: [DONE]\n\n"

func (sseOnce) RoundTrip(req *http.Request) (*http.Response, error) {
	h := http.Header{"Content-Type": {"text/event-stream"},
		// Limits far away, so that pacing does not wait.
		"X-Ratelimit-Limit-Requests": {"100000000"}, "X-Ratelimit-Remaining-Requests": {"99999999"}, "X-Ratelimit-Reset-Requests": {"1ms"}}
	return &http.Response{StatusCode: 200, Header: h,
		Body: io.NopCloser(strings.NewReader(benchStream)), ContentLength: -1, Request: req}, nil
}

// BenchmarkFirstByte is the time from sending a streamed request to the
// caller's first byte of the response, in memory: bare, through steady
// with the stream guard off, and with the guard reading ahead to the
// first content event (the guard's cost: a goroutine's read, a parse of
// the events before the content).
//
//	go test -run '^$' -bench FirstByte -benchmem .
func BenchmarkFirstByte(b *testing.B) {
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"bare", sseOnce{}},
		{"steady-no-guard", steady.New(steady.Config{Base: sseOnce{}, Retry: steady.RetryConfig{FirstTokenBytes: -1}})},
		{"steady-guard", steady.New(steady.Config{Base: sseOnce{}})},
	} {
		b.Run(c.name, func(b *testing.B) {
			hc := &http.Client{Transport: c.rt}
			buf := make([]byte, 4096)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := hc.Post("https://api.example.test/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
				if err != nil {
					b.Fatal(err)
				}
				if n, _ := resp.Body.Read(buf); n == 0 {
					b.Fatal("no first byte")
				}
				resp.Body.Close()
			}
		})
	}
}
