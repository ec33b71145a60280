package steadytest_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestInteractiveNotDelayedByBatch is the test a user writes for their own
// service: a simulated provider, their batch path saturating it, their
// interactive path beside it, and a Recorder whose pacing events, filtered
// by priority, show that the interactive calls were not held behind the
// batch. Without the priorities (today's single queue) the same assertion
// fails, which shows the test can tell.
func TestInteractiveNotDelayedByBatch(t *testing.T) {
	for _, prio := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 60, Window: time.Minute})
			tr := steady.New(steady.Config{Base: prov})
			rec := steadytest.Record(tr)
			client := openai.NewClient(option.WithHTTPClient(&http.Client{Transport: tr}),
				option.WithBaseURL("https://api.example.test/v1"), option.WithAPIKey("sk-test"))
			call := func(ctx context.Context) {
				client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
					Model:    "gpt-4o-mini",
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
				})
			}
			batch, interactive := context.Background(), context.Background()
			if prio {
				batch = steady.WithPriority(batch, steady.PriorityBatch)
				interactive = steady.WithPriority(interactive, steady.PriorityInteractive)
			}
			// The batch path: 200 calls at once, four windows' worth.
			var wg sync.WaitGroup
			for range 200 {
				wg.Go(func() { call(batch) })
			}
			// The interactive path: one call every 20 s meanwhile.
			var slowest time.Duration
			for range 6 {
				time.Sleep(20 * time.Second)
				began := time.Now()
				call(interactive)
				slowest = max(slowest, time.Since(began))
			}
			wg.Wait()
			if !prio {
				// Today's single queue: the interactive path waits behind
				// the batch. The test can tell.
				if slowest <= time.Second {
					t.Errorf("without priorities the slowest interactive call took %v: the test cannot tell", slowest)
				}
				return
			}
			var worst time.Duration
			for _, ev := range rec.Events() {
				if ev.Kind == steady.EventPace && ev.Priority == steady.PriorityInteractive {
					worst = max(worst, ev.Wait)
				}
			}
			if worst > time.Second || slowest > time.Second {
				t.Errorf("an interactive call waited %v behind the batch (took %v), want <= 1 s", worst, slowest)
			}
		})
	}
}
