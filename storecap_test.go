package steady_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/openai/openai-go/v3"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/steadytest"
	"github.com/steady-go/steady/store"
)

// TestStoreCostBounded: a request asking for an absurd max_tokens counts,
// in the fleet's budget, no more than its tokens window can ever hold (it
// is sent alone, taking the whole window), where it counted 2^31 tokens
// and pushed the fleet's schedule a week ahead; through the SDK, both
// forms.
func TestStoreCostBounded(t *testing.T) {
	for _, form := range []string{"roundtripper", "middleware"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := &scriptStore{}
				tokens := func() steadytest.Response {
					return steadytest.ChatCompletion("Hi").WithHeader(
						"X-Ratelimit-Limit-Requests", "60", "X-Ratelimit-Remaining-Requests", "59", "X-Ratelimit-Reset-Requests", "1s",
						"X-Ratelimit-Limit-Tokens", "10000", "X-Ratelimit-Remaining-Tokens", "9000", "X-Ratelimit-Reset-Tokens", "6s")
				}
				fake := steadytest.NewFakeT(t, tokens(), tokens())
				c := storeClient(steady.Config{Pacing: steady.PacingConfig{Store: fs}}, fake, form)
				if err := sdkChat(context.Background(), c); err != nil {
					t.Fatal(err)
				}
				_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
					Model:     "m",
					Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
					MaxTokens: openai.Int(2147483647),
				})
				if err != nil {
					t.Fatal(err)
				}
				rs, _ := fs.calls()
				if len(rs) != 2 {
					t.Fatalf("%d reservations, want 2", len(rs))
				}
				var tok *store.Window
				for i, w := range rs[1].Windows {
					if u, _, _ := store.ParseWindowID(w.ID); u == ratelimit.UnitTokens {
						tok = &rs[1].Windows[i]
					}
				}
				if tok == nil {
					t.Fatalf("windows %+v, want a tokens window", rs[1].Windows)
				}
				if tok.Cost > 10000 || tok.Cost < 9000 {
					t.Errorf("the absurd request counts %d tokens in a window of 10,000, want the window's worth (at most 10,000)", tok.Cost)
				}
				// A negative burst marks a window counted in epochs of -Burst.
				if max(tok.Burst, -tok.Burst) < tok.Cost {
					t.Errorf("burst %d below the cost %d: the request could never go", tok.Burst, tok.Cost)
				}
			})
		})
	}
}
