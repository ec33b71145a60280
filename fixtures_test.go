package steady_test

import (
	"net/http"
	"strings"
)

// hdr builds a header from "Name: value" lines, keeping each name exactly
// as written (as a hand-built map or an HTTP/2 response would).
func hdr(lines ...string) http.Header {
	h := http.Header{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ":")
		h[k] = append(h[k], strings.TrimSpace(v))
	}
	return h
}

// openAIHeaders is a typical successful OpenAI response's header set.
func openAIHeaders() http.Header {
	h := http.Header{}
	for _, kv := range [][2]string{
		{"Date", "Thu, 21 Aug 2025 12:40:00 GMT"},
		{"Content-Type", "application/json"},
		{"Transfer-Encoding", "chunked"},
		{"Connection", "keep-alive"},
		{"Openai-Organization", "user-abc"},
		{"Openai-Processing-Ms", "312"},
		{"Openai-Version", "2020-10-01"},
		{"X-Request-Id", "req_0123456789abcdef"},
		{"Strict-Transport-Security", "max-age=31536000"},
		{"Cf-Ray", "8b1d2e3f4a5b6c7d-AMS"},
		{"X-Ratelimit-Limit-Requests", "5000"},
		{"X-Ratelimit-Limit-Tokens", "800000"},
		{"X-Ratelimit-Remaining-Requests", "4999"},
		{"X-Ratelimit-Remaining-Tokens", "799985"},
		{"X-Ratelimit-Reset-Requests", "12ms"},
		{"X-Ratelimit-Reset-Tokens", "1ms"},
	} {
		h.Set(kv[0], kv[1])
	}
	return h
}
