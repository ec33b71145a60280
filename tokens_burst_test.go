package steady_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestTokensBurst: a burst of calls bound by tokens per minute, launched
// at once without deadlines, through the real SDK in both forms, draws at
// most one 429 (issue 20), whatever the window's kind and the dialect.
func TestTokensBurst(t *testing.T) {
	for _, w := range []time.Duration{10 * time.Second, time.Minute} {
		for _, a := range []steadytest.Algorithm{steadytest.FixedWindow, steadytest.SlidingWindow, steadytest.TokenBucket} {
			for _, d := range []steadytest.Dialect{steadytest.DialectOpenAI, steadytest.DialectAnthropic, steadytest.DialectIETF, steadytest.DialectHerokuSeed} {
				t.Run(fmt.Sprintf("%v/%s/%s", w, a, d), func(t *testing.T) {
					providerForms(t, func(t *testing.T, client clientFunc) {
						synctest.Test(t, func(t *testing.T) {
							// Launched in order, the calls' attempts reach the
							// provider in the order of their calls (inOrder):
							// the row gives the same result on every run.
							prov := inOrder{steadytest.NewProvider(steadytest.ProviderConfig{
								RequestsPerWindow: 1000, TokensPerWindow: 10000, Window: w, Algorithm: a, Dialect: d, Latency: 50 * time.Millisecond,
							})}
							c, _ := client(steady.Config{}, prov)
							time.Sleep(w * 37 / 100)
							start := time.Now()
							var failed atomic.Int64
							const calls = 60 // about three windows' worth
							launch(callBurst, calls, func(i int) {
								_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
									Model:               "gpt-4o-mini",
									Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi" + strings.Repeat(" and more", i%5*40))},
									MaxCompletionTokens: openai.Int(500),
								}, callNumber(i))
								if err != nil {
									failed.Add(1)
								}
							})
							st := prov.Stats()
							t.Logf("%d calls in %v; %d attempts, %d 429s; most tokens in a window-long span %d", calls, time.Since(start), st.Requests, st.RateLimited, st.MaxTokensInWindow)
							if failed.Load() != 0 || st.RateLimited > 1 {
								t.Errorf("%d failed, %d 429s; want none failed, at most one 429", failed.Load(), st.RateLimited)
							}
						})
					})
				})
			}
		}
	}
}
