package steady_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// streamChat reads a whole chat stream and returns its text.
func streamChat(ctx context.Context, c openai.Client) (string, error) {
	s := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
	})
	var b strings.Builder
	for s.Next() {
		for _, ch := range s.Current().Choices {
			b.WriteString(ch.Delta.Content)
		}
	}
	s.Close()
	return b.String(), s.Err()
}

// TestStreamErrorBeforeFirstToken: one 200 stream in five carries an
// overloaded error before its first token. Through the real SDK, in both
// forms and both dialects, no call fails: each such stream is retried as
// the 529 it stands for, and the caller reads the retry's whole answer.
func TestStreamErrorBeforeFirstToken(t *testing.T) {
	for _, d := range []steadytest.Dialect{steadytest.DialectOpenAI, steadytest.DialectAnthropic} {
		providerForms(t, func(t *testing.T, client clientFunc) {
			t.Run(d.String(), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					prov := steadytest.NewProvider(steadytest.ProviderConfig{
						Dialect: d, Faults: steadytest.Faults{StreamErrorRatio: 0.2, Seed: 3},
					})
					var log eventLog
					c, _ := client(steady.Config{OnEvent: log.add}, prov)
					var wg sync.WaitGroup
					var mu sync.Mutex
					failed := 0
					for range 50 {
						wg.Go(func() {
							text, err := streamChat(t.Context(), c)
							mu.Lock()
							defer mu.Unlock()
							if err != nil || text != "Hello from steadytest." {
								failed++
								t.Logf("call: %q, %v", text, err)
							}
						})
					}
					wg.Wait()
					st := prov.Stats()
					retries := 0
					for _, ev := range log.of(steady.EventRetry) {
						if ev.Status == 529 {
							retries++
						}
					}
					t.Logf("%d streams failed by the provider, %d retried as 529, %d calls failed", st.StreamErrors, retries, failed)
					if failed != 0 {
						t.Errorf("%d calls failed, want 0", failed)
					}
					if st.StreamErrors == 0 || int64(retries) != st.StreamErrors {
						t.Errorf("%d streams failed, %d retried as 529: want each retried", st.StreamErrors, retries)
					}
				})
			})
		})
	}
}

// TestStreamErrorAfterFirstToken: an error after the first token reaches
// the caller as a *steady.StreamError that errors.As finds through the
// SDK's stream, with the text read before it; ClassifyError reads it as
// the 529 it stands for; the breaker counts it.
func TestStreamErrorAfterFirstToken(t *testing.T) {
	for _, d := range []steadytest.Dialect{steadytest.DialectOpenAI, steadytest.DialectAnthropic} {
		providerForms(t, func(t *testing.T, client clientFunc) {
			t.Run(d.String(), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					prov := steadytest.NewProvider(steadytest.ProviderConfig{
						Dialect: d, Faults: steadytest.Faults{StreamErrorRatio: 1, StreamErrorAfter: 3},
					})
					c, tr := client(steady.Config{Breaker: steady.BreakerConfig{ConsecutiveFailures: 3}}, prov)
					for i := range 3 {
						text, err := streamChat(t.Context(), c)
						var se *steady.StreamError
						if !errors.As(err, &se) {
							t.Fatalf("call %d: %q, %v (%T), want a *steady.StreamError", i, text, err, err)
						}
						if text != "Hello from" {
							t.Errorf("text before the error %q, want the first two words", text)
						}
						if se.Status != 529 || se.Type != "overloaded_error" {
							t.Errorf("stream error %+v, want 529 overloaded_error", se)
						}
						if f := steady.ClassifyError(err); f.Status != 529 || !f.Retryable {
							t.Errorf("ClassifyError: %+v, want a retryable 529", f)
						}
					}
					if s := tr.BreakerState(testUpstream); s != steady.BreakerOpen {
						t.Errorf("breaker %v after 3 stream errors in a row, want open", s)
					}
				})
			})
		})
	}
}

// stalledStream is a 200 stream whose first event comes after d.
func stalledStream(d time.Duration) steadytest.Response {
	r := steadytest.ChatCompletionStream("Hello")
	r.Chunks[0].Delay = d
	return r
}

// TestStreamStallRetried: a stream that sends nothing for longer than the
// guard's bound (a minute by default) is retried once, within the caller's
// deadline, and the caller reads the retry's answer.
func TestStreamStallRetried(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFakeT(t, stalledStream(10*time.Minute), steadytest.ChatCompletionStream("Hello"))
			var log eventLog
			c := client(steady.Config{OnEvent: log.add}, fake)
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			start := time.Now()
			text, err := streamChat(ctx, c)
			if err != nil || text != "Hello" {
				t.Fatalf("call: %q, %v; want the retry's answer", text, err)
			}
			if el := time.Since(start); el < time.Minute || el > time.Minute+2*time.Second {
				t.Errorf("took %v, want the guard's minute and a retry's backoff", el)
			}
			if fake.Calls() != 2 {
				t.Errorf("%d attempts, want 2", fake.Calls())
			}
			if rs := log.of(steady.EventRetry); len(rs) != 1 || rs[0].Status != http.StatusGatewayTimeout {
				t.Errorf("retries %+v, want one of a 504", rs)
			}
		})
	})
}

// TestStreamHandedOverExactly: what the guard read ahead (a comment, a
// role chunk, Azure's prompt filter results) and the rest reach the caller
// exactly as received; a non-streamed 2xx is not read ahead.
func TestStreamHandedOverExactly(t *testing.T) {
	stream := ": keep-alive\n\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
		"data: [DONE]\n\n"
	var chunks []steadytest.Chunk
	for i := 0; i < len(stream); i += 7 {
		chunks = append(chunks, steadytest.Chunk{Delay: time.Millisecond, Data: stream[i:min(i+7, len(stream))]})
	}
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t,
			steadytest.Response{Chunks: chunks}.WithHeader("Content-Type", "text/event-stream"),
			steadytest.JSON(200, `{"error":{"type":"overloaded_error"}}`),
		)
		hc := &http.Client{Transport: steady.New(steady.Config{Base: fake})}
		for _, want := range []string{stream, `{"error":{"type":"overloaded_error"}}`} {
			resp, err := hc.Post(testBaseURL+"/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(got) != want || resp.StatusCode != 200 {
				t.Errorf("read %d %q, %v; want 200 %q", resp.StatusCode, got, err, want)
			}
		}
	})
}

// TestStreamGetNotGuarded: a GET's stream (a subscription, not a
// generation) is handed back at once, whatever comes first.
func TestStreamGetNotGuarded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, stalledStream(10*time.Minute))
		hc := &http.Client{Transport: steady.New(steady.Config{Base: fake})}
		start := time.Now()
		resp, err := hc.Get(testBaseURL + "/events")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if el := time.Since(start); el != 0 {
			t.Errorf("the GET's stream came back after %v, want at once", el)
		}
	})
}
