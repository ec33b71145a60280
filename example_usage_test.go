package steady_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// A provider that counts tokens by what responses used: the request
// reserves its max_tokens until outputs are learned, and is settled with
// its usage as the SDK reads the body.
func ExamplePacingConfig_tokensByUsage() {
	prov := steadytest.NewProvider(steadytest.ProviderConfig{
		TokensPerWindow: 40000, CountUsage: true, OutputTokens: [2]int{300, 300},
		Dialect: steadytest.DialectNone, ChunkDelay: -1,
	})
	tr := steady.New(steady.Config{Pacing: steady.PacingConfig{
		TokensPerMinute: 40000, TokensByUsage: true, Headroom: -1,
	}})
	client := openai.NewClient(
		option.WithMiddleware(tr.Middleware),
		option.WithHTTPClient(&http.Client{Transport: prov}),
		option.WithBaseURL("https://llm.example.test/v1/"),
		option.WithAPIKey("sk-example"),
	)
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:               "gpt-4o-mini",
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
		MaxCompletionTokens: openai.Int(4000),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	p := tr.Snapshot()[0]
	fmt.Printf("tokens left this minute: %.0f of 40000\n", p.Windows[0].Tokens)
	fmt.Printf("reserved less used: %.0f tokens\n", p.EstimateError)
	// Output:
	// tokens left this minute: 39698 of 40000
	// reserved less used: 3700 tokens
}

// An error event after a stream's first token ends the stream with a
// *steady.StreamError; ClassifyError reads it as the status it stands for.
func ExampleStreamError() {
	prov := steadytest.NewProvider(steadytest.ProviderConfig{
		ChunkDelay: -1,
		Faults:     steadytest.Faults{StreamErrorRatio: 1, StreamErrorAfter: 2},
	})
	tr := steady.New(steady.Config{})
	client := openai.NewClient(
		option.WithMiddleware(tr.Middleware),
		option.WithHTTPClient(&http.Client{Transport: prov}),
		option.WithBaseURL("https://llm.example.test/v1/"),
		option.WithAPIKey("sk-example"),
	)
	s := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
	})
	text := ""
	for s.Next() {
		for _, c := range s.Current().Choices {
			text += c.Delta.Content
		}
	}
	s.Close()
	var se *steady.StreamError
	if errors.As(s.Err(), &se) {
		f := steady.ClassifyError(s.Err())
		fmt.Printf("read %q, then %d %s; retryable: %v\n", text, se.Status, se.Type, f.Retryable)
	}
	// Output:
	// read "Hello", then 529 overloaded_error; retryable: true
}
