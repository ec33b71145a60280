package steadytest_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady/steadytest"
)

// A 429 then a 200, through the real SDK client. The SDK retries the 429
// after the 1 ms the response asks for.
func ExampleFake() {
	fake := steadytest.NewFake(
		steadytest.RateLimited(time.Millisecond),
		steadytest.ChatCompletion("Hello!"),
	)
	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: fake}),
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("test"),
		option.WithMaxRetries(1),
	)
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(resp.Choices[0].Message.Content)
	for _, r := range fake.Requests() {
		fmt.Println(r.Method, r.Path, "retry", r.Header.Get("X-Stainless-Retry-Count"))
	}
	// Output:
	// Hello!
	// POST /v1/chat/completions retry 0
	// POST /v1/chat/completions retry 1
}

// Answers chosen by what the request asks for: embeddings get one answer,
// everything else the sequence.
func ExampleFake_On() {
	fake := steadytest.NewFake(steadytest.ServerError(503))
	fake.On(steadytest.MatchPath("/embeddings"), steadytest.JSON(200, `{"object":"list","data":[]}`))

	for _, path := range []string{"/v1/embeddings", "/v1/chat/completions", "/v1/chat/completions"} {
		req, _ := http.NewRequest("POST", "https://api.example.test"+path, nil)
		resp, err := fake.RoundTrip(req)
		if err != nil {
			fmt.Println(err)
			continue
		}
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode)
	}
	// Output:
	// /v1/embeddings 200
	// /v1/chat/completions 503
	// steadytest: no scripted response for POST /v1/chat/completions (request 3)
}
