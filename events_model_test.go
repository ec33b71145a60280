package steady_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestEventsCarryTheModel: every event about a request names the model
// its body asks for, as its pacing partition holds it, so that an
// observer never reads the Transport's snapshot to learn it: the 429's
// cooldown and retry, the pacing wait and every attempt, through the real
// SDK in both forms.
func TestEventsCarryTheModel(t *testing.T) {
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := steadytest.NewFakeT(t, steadytest.RateLimited(time.Second), steadytest.ChatCompletion("ok"))
				var c openai.Client
				var tr *steady.Transport
				if form == "middleware" {
					tr = steady.New(steady.Config{})
					c = viaMiddleware(tr, fake)
				} else {
					tr = steady.New(steady.Config{Base: fake})
					c = viaRoundTripper(tr)
				}
				rec := steadytest.Record(tr)
				if _, err := c.Chat.Completions.New(t.Context(), chatParams()); err != nil {
					t.Fatal(err)
				}
				kinds := map[steady.EventKind]int{}
				for _, e := range rec.Events() {
					kinds[e.Kind]++
					if e.Model != chatParams().Model {
						t.Errorf("%v event: Model %q, want %q", e.Kind, e.Model, chatParams().Model)
					}
				}
				for _, k := range []steady.EventKind{steady.EventAttempt, steady.EventRetry, steady.EventCooldown} {
					if kinds[k] == 0 {
						t.Errorf("no %v event among %v", k, kinds)
					}
				}
			})
		})
	}
}
