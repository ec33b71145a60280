package steady_test

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// providerForms runs f for both ways of plugging steady into the SDK, in
// front of a simulated provider, as subtests named after the forms.
func providerForms(t *testing.T, f func(t *testing.T, client clientFunc)) {
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) { f(t, clientForms[form]) })
	}
}

// clientFunc makes an SDK client with a Transport of cfg in front of prov;
// opts come after the form's own options and override them.
type clientFunc func(cfg steady.Config, prov http.RoundTripper, opts ...option.RequestOption) (openai.Client, *steady.Transport)

// clientForms are the two ways of plugging steady into the SDK, by name:
// as its middleware, the SDK's retry defaults left on; and as its HTTP
// client's transport, the SDK's retries off, as the README says for this
// form (left on, they would retry steady's errors, a refused call, after a
// jittered wait drawn from math/rand's global source: SeedRandom seeds it,
// but calls refused at one instant draw in the scheduler's order).
var clientForms = map[string]clientFunc{
	"middleware": func(cfg steady.Config, prov http.RoundTripper, opts ...option.RequestOption) (openai.Client, *steady.Transport) {
		tr := steady.New(cfg)
		return viaMiddleware(tr, prov, opts...), tr
	},
	"roundtripper": func(cfg steady.Config, prov http.RoundTripper, opts ...option.RequestOption) (openai.Client, *steady.Transport) {
		cfg.Base = prov
		tr := steady.New(cfg)
		return viaRoundTripper(tr, append([]option.RequestOption{option.WithMaxRetries(0)}, opts...)...), tr
	},
}

// TestUsageSettlesThroughSDK: through the real SDK, in both forms, each
// API's usage, plain or streamed, is read as the caller reads the body,
// and the request's reservation is settled with it: the configured tokens
// window holds what was used, not max_tokens.
func TestUsageSettlesThroughSDK(t *testing.T) {
	calls := []struct {
		name string
		call func(ctx context.Context, c openai.Client) error
		// output is what the completion generates, input its prompt.
		output, input int64
	}{
		{"chat", func(ctx context.Context, c openai.Client) error {
			_, err := c.Chat.Completions.New(ctx, usageChat())
			return err
		}, 300, 2},
		{"chat stream", func(ctx context.Context, c openai.Client) error {
			p := usageChat()
			p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			s := c.Chat.Completions.NewStreaming(ctx, p)
			for s.Next() {
			}
			s.Close()
			return s.Err()
		}, 300, 2},
		{"responses", func(ctx context.Context, c openai.Client) error {
			_, err := c.Responses.New(ctx, usageResponses())
			return err
		}, 300, 2},
		{"responses stream", func(ctx context.Context, c openai.Client) error {
			s := c.Responses.NewStreaming(ctx, usageResponses())
			for s.Next() {
			}
			s.Close()
			return s.Err()
		}, 300, 2},
		{"embeddings", func(ctx context.Context, c openai.Client) error {
			_, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
				Model: "text-embedding-3-small",
				Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("a sentence of about forty bytes to embed.")},
			})
			return err
		}, 0, 11},
	}
	providerForms(t, func(t *testing.T, client clientFunc) {
		for _, tc := range calls {
			t.Run(tc.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					prov := steadytest.NewProvider(steadytest.ProviderConfig{
						TokensPerWindow: 40000, CountUsage: true, OutputTokens: [2]int{300, 300}, Dialect: steadytest.DialectNone,
					})
					var log eventLog
					c, tr := client(steady.Config{OnEvent: log.add, Pacing: steady.PacingConfig{
						TokensPerMinute: 40000, TokensByUsage: true, Headroom: -1,
					}}, prov)
					if err := tc.call(t.Context(), c); err != nil {
						t.Fatal(err)
					}
					us := log.of(steady.EventUsage)
					if len(us) != 1 {
						t.Fatalf("%d usage events, want 1", len(us))
					}
					if us[0].Used.Output != tc.output || us[0].Used.Input != tc.input {
						t.Errorf("used %+v, want input %d, output %d", us[0].Used, tc.input, tc.output)
					}
					// The configured window holds what was used, not the
					// 4,000 of max_tokens.
					snap := tr.Snapshot()
					if len(snap) != 1 || len(snap[0].Windows) != 1 {
						t.Fatalf("snapshot %+v, want one partition with one window", snap)
					}
					if got, want := snap[0].Windows[0].Tokens, float64(40000-tc.input-tc.output); got != want {
						t.Errorf("tokens left %v, want %v", got, want)
					}
				})
			})
		}
	})
}

func usageChat() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:               "gpt-4o-mini",
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
		MaxCompletionTokens: openai.Int(4000),
	}
}

func usageResponses() responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model:           "gpt-4o-mini",
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hi")},
		MaxOutputTokens: openai.Int(4000),
	}
}
