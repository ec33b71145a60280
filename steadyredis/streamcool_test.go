package steadyredis

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestStreamCooldownShared: a rate-limit error event after a stream's
// first token ("try again in 20s") pauses the fleet's partition, not only
// the process that read it: through the SDK in both forms, two processes
// on one store (the real Redis, fake time), the other process's next
// request goes 20 s after the error, as after a 429 answered with that
// hint.
func TestStreamCooldownShared(t *testing.T) {
	c := needRedis(t)
	const pause = 20 * time.Second
	frame := `data: {"error":{"message":"Rate limit reached for steady-test-model on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.","type":"requests","code":"rate_limit_exceeded"}}` + "\n\n"
	limits := []string{"X-Ratelimit-Limit-Requests", "100", "X-Ratelimit-Remaining-Requests", "99", "X-Ratelimit-Reset-Requests", "1s"}
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) {
			prefix := testPrefix(t, c)
			synctest.Test(t, func(t *testing.T) {
				stream := steadytest.ChatCompletionStream("Hello", " from")
				stream.Chunks = append(stream.Chunks[:3:3], steadytest.Chunk{Data: frame})
				fake := steadytest.NewFakeT(t, stream.WithHeader(limits...), steadytest.ChatCompletion("Hi").WithHeader(limits...))
				a := fleetClient(t, 0, 2, prefix, fake, form, steady.Config{Base: fake}, nil)
				b := fleetClient(t, 1, 2, prefix, fake, form, steady.Config{Base: fake}, nil)
				params := openai.ChatCompletionNewParams{
					Model:    "steady-test-model",
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
				}
				s := a.Chat.Completions.NewStreaming(context.Background(), params)
				var text strings.Builder
				for s.Next() {
					for _, ch := range s.Current().Choices {
						text.WriteString(ch.Delta.Content)
					}
				}
				s.Close()
				errAt := time.Now()
				var se *steady.StreamError
				if err := s.Err(); !errors.As(err, &se) || se.Status != http.StatusTooManyRequests || text.String() != "Hello from" {
					t.Fatalf("stream: %q, %v (%T); want \"Hello from\" and a *steady.StreamError of 429", text.String(), err, err)
				}
				if _, err := b.Chat.Completions.New(context.Background(), params); err != nil {
					t.Fatalf("the other process's call: %v", err)
				}
				reqs := fake.Requests()
				sentAfter := reqs[len(reqs)-1].Time.Sub(errAt)
				t.Logf("the other process's request went %v after the stream's rate-limit event", sentAfter)
				if sentAfter < pause || sentAfter > pause+50*time.Millisecond {
					t.Errorf("the other process's request went %v after the stream's rate-limit event, want %v: the fleet was not told", sentAfter, pause)
				}
			})
		})
	}
}
