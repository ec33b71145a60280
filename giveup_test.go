package steady_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"testing/synctest"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// sdkThroughSteady sends one chat request through steady, in the given
// form, to a fake answering with rs (the last repeated).
func sdkThroughSteady(t *testing.T, form clientFunc, cfg steady.Config, rs ...steadytest.Response) error {
	t.Helper()
	fake := steadytest.NewFake()
	for range 20 {
		fake.Add(rs...)
	}
	c, _ := form(cfg, fake)
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	if err == nil {
		t.Fatal("no error")
	}
	return err
}

// TestClassifyThroughSteady checks that a failure steady gave up on keeps
// the provider's verdict in Retryable and steady's in GaveUp, in both forms.
func TestClassifyThroughSteady(t *testing.T) {
	cfg := steady.Config{Retry: steady.RetryConfig{MaxRetries: 2}}
	for _, tc := range []struct {
		name      string
		rs        []steadytest.Response
		retryable bool
		reason    string
		gaveUp    string
	}{
		{"503 retries exhausted", []steadytest.Response{steadytest.ServerError(503)}, true, "503 service unavailable", "retries exhausted"},
		{"429 retries exhausted", []steadytest.Response{steadytest.RateLimited(0)}, true, "429 rate limit", "retries exhausted"},
		{"provider says no", []steadytest.Response{steadytest.ServerError(503).WithHeader("X-Should-Retry", "false")}, false, "x-should-retry: false", "x-should-retry: false"},
		{"insufficient quota", []steadytest.Response{steadytest.InsufficientQuota()}, false, "insufficient quota", "insufficient quota"},
		{"connection reset", []steadytest.Response{steadytest.ConnReset()}, true, "connection failure: reset", "retries exhausted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			providerForms(t, func(t *testing.T, client clientFunc) {
				synctest.Test(t, func(t *testing.T) {
					err := sdkThroughSteady(t, client, cfg, tc.rs...)
					f := steady.ClassifyError(err)
					if f.Retryable != tc.retryable || f.Reason != tc.reason || f.GaveUp != tc.gaveUp {
						t.Errorf("%v\n got Retryable=%v Reason=%q GaveUp=%q\nwant Retryable=%v Reason=%q GaveUp=%q",
							err, f.Retryable, f.Reason, f.GaveUp, tc.retryable, tc.reason, tc.gaveUp)
					}
				})
			})
		})
	}
}

// TestClassifyCircuitOpen checks that a call failed by an open circuit is
// Retryable (later) and GaveUp, in both forms, so that code re-queueing
// work re-queues it.
func TestClassifyCircuitOpen(t *testing.T) {
	providerForms(t, func(t *testing.T, client clientFunc) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFake(steadytest.ServerError(503))
			cfg := steady.Config{Retry: steady.RetryConfig{MaxRetries: -1}, Breaker: steady.BreakerConfig{ConsecutiveFailures: 1}}
			c, _ := client(cfg, fake)
			var err error
			for range 2 {
				_, err = c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
					Model:    openai.ChatModelGPT5_4Mini,
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
				})
			}
			f := steady.ClassifyError(err)
			if !errors.Is(err, steady.ErrCircuitOpen) || !f.Retryable || f.GaveUp != "circuit open" || f.Reason != "circuit open" {
				t.Errorf("%v: Retryable=%v Reason=%q GaveUp=%q, want a retryable circuit open steady gave up on", err, f.Retryable, f.Reason, f.GaveUp)
			}
			if n := fake.Calls(); n != 1 {
				t.Errorf("%d requests sent, want 1: the circuit was open for the second", n)
			}
		})
	})
}

func TestClassifyGiveUpHeader(t *testing.T) {
	h := http.Header{"X-Should-Retry": {"false"}, "X-Steady-Give-Up": {"retries exhausted"}}
	if f := steady.ClassifyBody(503, h, nil); !f.Retryable || f.GaveUp != "retries exhausted" || f.Reason != "503 service unavailable" {
		t.Errorf("%+v", f)
	}
	// Without steady's header, x-should-retry is the provider's.
	if f := steady.ClassifyBody(503, http.Header{"X-Should-Retry": {"false"}}, nil); f.Retryable || f.GaveUp != "" {
		t.Errorf("%+v", f)
	}
	h = http.Header{"X-Steady-Give-Up": {"bad\r\nvalue " + string(make([]byte, 300))}}
	if f := steady.ClassifyBody(500, h, nil); len(f.GaveUp) > 128 || f.GaveUp == "" {
		t.Errorf("%q", f.GaveUp)
	}
	if f := steady.ClassifyError(errors.New("x")); f.GaveUp != "" {
		t.Errorf("%+v", f)
	}
}

// Code that re-queues work drops what is not worth retrying at the
// provider, and re-queues the rest for later: steady has already retried
// it as long as its configuration allowed, or its circuit is open.
func ExampleClassifyError_requeue() {
	fake := steadytest.NewFake(steadytest.ServerError(503)) // an outage
	t := steady.New(steady.Config{
		Retry:   steady.RetryConfig{MaxRetries: -1},
		Breaker: steady.BreakerConfig{ConsecutiveFailures: 1},
	})
	client := openai.NewClient(
		option.WithMiddleware(t.Middleware),
		option.WithHTTPClient(&http.Client{Transport: fake}), // omit in a program
		option.WithBaseURL("https://api.example.test/v1"),
		option.WithAPIKey("sk-..."),
	)
	for range 2 { // the first call's 503 opens the circuit: the second is not sent
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    openai.ChatModelGPT5_4Mini,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
		})
		f := steady.ClassifyError(err)
		switch {
		case !f.Retryable:
			fmt.Println("drop:", f.Reason)
		case f.GaveUp != "":
			fmt.Println("re-queue for later:", f.Reason+";", "steady gave up:", f.GaveUp)
		default:
			fmt.Println("retry now:", f.Reason)
		}
	}
	// Output:
	// re-queue for later: 503 service unavailable; steady gave up: retries exhausted
	// re-queue for later: circuit open; steady gave up: circuit open
}
