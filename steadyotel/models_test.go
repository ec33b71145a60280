package steadyotel_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestModelsPastTheCap sends, through the real SDK in both forms, one
// call for each of more models than steadyotel tells apart, each answered
// with a 429 and then a 200: every point of the attempt histogram and of
// the 429, retry, cooldown and pacing-wait series carries gen_ai.request.model, the
// first models by name and every later one as _OTHER, never empty or
// missing.
func TestModelsPastTheCap(t *testing.T) {
	const models = 80 // over steadyotel's cap of 64
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := steadytest.NewFakeT(t)
				for range models {
					fake.Add(limits(steadytest.RateLimited(time.Second), "0", time.Second), limits(steadytest.ChatCompletion("hi"), "99", time.Minute))
				}
				cfg := steady.Config{}
				if form == "roundtripper" {
					cfg.Base = fake
				}
				h := newHarness(t, cfg)
				c := h.client(form, fake)
				for i := range models {
					_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
						Model:    fmt.Sprintf("model-%02d", i),
						Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
					})
					if err != nil {
						t.Fatalf("call %d: %v", i, err)
					}
				}
				rm := h.collect(t)
				for _, name := range []string{"http.client.request.duration", "steady.rate_limited", "steady.retries", "steady.pacing.cooldowns"} {
					seen := map[string]bool{}
					for _, set := range pointSets(t, find(t, rm, name)) {
						v, ok := set.Value("gen_ai.request.model")
						if !ok || v.AsString() == "" {
							t.Errorf("%s: a point without gen_ai.request.model: %v", name, set.Encoded(attribute.DefaultEncoder()))
							continue
						}
						seen[v.AsString()] = true
					}
					if !seen["_OTHER"] || !seen["model-00"] || len(seen) > 65 {
						t.Errorf("%s: %d models (model-00 %v, _OTHER %v), want at most 64 by name and _OTHER", name, len(seen), seen["model-00"], seen["_OTHER"])
					}
				}
			})
		})
	}
}

// pointSets returns the attribute sets of a metric's points.
func pointSets(t *testing.T, m metricdata.Metrics) []attribute.Set {
	t.Helper()
	var sets []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			sets = append(sets, p.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			sets = append(sets, p.Attributes)
		}
	default:
		t.Fatalf("%s: %T", m.Name, m.Data)
	}
	return sets
}
