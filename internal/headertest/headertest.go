// Package headertest holds the response headers that the tests of steady
// and of its ratelimit package share, so that each fixture is written once.
// Only test files import it.
package headertest

import (
	"net/http"
	"strings"
	"time"
)

// Now is the clock the fixtures are read at: the Date of [OpenAI].
var Now = time.Date(2025, 8, 21, 12, 40, 0, 0, time.UTC)

// Lines builds a header from "Name: value" lines, keeping each name
// exactly as written (as a hand-built map or an HTTP/2 response would).
func Lines(lines ...string) http.Header {
	h := http.Header{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ":")
		h[k] = append(h[k], strings.TrimSpace(v))
	}
	return h
}

// Fuzz reads a fuzz input's "Name: value" lines, the first 64 of them. A
// line starting with "~" keeps its name as written; others are
// canonicalized, as net/http does. Lines without a colon are skipped.
func Fuzz(data string) http.Header {
	h := http.Header{}
	for i, line := range strings.Split(data, "\n") {
		if i == 64 {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if raw, ok := strings.CutPrefix(k, "~"); ok {
			h[raw] = append(h[raw], v)
		} else {
			h.Add(k, v)
		}
	}
	return h
}

// OpenAI is a typical successful OpenAI response's header set: two
// windows (requests and tokens) among the headers every response has.
func OpenAI() http.Header {
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
