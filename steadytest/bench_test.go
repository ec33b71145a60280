package steadytest_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/steady-go/steady/steadytest"
)

// chat2KB is a chat completions body of about 2 KB.
var chat2KB = []byte(`{"model":"gpt-4o-mini","max_completion_tokens":64,"messages":[{"role":"user","content":"` +
	string(bytes.Repeat([]byte("lorem ipsum "), 165)) + `"}]}`)

func benchRoundTrip(b *testing.B, rt http.RoundTripper) {
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", base+"/chat/completions", bytes.NewReader(chat2KB))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func BenchmarkFakeRoundTrip(b *testing.B) {
	ok := steadytest.ChatCompletion("Hello!")
	f := steadytest.NewFake()
	f.Fallback = &ok
	steadytest.KeepRequests(f, 16)
	benchRoundTrip(b, f)
}

func BenchmarkProviderRoundTrip(b *testing.B) {
	benchRoundTrip(b, steadytest.NewProvider(steadytest.ProviderConfig{}))
}

// Every request refused: the cost of a 429 at the limit.
func BenchmarkProviderRoundTripLimited(b *testing.B) {
	p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 1, TokensPerWindow: 100000})
	benchRoundTrip(b, p)
}
