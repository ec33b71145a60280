package steadytest_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// retriedOnceAfter429 is the assertion a user writes: steady retried
// exactly once, after a 429 on the first attempt.
func retriedOnceAfter429(events []steady.Event) error {
	retries := slices.DeleteFunc(events, func(ev steady.Event) bool { return ev.Kind != steady.EventRetry })
	if len(retries) != 1 {
		return fmt.Errorf("steady retried %d times, want 1", len(retries))
	}
	if ev := retries[0]; ev.Status != http.StatusTooManyRequests || ev.Attempt != 1 {
		return fmt.Errorf("steady retried after status %d on attempt %d, want 429 on attempt 1", ev.Status, ev.Attempt)
	}
	return nil
}

func chatHi(t *testing.T, client openai.Client) {
	t.Helper()
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0].Message.Content; got != "Hello!" {
		t.Fatalf("answer %q, want Hello!", got)
	}
}

func TestRecordRetryAfter429(t *testing.T) {
	// Each form builds the transport steady would use and the client's
	// options.
	forms := map[string]func(fake *steadytest.Fake) (*steady.Transport, []option.RequestOption){
		"RoundTripper": func(fake *steadytest.Fake) (*steady.Transport, []option.RequestOption) {
			tr := steady.New(steady.Config{Base: fake})
			return tr, []option.RequestOption{option.WithHTTPClient(&http.Client{Transport: tr}), option.WithMaxRetries(0)}
		},
		"Middleware": func(fake *steadytest.Fake) (*steady.Transport, []option.RequestOption) {
			tr := steady.New(steady.Config{})
			return tr, []option.RequestOption{option.WithMiddleware(tr.Middleware), option.WithHTTPClient(&http.Client{Transport: fake})}
		},
		// The SDK alone retries the 429 too, and the server sees the same
		// two requests; only the recorder tells the difference.
		"without steady": func(fake *steadytest.Fake) (*steady.Transport, []option.RequestOption) {
			return steady.New(steady.Config{}), []option.RequestOption{option.WithHTTPClient(&http.Client{Transport: fake})}
		},
	}
	for name, form := range forms {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := steadytest.NewFakeT(t, steadytest.RateLimited(time.Second), steadytest.ChatCompletion("Hello!"))
				tr, opts := form(fake)
				rec := steadytest.Record(tr)
				opts = append(opts, option.WithBaseURL("https://api.example.test/v1"), option.WithAPIKey("k"))
				chatHi(t, openai.NewClient(opts...))

				if got := fake.Calls(); got != 2 {
					t.Fatalf("the server saw %d requests, want 2", got)
				}
				err := retriedOnceAfter429(rec.Events())
				if name == "without steady" {
					if err == nil {
						t.Fatal("the assertion passed with steady out of the client")
					}
					if n := len(rec.Events()); n != 0 {
						t.Fatalf("recorded %d events with steady out of the client", n)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				attempts := slices.DeleteFunc(rec.Events(), func(ev steady.Event) bool { return ev.Kind != steady.EventAttempt })
				if len(attempts) != 2 || attempts[0].Status != 429 || attempts[1].Status != 200 {
					t.Fatalf("attempts %+v, want a 429 then a 200", attempts)
				}
			})
		})
	}
}

// Events reported from many goroutines at once are all kept: one
// EventAttempt per request the provider saw.
func TestRecordConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 10, Window: time.Second})
		tr := steady.New(steady.Config{Base: p})
		rec := steadytest.Record(tr)
		client := openai.NewClient(option.WithHTTPClient(&http.Client{Transport: tr}), option.WithMaxRetries(0),
			option.WithBaseURL("https://api.example.test/v1"), option.WithAPIKey("k"))
		var wg sync.WaitGroup
		for range 30 {
			wg.Go(func() {
				client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
					Model:    openai.ChatModelGPT5_4Mini,
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
				})
			})
		}
		wg.Wait()
		attempts := slices.DeleteFunc(rec.Events(), func(ev steady.Event) bool { return ev.Kind != steady.EventAttempt })
		if got, want := int64(len(attempts)), p.Stats().Requests; got != want || want < 30 {
			t.Fatalf("recorded %d attempts, the provider saw %d requests (want at least 30)", got, want)
		}
	})
}

// Record works with anything that has an Observe method, and copies on
// Events.
func TestRecordEventsCopy(t *testing.T) {
	var src observable
	rec := steadytest.Record(&src)
	src.fn(1)
	src.fn(2)
	evs := rec.Events()
	evs[0] = 99
	src.fn(3)
	if got := rec.Events(); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("events %v, want [1 2 3]", got)
	}
}

type observable struct{ fn func(int) }

func (o *observable) Observe(fn func(int)) (remove func()) {
	o.fn = fn
	return func() { o.fn = nil }
}
