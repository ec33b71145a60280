package steadytest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/steady-go/steady/steadytest"
)

const chatBody = `{"model":"m","messages":[{"role":"user","content":"12345678"}]}`

// call sends one request to p and returns the response with its body read.
func call(t *testing.T, rt http.RoundTripper, method, path, body string) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading %s %s: %v", method, path, err)
	}
	return resp, string(b)
}

func sdkClient(rt http.RoundTripper, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithHTTPClient(&http.Client{Transport: rt}),
		option.WithBaseURL(base),
		option.WithAPIKey("test"),
		option.WithMaxRetries(0),
	}, opts...)...)
}

func userMsg(s string) []openai.ChatCompletionMessageParamUnion {
	return []openai.ChatCompletionMessageParamUnion{openai.UserMessage(s)}
}

func TestProviderChatThroughSDK(t *testing.T) {
	p := steadytest.NewProvider(steadytest.ProviderConfig{Answer: "one two three four five six seven eight"})
	c := sdkClient(p)
	resp, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "gpt-test",
		Messages: userMsg(strings.Repeat("x", 40)), // 10 tokens
		N:        openai.Int(2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 2 || resp.Choices[1].Index != 1 || resp.Choices[0].Message.Content != "one two three four five six seven eight" {
		t.Errorf("choices %+v", resp.Choices)
	}
	if resp.Model != "gpt-test" || resp.Choices[0].FinishReason != "stop" {
		t.Errorf("model %q finish %q", resp.Model, resp.Choices[0].FinishReason)
	}
	// 39 characters: 10 tokens per choice.
	if u := resp.Usage; u.PromptTokens != 10 || u.CompletionTokens != 20 || u.TotalTokens != 30 {
		t.Errorf("usage %+v", u)
	}

	// A completion budget cuts the answer.
	resp, err = c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "gpt-test", Messages: userMsg("hi"), MaxCompletionTokens: openai.Int(2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].FinishReason != "length" || resp.Choices[0].Message.Content != "one two " || resp.Usage.CompletionTokens != 2 {
		t.Errorf("with max_completion_tokens 2: %q %q %+v", resp.Choices[0].FinishReason, resp.Choices[0].Message.Content, resp.Usage)
	}
	if s := p.Stats(); s.Requests != 2 || s.Accepted != 2 || s.TokensAccepted != 10*2+(1+2) { // (prompt + budget) * n
		t.Errorf("stats %+v", s)
	}
}

func TestProviderStreamThroughSDK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{Answer: "a b c", ChunkDelay: 100 * time.Millisecond})
		c := sdkClient(p)
		for _, includeUsage := range []bool{false, true} {
			params := openai.ChatCompletionNewParams{Model: "m", Messages: userMsg("12345678")}
			if includeUsage {
				params.StreamOptions.IncludeUsage = openai.Bool(true)
			}
			start := time.Now()
			s := c.Chat.Completions.NewStreaming(context.Background(), params)
			var acc openai.ChatCompletionAccumulator
			var at []time.Duration
			var usageChunks int
			for s.Next() {
				ch := s.Current()
				acc.AddChunk(ch)
				at = append(at, time.Since(start))
				if ch.JSON.Usage.Valid() && ch.Usage.TotalTokens > 0 {
					usageChunks++
					if len(ch.Choices) != 0 {
						t.Errorf("the usage chunk has choices")
					}
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			s.Close()
			synctest.Wait() // the stream's writer has finished
			if got := acc.Choices[0].Message.Content; got != "a b c" {
				t.Errorf("streamed content %q", got)
			}
			// role, "a ", "b ", "c", finish (+ usage), each 100ms apart.
			want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond}
			if includeUsage {
				want = append(want, 500*time.Millisecond)
			}
			if !slices.Equal(at, want) {
				t.Errorf("include_usage=%v: chunks at %v, want %v", includeUsage, at, want)
			}
			if includeUsage {
				if usageChunks != 1 || acc.Usage.PromptTokens != 2 || acc.Usage.CompletionTokens != 2 || acc.Usage.TotalTokens != 4 {
					t.Errorf("usage chunks %d, usage %+v", usageChunks, acc.Usage)
				}
			} else if usageChunks != 0 {
				t.Errorf("usage sent without include_usage")
			}
		}
		synctest.Wait()
		if s := p.Stats(); s.InFlight != 0 || s.PeakConcurrency != 1 {
			t.Errorf("after the streams: %+v", s)
		}
	})
}

func TestProviderStreamWireFormat(t *testing.T) {
	p := steadytest.NewProvider(steadytest.ProviderConfig{Answer: "hi", ChunkDelay: -1})
	resp, body := call(t, p, "POST", "/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q", ct)
	}
	events := strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n")
	if len(events) != 4 || events[len(events)-1] != "data: [DONE]" {
		t.Fatalf("events %q", events)
	}
	for _, e := range events[:3] {
		var chunk struct {
			Object string          `json:"object"`
			Usage  json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(e, "data: ")), &chunk); err != nil || chunk.Object != "chat.completion.chunk" || chunk.Usage != nil {
			t.Errorf("event %q: %+v %v", e, chunk, err)
		}
	}
}

func TestProviderOtherEndpointsThroughSDK(t *testing.T) {
	p := steadytest.NewProvider(steadytest.ProviderConfig{Models: []string{"a", "b"}, ChunkDelay: -1})
	c := sdkClient(p)
	ctx := context.Background()

	r, err := c.Responses.New(ctx, responses.ResponseNewParams{
		Model: "m", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("12345678")},
		Instructions: openai.String("1234"), MaxOutputTokens: openai.Int(100),
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.OutputText() != "Hello from steadytest." || r.Usage.InputTokens != 3 || r.Status != "completed" {
		t.Errorf("response %q %+v %s", r.OutputText(), r.Usage, r.Status)
	}

	st := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
		Model: "m", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
	})
	var text strings.Builder
	var completed bool
	for st.Next() {
		switch ev := st.Current(); ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			completed = ev.Response.OutputText() == "Hello from steadytest."
		}
	}
	if st.Err() != nil || text.String() != "Hello from steadytest." || !completed {
		t.Errorf("responses stream: %q completed=%v err=%v", text.String(), completed, st.Err())
	}

	e, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "e", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"abcd", "abcdefgh"}},
		Dimensions: openai.Int(4),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Data) != 2 || len(e.Data[1].Embedding) != 4 || e.Data[1].Index != 1 || e.Usage.PromptTokens != 3 {
		t.Errorf("embeddings %+v", e)
	}
	_, body := call(t, p, "POST", "/embeddings", `{"model":"e","input":[1,2,3],"encoding_format":"base64"}`)
	if !strings.Contains(body, `"embedding":"`) || !strings.Contains(body, `"prompt_tokens":3`) {
		t.Errorf("base64 embeddings of a token array: %s", body)
	}

	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 2 || page.Data[0].ID != "a" {
		t.Errorf("models %+v", page.Data)
	}
}

func TestProviderBadRequests(t *testing.T) {
	for _, d := range steadytest.Dialects() {
		p := steadytest.NewProvider(steadytest.ProviderConfig{Dialect: d, RequestsPerWindow: 100})
		cases := []struct {
			method, path, body string
			status             int
		}{
			{"POST", "/chat/completions", `{"model":`, 400},
			{"POST", "/chat/completions", `{"model":"m","messages":[]}`, 400},
			{"POST", "/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, 400},
			{"POST", "/chat/completions", `{"model":"m","n":0,"messages":[{"role":"user","content":"x"}]}`, 400},
			{"POST", "/chat/completions", `{"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}`, 400},
			{"POST", "/embeddings", `{"model":"m","input":{}}`, 400},
			{"POST", "/embeddings", `{"model":"m","input":"x","encoding_format":"hex"}`, 400},
			{"POST", "/chat/completions", `{"model":"m","messages":[1]}`, 400},
			{"POST", "/nothing/here", `{}`, 404},
			{"GET", "/chat/completions", ``, 405},
			{"POST", "/models", `{}`, 405},
		}
		for _, c := range cases {
			resp, body := call(t, p, c.method, c.path, c.body)
			if resp.StatusCode != c.status {
				t.Errorf("%v: %s %s %s: status %d, want %d", d, c.method, c.path, c.body, resp.StatusCode, c.status)
			}
			checkErrorShape(t, d, resp.StatusCode, body, "")
			if resp.Header.Get("Date") == "" {
				t.Errorf("%v: no Date on a %d", d, resp.StatusCode)
			}
		}
		if s := p.Stats(); s.ClientErrors != int64(len(cases)) || s.Accepted != 0 || s.MaxRequestsInWindow != 0 {
			t.Errorf("%v: stats %+v", d, s)
		}
	}
}

// checkErrorShape checks that body is an error body in dialect d's shape,
// with errType as its type when not empty.
func checkErrorShape(t *testing.T, d steadytest.Dialect, status int, body, errType string) {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Errorf("%v: error body %q is not JSON: %v", d, body, err)
		return
	}
	var typ any
	switch d {
	case steadytest.DialectHerokuSeed:
		if code, _ := v["code"].(float64); int(code) != status || v["message"] == "" {
			t.Errorf("%v: flat body %s", d, body)
		}
		typ = v["type"]
	case steadytest.DialectHerokuDocs:
		e, _ := v["error"].(map[string]any)
		if code, _ := e["code"].(float64); int(code) != status {
			t.Errorf("%v: nested body %s", d, body)
		}
		typ = e["type"]
	case steadytest.DialectAnthropic:
		e, _ := v["error"].(map[string]any)
		if v["type"] != "error" || e["message"] == "" || !strings.HasPrefix(fmt.Sprint(v["request_id"]), "req_") {
			t.Errorf("%v: body %s", d, body)
		}
		typ = e["type"]
	default:
		e, _ := v["error"].(map[string]any)
		if _, ok := e["param"]; !ok || e["message"] == "" {
			t.Errorf("%v: OpenAI body %s", d, body)
		}
		typ = e["type"]
	}
	if s, _ := typ.(string); s == "" || (errType != "" && s != errType) {
		t.Errorf("%v: error type %v, want %q in %s", d, typ, errType, body)
	}
}

// TestProviderDialects checks each dialect's headers on a 200 and a 429,
// with exact values in fake time.
func TestProviderDialects(t *testing.T) {
	type want struct {
		ok, limited map[string]string // header values; "" means absent
		rlType      string
	}
	// 2 requests and 1000 tokens a minute; the first request at t=0 costs
	// 2+100 tokens, the second 1 s later. The third, at t=2s, is refused on
	// requests until t=60s.
	const t0 = 946684800 // synctest's epoch: 2000-01-01T00:00:00Z
	tests := map[steadytest.Dialect]want{
		steadytest.DialectOpenAI: {
			ok: map[string]string{
				"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s",
				"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "796", "x-ratelimit-reset-tokens": "1m0s",
				"X-Request-Id": "req_000000000002", "Retry-After": "",
			},
			limited: map[string]string{
				"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "59s", "x-ratelimit-reset-tokens": "59s",
				"Retry-After": "58", "X-Request-Id": "req_000000000003",
			},
			rlType: "requests",
		},
		steadytest.DialectHerokuSeed: {
			ok: map[string]string{
				"X-RateLimit-Limit-Requests": "2", "X-RateLimit-Remaining-Requests": "0",
				"X-RateLimit-Reset-Requests": strconv.Itoa(t0 + 61), "X-RateLimit-Limit-Tokens": "1000",
				"X-RateLimit-Reset-Tokens": strconv.Itoa(t0 + 61), "X-Request-Id": "req_000000000002",
			},
			limited: map[string]string{"X-RateLimit-Reset-Requests": strconv.Itoa(t0 + 61), "Retry-After": "58"},
			rlType:  "rate_limit_error",
		},
		steadytest.DialectHerokuDocs: {
			ok:      map[string]string{"X-RateLimit-Reset-Requests": "1m0s", "X-RateLimit-Remaining-Tokens": "796"},
			limited: map[string]string{"X-RateLimit-Reset-Requests": "59s", "Retry-After": "58"},
			rlType:  "rate_limit_error",
		},
		steadytest.DialectAnthropic: {
			ok: map[string]string{
				"anthropic-ratelimit-requests-limit": "2", "anthropic-ratelimit-requests-remaining": "0",
				"anthropic-ratelimit-requests-reset": "2000-01-01T00:01:01Z", "anthropic-ratelimit-tokens-remaining": "796",
				"request-id": "req_000000000002", "X-Request-Id": "", "x-ratelimit-limit-requests": "",
			},
			limited: map[string]string{"anthropic-ratelimit-requests-reset": "2000-01-01T00:01:01Z", "Retry-After": "58"},
			rlType:  "rate_limit_error",
		},
		steadytest.DialectIETF: {
			ok: map[string]string{
				"RateLimit-Policy": `"requests";q=2;w=60, "tokens";q=1000;w=60;qu="tokens"`,
				"RateLimit":        `"requests";r=0;t=60, "tokens";r=796;t=60`, "x-ratelimit-limit-requests": "",
			},
			limited: map[string]string{"RateLimit": `"requests";r=0;t=59, "tokens";r=796;t=59`, "Retry-After": "58"},
			rlType:  "requests",
		},
		steadytest.DialectNone: {
			ok:      map[string]string{"x-ratelimit-limit-requests": "", "RateLimit": "", "X-Request-Id": "req_000000000002"},
			limited: map[string]string{"x-ratelimit-limit-requests": "", "Retry-After": "58"},
			rlType:  "requests",
		},
	}
	body := `{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"12345678"}]}`
	for d, w := range tests {
		t.Run(d.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := steadytest.NewProvider(steadytest.ProviderConfig{Dialect: d, RequestsPerWindow: 2, TokensPerWindow: 1000})
				if time.Now().Unix() != t0 {
					t.Fatalf("the bubble starts at %v", time.Now())
				}
				call(t, p, "POST", "/chat/completions", body)
				time.Sleep(time.Second)
				resp, _ := call(t, p, "POST", "/chat/completions", body)
				if resp.StatusCode != 200 {
					t.Fatalf("second request: %d", resp.StatusCode)
				}
				checkHeaders(t, "200", resp.Header, w.ok)
				if got := resp.Header.Get("Date"); got != "Sat, 01 Jan 2000 00:00:01 GMT" {
					t.Errorf("Date %q", got)
				}
				time.Sleep(time.Second)
				resp, b := call(t, p, "POST", "/chat/completions", body)
				if resp.StatusCode != 429 {
					t.Fatalf("third request: %d", resp.StatusCode)
				}
				checkHeaders(t, "429", resp.Header, w.limited)
				checkErrorShape(t, d, 429, b, w.rlType)
				if d == steadytest.DialectOpenAI && !strings.Contains(b, `"code":"rate_limit_exceeded"`) {
					t.Errorf("429 body %s", b)
				}
			})
		})
	}
}

func checkHeaders(t *testing.T, what string, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got, v)
		}
	}
}

func TestProviderTokenLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{TokensPerWindow: 1000, Window: 10 * time.Second})
		body := func(max int) string {
			return fmt.Sprintf(`{"model":"m","max_completion_tokens":%d,"n":2,"messages":[{"role":"system","content":"12345678"},{"role":"user","content":[{"type":"text","text":"1234"}]}]}`, max)
		}
		// (3 + 147) * 2 = 300 tokens each: three fit, the fourth does not.
		for i := range 3 {
			resp, _ := call(t, p, "POST", "/chat/completions", body(147))
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
			if got, want := resp.Header.Get("x-ratelimit-remaining-tokens"), strconv.Itoa(1000-300*(i+1)); got != want {
				t.Errorf("remaining tokens %s, want %s", got, want)
			}
			if resp.Header.Get("x-ratelimit-limit-requests") != "" {
				t.Error("requests headers sent with no requests limit")
			}
			time.Sleep(time.Second)
		}
		resp, b := call(t, p, "POST", "/chat/completions", body(147))
		if resp.StatusCode != 429 || !strings.Contains(b, `"type":"tokens"`) || resp.Header.Get("Retry-After") != "7" {
			t.Errorf("over the tokens limit: %d %s Retry-After %q", resp.StatusCode, b, resp.Header.Get("Retry-After"))
		}
		// A smaller one still fits: (3 + 47) * 2 = 100.
		if resp, _ := call(t, p, "POST", "/chat/completions", body(47)); resp.StatusCode != 200 {
			t.Errorf("a request that fits: %d", resp.StatusCode)
		}
		// After Retry-After, the first request has left the window.
		time.Sleep(7 * time.Second)
		if resp, _ := call(t, p, "POST", "/chat/completions", body(147)); resp.StatusCode != 200 {
			t.Errorf("after Retry-After: %d", resp.StatusCode)
		}
		// Larger than the whole limit: refused without a Retry-After.
		resp, b = call(t, p, "POST", "/chat/completions", body(600))
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "" || !strings.Contains(b, "too large") {
			t.Errorf("too large: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		s := p.Stats()
		if s.Accepted != 5 || s.RateLimited != 2 || s.TokensAccepted != 1300 || s.MaxTokensInWindow != 1000 {
			t.Errorf("stats %+v", s)
		}
	})
}

// hammer runs clients goroutines that each send requests back to back for
// d, waiting only pause after a 429, and returns the times of the 200s.
func hammer(t *testing.T, rt http.RoundTripper, clients int, d, pause time.Duration, body string) []time.Time {
	var mu sync.Mutex
	var ok []time.Time
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for time.Now().Before(end) {
				req, _ := http.NewRequest("POST", base+"/chat/completions", strings.NewReader(body))
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					mu.Lock()
					ok = append(ok, time.Now())
					mu.Unlock()
				case 429:
					time.Sleep(pause + time.Duration(rng.Int64N(int64(pause)+1)))
				default:
					t.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	slices.SortFunc(ok, func(a, b time.Time) int { return a.Compare(b) })
	return ok
}

// maxInWindow is the most of ts in any half-open span (t-w, t].
func maxInWindow(ts []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi, t := range ts {
		for !ts[lo].After(t.Add(-w)) {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

func TestProviderNeverExceedsLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 50, Window: 10 * time.Second})
		ok := hammer(t, p, 16, 60*time.Second, 50*time.Millisecond, chatBody)
		s := p.Stats()
		if s.MaxRequestsInWindow != 50 {
			t.Errorf("MaxRequestsInWindow = %d, want exactly the limit, 50", s.MaxRequestsInWindow)
		}
		if got := maxInWindow(ok, 10*time.Second); got != 50 {
			t.Errorf("the clients saw %d accepted in one window, want 50", got)
		}
		// Six windows: 300 accepted, however hard the clients push.
		if s.Accepted != int64(len(ok)) || s.Accepted < 290 || s.Accepted > 300 {
			t.Errorf("accepted %d (clients saw %d), want about 300", s.Accepted, len(ok))
		}
		if s.RateLimited < 10*s.Accepted || s.Requests != s.Accepted+s.RateLimited {
			t.Errorf("stats %+v: the clients did not hammer", s)
		}
	})
}

func TestProviderTokenBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 60, Algorithm: steadytest.TokenBucket})
		for i := range 60 {
			if resp, _ := call(t, p, "POST", "/chat/completions", chatBody); resp.StatusCode != 200 {
				t.Fatalf("burst request %d: %d", i, resp.StatusCode)
			}
		}
		resp, _ := call(t, p, "POST", "/chat/completions", chatBody)
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || resp.Header.Get("x-ratelimit-reset-requests") != "1m0s" {
			t.Errorf("after the burst: %d Retry-After %q reset %q", resp.StatusCode,
				resp.Header.Get("Retry-After"), resp.Header.Get("x-ratelimit-reset-requests"))
		}
		time.Sleep(time.Second)
		resp, _ = call(t, p, "POST", "/chat/completions", chatBody)
		if resp.StatusCode != 200 || resp.Header.Get("x-ratelimit-remaining-requests") != "0" {
			t.Errorf("one second later: %d remaining %q", resp.StatusCode, resp.Header.Get("x-ratelimit-remaining-requests"))
		}
		time.Sleep(30 * time.Second)
		resp, _ = call(t, p, "POST", "/chat/completions", chatBody)
		if resp.Header.Get("x-ratelimit-remaining-requests") != "29" || resp.Header.Get("x-ratelimit-reset-requests") != "31s" {
			t.Errorf("half refilled: remaining %q reset %q", resp.Header.Get("x-ratelimit-remaining-requests"), resp.Header.Get("x-ratelimit-reset-requests"))
		}
		// Steady state at the refill rate.
		ok := hammer(t, p, 8, 5*time.Minute, 100*time.Millisecond, chatBody)
		if n := len(ok); n < 285 || n > 330 {
			t.Errorf("%d accepted in 5 minutes at 60 a minute (plus the bucket's 30)", n)
		}
	})
}

func TestProviderFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 1000, Dialect: steadytest.DialectAnthropic})

		p.SetFaults(steadytest.Faults{Outage: true})
		for range 3 {
			resp, b := call(t, p, "POST", "/chat/completions", chatBody)
			if resp.StatusCode != 503 || resp.Header.Get("anthropic-ratelimit-requests-remaining") != "1000" {
				t.Errorf("outage: %d %v", resp.StatusCode, resp.Header)
			}
			checkErrorShape(t, steadytest.DialectAnthropic, 503, b, "api_error")
		}

		p.SetFaults(steadytest.Faults{Outage: true, ErrorStatus: 502})
		if resp, _ := call(t, p, "POST", "/chat/completions", chatBody); resp.StatusCode != 502 {
			t.Errorf("ErrorStatus 502: %d", resp.StatusCode)
		}

		p.SetFaults(steadytest.Faults{OverloadRatio: 1})
		resp, b := call(t, p, "POST", "/chat/completions", chatBody)
		if resp.StatusCode != 529 {
			t.Errorf("overload: %d", resp.StatusCode)
		}
		checkErrorShape(t, steadytest.DialectAnthropic, 529, b, "overloaded_error")

		p.SetFaults(steadytest.Faults{InsufficientQuota: true})
		resp, b = call(t, p, "POST", "/chat/completions", chatBody)
		if resp.StatusCode != 429 || !strings.Contains(b, "enforced_spend_limit_reached") || resp.Header.Get("Retry-After") != "" {
			t.Errorf("quota: %d %s", resp.StatusCode, b)
		}

		p.SetFaults(steadytest.Faults{ResetRatio: 1})
		req, _ := http.NewRequest("POST", base+"/chat/completions", strings.NewReader(chatBody))
		if _, err := p.RoundTrip(req); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("reset: %v", err)
		}

		p.SetFaults(steadytest.Faults{})
		if resp, _ := call(t, p, "POST", "/chat/completions", chatBody); resp.StatusCode != 200 {
			t.Errorf("recovered: %d", resp.StatusCode)
		}
		s := p.Stats()
		want := steadytest.Stats{Requests: 8, Accepted: 1, Faulted: 7, TokensAccepted: 2,
			PeakConcurrency: 1, MaxRequestsInWindow: 1, MaxTokensInWindow: 2}
		if s != want {
			t.Errorf("stats\n got %+v\nwant %+v", s, want)
		}
	})
}

func TestProviderFaultRatiosAreSeeded(t *testing.T) {
	run := func(seed int64) []int {
		p := steadytest.NewProvider(steadytest.ProviderConfig{
			Faults: steadytest.Faults{ErrorRatio: 0.3, OverloadRatio: 0.2, Seed: seed},
		})
		var statuses []int
		for range 400 {
			resp, _ := call(t, p, "POST", "/chat/completions", chatBody)
			statuses = append(statuses, resp.StatusCode)
		}
		return statuses
	}
	a, b, c := run(1), run(1), run(2)
	if !slices.Equal(a, b) {
		t.Error("the same seed gave different faults")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds gave the same faults")
	}
	count := map[int]int{}
	for _, s := range a {
		count[s]++
	}
	// 30% errors, then 20% of the rest overloaded: 120 and 56 expected.
	if count[503] < 90 || count[503] > 150 || count[529] < 35 || count[529] > 80 || count[200] != 400-count[503]-count[529] {
		t.Errorf("statuses %v", count)
	}
}

func TestProviderHostileHeaders(t *testing.T) {
	p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 1, Faults: steadytest.Faults{HostileHeaders: true}})
	seen := map[string]bool{}
	for i := range 20 {
		resp, _ := call(t, p, "POST", "/chat/completions", chatBody)
		if want := map[bool]int{true: 200, false: 429}[i == 0]; resp.StatusCode != want {
			t.Errorf("request %d: %d, want %d", i, resp.StatusCode, want)
		}
		for _, k := range []string{"x-ratelimit-reset-requests", "Retry-After", "anthropic-ratelimit-tokens-reset", "RateLimit"} {
			v, ok := resp.Header[http.CanonicalHeaderKey(k)]
			if !ok {
				t.Fatalf("%s missing", k)
			}
			seen[v[0]] = true
		}
	}
	for _, v := range []string{"NaN", "-1", "1e400", strings.Repeat("9", 4096)} {
		if !seen[v] {
			t.Errorf("never sent %.10q", v)
		}
	}
}

func TestProviderLatencyAndConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{Latency: 2 * time.Second})
		start := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { call(t, p, "POST", "/chat/completions", chatBody) })
		}
		wg.Wait()
		if time.Since(start) != 2*time.Second {
			t.Errorf("8 concurrent requests took %v, want the 2s latency", time.Since(start))
		}
		if s := p.Stats(); s.PeakConcurrency != 8 || s.InFlight != 0 || s.Accepted != 8 {
			t.Errorf("stats %+v", s)
		}

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/chat/completions", strings.NewReader(chatBody))
		if _, err := p.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("deadline during latency: %v", err)
		}
		if s := p.Stats(); s.Requests != 9 || s.Accepted != 8 || s.InFlight != 0 {
			t.Errorf("after a cancelled request: %+v", s)
		}
	})
}

func TestProviderOverHTTP(t *testing.T) {
	p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 3, Answer: "over the wire", ChunkDelay: time.Millisecond})
	srv := httptest.NewServer(p)
	defer srv.Close()
	c := openai.NewClient(option.WithBaseURL(srv.URL+"/v1"), option.WithAPIKey("test"), option.WithMaxRetries(0),
		option.WithHTTPClient(srv.Client()))
	ctx := context.Background()

	r, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: userMsg("hi")})
	if err != nil || r.Choices[0].Message.Content != "over the wire" {
		t.Fatalf("chat: %v %+v", err, r)
	}

	s := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "m", Messages: userMsg("hi"),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	for s.Next() {
		acc.AddChunk(s.Current())
	}
	if s.Err() != nil || acc.Choices[0].Message.Content != "over the wire" || acc.Usage.TotalTokens == 0 {
		t.Errorf("stream: %v %q %+v", s.Err(), acc.Choices[0].Message.Content, acc.Usage)
	}
	s.Close()

	resp, err := srv.Client().Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-ratelimit-remaining-requests") != "0" || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("models: %d %v", resp.StatusCode, resp.Header)
	}

	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: userMsg("hi")})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "rate_limit_exceeded" {
		t.Errorf("over the limit: %v", err)
	}

	p.SetFaults(steadytest.Faults{ResetRatio: 1})
	if _, err = srv.Client().Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody)); err == nil {
		t.Error("a reset connection gave no error")
	}
	st := p.Stats()
	if st.Accepted != 3 || st.RateLimited != 1 || st.Faulted < 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestProviderStreamClosedEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{ChunkDelay: time.Hour})
		req, _ := http.NewRequest("POST", base+"/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`))
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: {") {
			t.Fatalf("first line %q, %v", line, err)
		}
		if s := p.Stats(); s.InFlight != 1 {
			t.Errorf("InFlight %d during the stream", s.InFlight)
		}
		resp.Body.Close()
		synctest.Wait()
		if s := p.Stats(); s.InFlight != 0 {
			t.Errorf("InFlight %d after Close", s.InFlight)
		}
	})
}

func TestProviderWindowBoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 1, Window: 10 * time.Second})
		steps := []struct {
			sleep      time.Duration
			status     int
			retryAfter string
		}{
			{0, 200, ""},
			{10*time.Second - time.Nanosecond, 429, "1"}, // the window is (now-10s, now]
			{time.Nanosecond, 200, ""},
			{time.Second, 429, "9"},
		}
		for i, s := range steps {
			time.Sleep(s.sleep)
			resp, _ := call(t, p, "POST", "/chat/completions", chatBody)
			if resp.StatusCode != s.status || resp.Header.Get("Retry-After") != s.retryAfter {
				t.Errorf("step %d: %d Retry-After %q, want %d %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), s.status, s.retryAfter)
			}
		}
		if s := p.Stats(); s.MaxRequestsInWindow != 1 {
			t.Errorf("MaxRequestsInWindow %d", s.MaxRequestsInWindow)
		}
	})
}
