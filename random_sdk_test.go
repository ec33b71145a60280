package steady_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestConfigRandom: a Transport's retry waits come from Config.Random
// when it is set, through the SDK in both forms: the same seed gives the
// same waits on every run, another seed other waits.
func TestConfigRandom(t *testing.T) {
	forms(t, func(t *testing.T, client func(cfg steady.Config, fake *steadytest.Fake) openai.Client) {
		waits := func(seed uint64) []time.Duration {
			var got []time.Duration
			synctest.Test(t, func(t *testing.T) {
				var log eventLog
				fake := steadytest.NewFakeT(t,
					steadytest.ServerError(503), steadytest.ServerError(503), steadytest.ServerError(503),
					steadytest.ChatCompletion("hello"))
				c := client(steady.Config{
					Random:  rand.NewPCG(seed, 0),
					Retry:   steady.RetryConfig{MaxRetries: 3},
					Breaker: steady.BreakerConfig{Disabled: true},
					OnEvent: log.add,
				}, fake)
				if _, err := c.Chat.Completions.New(context.Background(), chatParams()); err != nil {
					t.Fatalf("call: %v", err)
				}
				for _, ev := range log.of(steady.EventRetry) {
					got = append(got, ev.Wait)
				}
			})
			if len(got) != 3 {
				t.Fatalf("seed %d: %d retries, want 3 (%v)", seed, len(got), got)
			}
			return got
		}
		a, b, c := waits(1), waits(1), waits(2)
		if !slices.Equal(a, b) {
			t.Errorf("seed 1 gave %v, then %v", a, b)
		}
		if slices.Equal(a, c) {
			t.Errorf("seeds 1 and 2 gave the same waits %v", a)
		}
	})
}
