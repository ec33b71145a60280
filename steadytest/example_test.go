package steadytest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// A 429 then a 200, through the real SDK client. The SDK retries the 429
// after the 1 ms the response asks for: this is the SDK's retry, not
// steady's (see [Record] for asserting what steady did).
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
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(resp.Choices[0].Message.Content)
	for _, r := range fake.Requests() {
		fmt.Println(r.Method, r.URL.Path, "retry", r.Header.Get("X-Stainless-Retry-Count"))
	}
	// Output:
	// Hello!
	// POST /v1/chat/completions retry 0
	// POST /v1/chat/completions retry 1
}

// What steady did, not only what reached the server. The fake sees two
// requests, a 429 and then a 200, with or without steady: the SDK retries a
// 429 by itself. The recorder's retry holds only when steady is in the
// client: take its middleware out and the last line is missing.
func ExampleRecord() {
	fake := steadytest.NewFake(
		steadytest.RateLimited(time.Millisecond),
		steadytest.ChatCompletion("Hello!"),
	)
	tr := steady.New(steady.Config{})
	rec := steadytest.Record(tr)
	client := openai.NewClient(
		option.WithMiddleware(tr.Middleware), // take this line out and the example fails
		option.WithHTTPClient(&http.Client{Transport: fake}),
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("test"),
	)
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(resp.Choices[0].Message.Content)
	fmt.Println("requests at the server:", fake.Calls())
	for _, ev := range rec.Events() {
		if ev.Kind == steady.EventRetry {
			fmt.Println("steady:", ev.Kind, "after attempt", ev.Attempt, "answered", ev.Status)
		}
	}
	// Output:
	// Hello!
	// requests at the server: 2
	// steady: retry after attempt 1 answered 429
}

// Answers chosen by what the request asks for: embeddings get one answer,
// everything else the sequence.
func ExampleFake_On() {
	fake := steadytest.NewFake(steadytest.ServerError(503))
	embeddings := func(r *steadytest.Request) bool { return strings.HasSuffix(r.URL.Path, "/embeddings") }
	fake.On(embeddings, steadytest.JSON(200, `{"object":"list","data":[]}`))

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

// A provider allowing 60 requests a minute, called 70 times in a row
// through the SDK: 60 are served, 10 refused with a 429 that says how long
// to wait.
func ExampleProvider() {
	p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 60})
	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: p}),
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("test"),
		option.WithMaxRetries(0),
	)
	var last *openai.Error
	for range 70 {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    openai.ChatModelGPT5_4Mini,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
		})
		var apiErr *openai.Error
		if errors.As(err, &apiErr) {
			last = apiErr
		}
	}
	s := p.Stats()
	fmt.Println("accepted:", s.Accepted, "rate limited:", s.RateLimited)
	fmt.Println("most in any minute:", s.MaxRequestsInWindow)
	fmt.Println(last.StatusCode, last.Code, "retry after", last.Response.Header.Get("Retry-After"), "s")
	// Output:
	// accepted: 60 rate limited: 10
	// most in any minute: 60
	// 429 rate_limit_exceeded retry after 60 s
}

// A provider behind a real HTTP server, speaking Heroku's headers.
func ExampleProvider_ServeHTTP() {
	p := steadytest.NewProvider(steadytest.ProviderConfig{
		RequestsPerWindow: 150,
		TokensPerWindow:   800000,
		Dialect:           steadytest.DialectHerokuDocs,
	})
	srv := httptest.NewServer(p)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/v1/models")
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining-Requests"), resp.Header.Get("X-RateLimit-Remaining-Tokens"))
	// Output:
	// 200 149 800000
}
