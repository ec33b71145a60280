package steady_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// The examples talk to an in-memory fake provider; in a program, leave
// Config.Base nil (or the SDK's HTTP client alone) to reach the real API.

func ExampleNew() {
	// A zero Config gives production defaults: 4 retries with jittered
	// backoff, server retry hints up to 2 minutes, a retry budget, and a
	// circuit breaker per upstream.
	t := steady.New(steady.Config{})
	client := openai.NewClient(option.WithMiddleware(t.Middleware))
	_ = client // client.Chat.Completions.New(ctx, params) now goes through steady

	// Nothing has been sent yet: every upstream's circuit is closed and
	// no pacing partition exists.
	fmt.Println(t.BreakerState("https://api.openai.com"), len(t.Snapshot()))
	// Output:
	// closed 0
}

func ExampleTransport_Middleware() {
	fake := steadytest.NewFake(
		steadytest.RateLimited(0), // a 429 asking to retry at once
		steadytest.ChatCompletion("Hello!"),
	)
	t := steady.New(steady.Config{})
	client := openai.NewClient(
		option.WithMiddleware(t.Middleware),
		option.WithHTTPClient(&http.Client{Transport: fake}), // omit in a program
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("sk-..."),
	)
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Choices[0].Message.Content)
	fmt.Println(fake.Calls(), "attempts")
	// Output:
	// Hello!
	// 2 attempts
}

func ExampleTransport_RoundTrip() {
	fake := steadytest.NewFake(
		steadytest.ServerError(503).WithHeader("Retry-After-Ms", "0"),
		steadytest.ChatCompletion("Hello!"),
	)
	t := steady.New(steady.Config{Base: fake}) // Base nil in a program
	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: t}),
		// steady retries; the SDK would retry transport errors again.
		option.WithMaxRetries(0),
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("sk-..."),
	)
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Choices[0].Message.Content)
	// Output:
	// Hello!
}

func ExampleConfig_onEvent() {
	fake := steadytest.NewFake(
		steadytest.RateLimited(0).WithHeader("X-Request-Id", "req_123"),
		steadytest.InsufficientQuota().WithHeader("X-Request-Id", "req_456"),
	)
	t := steady.New(steady.Config{
		OnEvent: func(ev steady.Event) {
			switch ev.Kind {
			case steady.EventRetry, steady.EventGiveUp:
				fmt.Printf("%s: status %d, request %s, attempt %d, wait %v\n", ev.Kind, ev.Status, ev.RequestID, ev.Attempt, ev.Wait)
			case steady.EventBreakerState:
				fmt.Printf("breaker %s: %s -> %s\n", ev.Upstream, ev.From, ev.To)
			}
		},
	})
	client := openai.NewClient(
		option.WithMiddleware(t.Middleware),
		option.WithHTTPClient(&http.Client{Transport: fake}),
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("sk-..."),
	)
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.Code)
	}
	// Output:
	// retry: status 429, request req_123, attempt 1, wait 0s
	// give-up: status 429, request req_456, attempt 2, wait 0s
	// 429 insufficient_quota
}

func ExampleErrCircuitOpen() {
	fail := steadytest.ServerError(503)
	fake := &steadytest.Fake{Fallback: &fail}
	t := steady.New(steady.Config{
		Retry:   steady.RetryConfig{MaxRetries: -1},
		Breaker: steady.BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: time.Minute},
	})
	client := openai.NewClient(
		option.WithMiddleware(t.Middleware),
		option.WithHTTPClient(&http.Client{Transport: fake}),
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("sk-..."),
	)
	for range 4 {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    openai.ChatModelGPT5_4Mini,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
		})
		fmt.Println(errors.Is(err, steady.ErrCircuitOpen), fake.Calls())
	}
	fmt.Println(t.BreakerState("https://api.example.test"))
	// Output:
	// false 1
	// false 2
	// true 2
	// true 2
	// open
}

// With Hold, a request that meets an open circuit waits for the upstream
// to recover instead of failing, as long as its deadline lies beyond the
// next probe; only probes reach the upstream meanwhile. A request whose
// deadline comes first fails at once, without waiting it out.
func ExampleBreakerConfig_hold() {
	fail := steadytest.ServerError(503)
	fake := &steadytest.Fake{Fallback: &fail}
	t := steady.New(steady.Config{
		Retry:   steady.RetryConfig{MaxRetries: -1},
		Breaker: steady.BreakerConfig{Hold: true, ConsecutiveFailures: 2},
	})
	client := openai.NewClient(
		option.WithMiddleware(t.Middleware),
		option.WithHTTPClient(&http.Client{Transport: fake}),
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("sk-..."),
	)
	params := openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	}
	for range 2 {
		client.Chat.Completions.New(context.Background(), params)
	}
	fmt.Println(t.BreakerState("https://api.example.test"), fake.Calls())

	// The first probe goes about a second after the circuit opened: a
	// 10ms deadline cannot wait for it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := client.Chat.Completions.New(ctx, params)
	fmt.Println(errors.Is(err, steady.ErrCircuitOpen), fake.Calls())
	// Output:
	// open 2
	// true 2
}

// Interactive calls and a batch share one key: marked with WithPriority,
// the interactive call goes first whenever the partition is saturated,
// and the batch keeps a share of each window free for it. Events carry
// the priority.
func ExampleWithPriority() {
	fake := steadytest.NewFake(steadytest.ChatCompletion("Hi"))
	t := steady.New(steady.Config{
		Base: fake,
		OnEvent: func(ev steady.Event) {
			if ev.Kind == steady.EventAttempt {
				fmt.Println(ev.Kind, ev.Priority, ev.Status)
			}
		},
	})
	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: t}),
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("sk-..."),
	)
	ctx := steady.WithPriority(context.Background(), steady.PriorityInteractive)
	// A batch job would use steady.WithPriority(ctx, steady.PriorityBatch),
	// and a multi-tenant service steady.WithTenant(ctx, tenantID).
	_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	fmt.Println(err)
	// Output:
	// attempt interactive 200
	// <nil>
}
