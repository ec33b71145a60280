package steady_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/steady-go/steady"
)

// fixedOK answers every request with the same small 200, reading and
// closing the request body as a real transport does.
type fixedOK struct {
	header http.Header
	body   string // okBody when empty
}

const okBody = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}`

func (f fixedOK) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	body := f.body
	if body == "" {
		body = okBody
	}
	return &http.Response{
		StatusCode:    200,
		Header:        f.header,
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

// benchChatRequest returns a chat-completions request with a 2 KB JSON body.
func benchChatRequest(b *testing.B) *http.Request {
	content := strings.Repeat("lorem ipsum ", 160)
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + content + `"}],"max_completion_tokens":256}`)
	req, err := http.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk-bench")
	req.Header.Set("Content-Type", "application/json")
	return req
}

func runBench(b *testing.B, rt http.RoundTripper) {
	req := benchChatRequest(b)
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

// newBase answers as a provider does, announcing limits far from reached.
// (A base that announced nothing would be paced by the rate steady
// discovers for it: its slow start, in real time, would be measured
// rather than steady's cost.)
func newBase() fixedOK {
	return fixedOK{header: http.Header{
		"Content-Type": {"application/json"}, "X-Request-Id": {"req_1"},
		"X-Ratelimit-Limit-Requests": {"100000000"}, "X-Ratelimit-Remaining-Requests": {"99999999"}, "X-Ratelimit-Reset-Requests": {"1ms"},
	}}
}

// BenchmarkBare is the base transport alone.
func BenchmarkBare(b *testing.B) { runBench(b, newBase()) }

// BenchmarkTransport is the success path through steady over the same base.
func BenchmarkTransport(b *testing.B) { runBench(b, steady.New(steady.Config{Base: newBase()})) }

// usageBody is a chat completion of about 4 KiB of text that tells its
// usage, as a provider answers.
var usageBody = `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"` +
	strings.Repeat("The quick brown fox jumps over the lazy dog, then reads a story about languages. ", 50) +
	`","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":950,"total_tokens":962},"system_fingerprint":"fp_1"}`

// runBenchRead is runBench with the response's body read to its end, as
// the SDK reads it.
func runBenchRead(b *testing.B, rt http.RoundTripper) {
	req := benchChatRequest(b)
	buf := make([]byte, 32<<10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req.Body, _ = req.GetBody()
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(resp, err)
		}
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				break
			}
		}
		resp.Body.Close()
	}
}

// BenchmarkTransportReadBody is the success path with a 4 KiB body that
// tells its usage, read to its end: by default (nothing uses the usage),
// and settling by usage (PacingConfig.TokensByUsage), which watches it.
func BenchmarkTransportReadBody(b *testing.B) {
	base := newBase()
	base.body = usageBody
	b.Run("default", func(b *testing.B) { runBenchRead(b, steady.New(steady.Config{Base: base})) })
	b.Run("by-usage", func(b *testing.B) {
		runBenchRead(b, steady.New(steady.Config{Base: base, Pacing: steady.PacingConfig{TokensByUsage: true}}))
	})
}

// BenchmarkTransportNoPacing is the success path with pacing turned off:
// retries, budget and breaker only.
func BenchmarkTransportNoPacing(b *testing.B) {
	runBench(b, steady.New(steady.Config{Base: newBase(), Pacing: steady.PacingConfig{Disabled: true}}))
}

// BenchmarkMiddleware is the success path through steady's middleware form.
func BenchmarkMiddleware(b *testing.B) {
	base := newBase()
	st := steady.New(steady.Config{})
	next := base.RoundTrip
	req := benchChatRequest(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req.Body, _ = req.GetBody()
		resp, err := st.Middleware(req, next)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(resp, err)
		}
		resp.Body.Close()
	}
}

// BenchmarkCircuitOpen is a request refused by an open circuit.
func BenchmarkCircuitOpen(b *testing.B) {
	fail := failingRT{}
	st := steady.New(steady.Config{Base: fail, Retry: steady.RetryConfig{MaxRetries: -1}, Breaker: steady.BreakerConfig{ConsecutiveFailures: 1}})
	req := benchChatRequest(b)
	req.Body, _ = req.GetBody()
	if resp, _ := st.RoundTrip(req); resp != nil {
		resp.Body.Close()
	}
	b.ReportAllocs()
	b.ResetTimer()
	probes := 0
	for b.Loop() {
		req.Body, _ = req.GetBody()
		// About once a second (more rarely as probes keep failing) the
		// request is the circuit's probe and is sent.
		if resp, err := st.RoundTrip(req); err == nil {
			resp.Body.Close()
			probes++
		}
	}
	if probes > 1+b.N/1000 {
		b.Fatalf("%d of %d requests sent: the circuit is not open", probes, b.N)
	}
}

type failingRT struct{}

func (failingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: 503, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// BenchmarkNewPartition sends every request to a partition not seen before
// (a new model), with the partition table already full: the cost of
// making one and dropping another, at several caps.
func BenchmarkNewPartition(b *testing.B) {
	for _, cap := range []int{1024, 10_000, 100_000} {
		b.Run(strconv.Itoa(cap), func(b *testing.B) {
			st := steady.New(steady.Config{Base: newBase(), Pacing: steady.PacingConfig{MaxPartitions: cap}})
			body := func(i int) []byte {
				return []byte(`{"model":"m-` + strconv.Itoa(i) + `","messages":[{"role":"user","content":"hi"}]}`)
			}
			send := func(b *testing.B, i int) {
				req, _ := http.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", bytes.NewReader(body(i)))
				req.Header.Set("Authorization", "Bearer sk-bench")
				resp, err := st.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
			for i := range cap {
				send(b, i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := cap
			for b.Loop() {
				send(b, i)
				i++
			}
		})
	}
}
