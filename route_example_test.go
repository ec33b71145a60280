package steady_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// Two OpenAI keys share the load, an Azure deployment takes what they
// cannot serve in time, and a request is sent to whichever can send it
// soonest. The fake here plays all three and says, for each attempt,
// where it went, with which credential header and model.
func ExampleUpstream() {
	ok := steadytest.ChatCompletion("ok")
	fake := &steadytest.Fake{Fallback: &ok}
	t := steady.New(steady.Config{
		Base: fake, // omit in a program
		Upstreams: []steady.Upstream{
			{Name: "openai-a", BaseURL: "https://api.openai.com/v1", Key: "sk-a..."},
			{Name: "openai-b", BaseURL: "https://api.openai.com/v1", Key: "sk-b..."},
			{
				Name:      "azure-east",
				BaseURL:   "https://east.openai.azure.com/openai/v1",
				Key:       "azure-key...",
				KeyHeader: "api-key",
				Models:    map[string]string{"gpt-4o-mini": "mini-deployment"},
				Tier:      1, // overflow: when the keys above cannot serve in time
			},
		},
	})
	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: t}),
		option.WithAPIKey("unused"), // each upstream's Key is sent instead
	)
	for range 3 {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
		})
		if err != nil {
			fmt.Println(err)
		}
	}
	for _, r := range fake.Requests() {
		fmt.Println(r.URL, r.Header.Get("Authorization"))
	}
	// Output:
	// https://api.openai.com/v1/chat/completions Bearer sk-a...
	// https://api.openai.com/v1/chat/completions Bearer sk-b...
	// https://api.openai.com/v1/chat/completions Bearer sk-a...
}
