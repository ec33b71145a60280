package steadytest_test

import (
	"testing"

	"github.com/steady-go/steady/steadytest"
)

// FuzzProviderBody sends arbitrary bodies to every endpoint: the provider
// answers each with a well-formed response and never panics.
func FuzzProviderBody(f *testing.F) {
	for _, s := range []string{
		chatBody,
		`{"model":"m","stream":true,"stream_options":{"include_usage":true},"n":3,"max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"x"}]}],"instructions":"be brief","max_output_tokens":9}`,
		`{"model":"m","input":[[1,2],[3]],"dimensions":3,"encoding_format":"base64"}`,
		`{"model":"m","input":["a",1]}`,
		`{"model":"m","n":1e300,"messages":[{"role":"user","content":"x"}]}`,
		`{"model":"m","max_tokens":9223372036854775807,"n":128,"messages":[{"role":"user","content":"x"}]}`,
		`[]`, `null`, ``, `{"model":"m"} {}`,
	} {
		f.Add(s, uint8(0))
	}
	paths := []string{"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/models", "/v1/other"}
	p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 1 << 30, TokensPerWindow: 1 << 40, ChunkDelay: -1})
	f.Fuzz(func(t *testing.T, body string, which uint8) {
		path := paths[int(which)%len(paths)]
		resp, out := call(t, p, "POST", path[3:], body)
		switch resp.StatusCode {
		case 200, 400, 404, 405, 429:
		default:
			t.Fatalf("%s %q: status %d", path, body, resp.StatusCode)
		}
		if resp.StatusCode != 200 && len(out) == 0 {
			t.Fatalf("%s %q: %d with an empty body", path, body, resp.StatusCode)
		}
		if resp.Header.Get("X-Request-Id") == "" || resp.Header.Get("Date") == "" {
			t.Fatalf("headers %v", resp.Header)
		}
	})
}
