package steady_test

import (
	"errors"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// streamFailingAfter is a 200 stream of "Hello from" that an error event
// (frame, a whole event) ends after its first tokens.
func streamFailingAfter(frame string) steadytest.Response {
	r := steadytest.ChatCompletionStream("Hello", " from")
	r.Chunks = append(r.Chunks[:3:3], steadytest.Chunk{Data: frame})
	return r.WithHeader(limitHeaders...)
}

// limitHeaders announce a window with room, so that the partition is
// paced by its headers (not by a discovered rate).
var limitHeaders = []string{"X-Ratelimit-Limit-Requests", "100", "X-Ratelimit-Remaining-Requests", "99", "X-Ratelimit-Reset-Requests", "1s"}

// TestStreamRateLimitAfterFirstToken: a rate-limit error event after a
// stream's first token (OpenAI's rate_limit_exceeded with its "try again
// in 20s", Anthropic's rate_limit_error without a hint) ends the caller's
// stream with a *StreamError of status 429, and paces the partition as a
// 429 would: it cools down for the event's hint, or the default second,
// an EventCooldown says so, the snapshot shows it, and the next request
// waits for it. The breaker does not count it (ConsecutiveFailures 1
// stays closed). An insufficient_quota event, a quota refused, not a
// pause, makes no cooldown.
func TestStreamRateLimitAfterFirstToken(t *testing.T) {
	rows := []struct {
		name  string
		frame string
		pause time.Duration // 0: none
	}{
		{"openai-rate-limit", `data: {"error":{"message":"Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.","type":"requests","code":"rate_limit_exceeded"}}` + "\n\n", 20 * time.Second},
		{"anthropic-rate-limit", "event: error\n" + `data: {"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}` + "\n\n", time.Second},
		{"openai-insufficient-quota", `data: {"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}` + "\n\n", 0},
	}
	providerForms(t, func(t *testing.T, client clientFunc) {
		for _, row := range rows {
			t.Run(row.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					fake := steadytest.NewFakeT(t, streamFailingAfter(row.frame), steadytest.ChatCompletion("Hi").WithHeader(limitHeaders...))
					var log eventLog
					c, tr := client(steady.Config{OnEvent: log.add, Breaker: steady.BreakerConfig{ConsecutiveFailures: 1}}, fake)
					text, err := streamChat(t.Context(), c)
					errAt := time.Now()
					var se *steady.StreamError
					if !errors.As(err, &se) || se.Status != http.StatusTooManyRequests || text != "Hello from" {
						t.Fatalf("stream: %q, %v (%T); want \"Hello from\" and a *steady.StreamError of 429", text, err, err)
					}
					var cools []steady.Event
					for _, ev := range log.of(steady.EventCooldown) {
						if ev.Reason == "rate limited: stream error event" {
							cools = append(cools, ev)
						}
					}
					var snapUntil time.Time
					for _, ps := range tr.Snapshot() {
						snapUntil = ps.CooldownUntil
					}
					if _, err := c.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
						Model:    "gpt-4o-mini",
						Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
					}); err != nil {
						t.Fatalf("the next call: %v", err)
					}
					reqs := fake.Requests()
					sentAfter := reqs[len(reqs)-1].Time.Sub(errAt)
					t.Logf("%s: cooldown events %d, snapshot's cooldown %v after the error, the next request sent %v after it; breaker %v",
						row.name, len(cools), snapUntil.Sub(errAt), sentAfter, tr.BreakerState(testUpstream))
					if s := tr.BreakerState(testUpstream); s != steady.BreakerClosed {
						t.Errorf("breaker %v after a rate limit in a stream, want closed: a 429 is not a server failure", s)
					}
					if row.pause == 0 {
						if len(cools) != 0 || !snapUntil.IsZero() || sentAfter != 0 {
							t.Errorf("a quota refused made a pause: %d events, snapshot until %v, next sent %v after", len(cools), snapUntil, sentAfter)
						}
						return
					}
					want := errAt.Add(row.pause)
					if len(cools) != 1 || !cools[0].Until.Equal(want) || cools[0].Status != http.StatusTooManyRequests {
						t.Errorf("cooldown events %+v, want one until %v (the error and %v)", cools, want, row.pause)
					}
					if !snapUntil.Equal(want) {
						t.Errorf("snapshot's cooldown until %v, want %v", snapUntil, want)
					}
					if sentAfter < row.pause || sentAfter > row.pause+10*time.Millisecond {
						t.Errorf("the next request was sent %v after the error, want %v", sentAfter, row.pause)
					}
				})
			})
		}
	})
}
