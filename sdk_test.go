package steady_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

const (
	testBaseURL  = "https://api.example.test/v1"
	testUpstream = "https://api.example.test"
	testAPIKey   = "sk-test-5ecret-do-not-log"
)

// viaMiddleware is a client with steady as SDK middleware and the SDK's
// retry defaults left on.
func viaMiddleware(st *steady.Transport, fake http.RoundTripper, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithMiddleware(st.Middleware),
		option.WithHTTPClient(&http.Client{Transport: fake}),
		option.WithBaseURL(testBaseURL),
		option.WithAPIKey(testAPIKey),
	}, opts...)...)
}

// viaRoundTripper is a client with steady as the HTTP client's transport
// (its Base is the fake) and the SDK's retry defaults left on.
func viaRoundTripper(st *steady.Transport, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithHTTPClient(&http.Client{Transport: st}),
		option.WithBaseURL(testBaseURL),
		option.WithAPIKey(testAPIKey),
	}, opts...)...)
}

// forms runs f for both ways of plugging steady into the SDK.
func forms(t *testing.T, f func(t *testing.T, client func(cfg steady.Config, fake *steadytest.Fake) openai.Client)) {
	t.Run("middleware", func(t *testing.T) {
		f(t, func(cfg steady.Config, fake *steadytest.Fake) openai.Client {
			return viaMiddleware(steady.New(cfg), fake)
		})
	})
	t.Run("roundtripper", func(t *testing.T) {
		f(t, func(cfg steady.Config, fake *steadytest.Fake) openai.Client {
			cfg.Base = fake
			return viaRoundTripper(steady.New(cfg))
		})
	})
}

func chatParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello in five words.")},
	}
}

// events collects the events a Transport emits.
type eventLog struct {
	mu  sync.Mutex
	all []steady.Event
}

func (e *eventLog) add(ev steady.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *eventLog) of(kind steady.EventKind) []steady.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []steady.Event
	for _, ev := range e.all {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func withID(r steadytest.Response, id string) steadytest.Response {
	return r.WithHeader("X-Request-Id", id)
}

func apiError(t *testing.T, err error) *openai.Error {
	t.Helper()
	var aerr *openai.Error
	if !errors.As(err, &aerr) {
		t.Fatalf("err = %v (%T), want *openai.Error", err, err)
	}
	return aerr
}

func TestRetryThenSuccess(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFakeT(t,
				withID(steadytest.ServerError(503), "req_1"),
				withID(steadytest.RateLimited(2*time.Second), "req_2"),
				steadytest.ChatCompletion("Hello there, how are you?"),
			)
			var ev eventLog
			c := client(steady.Config{OnEvent: ev.add}, fake)
			start := time.Now()
			got, err := c.Chat.Completions.New(t.Context(), chatParams())
			if err != nil {
				t.Fatal(err)
			}
			if got.Choices[0].Message.Content != "Hello there, how are you?" {
				t.Fatalf("content = %q", got.Choices[0].Message.Content)
			}
			reqs := fake.Requests()
			if len(reqs) != 3 {
				t.Fatalf("%d upstream attempts, want 3", len(reqs))
			}
			for i, r := range reqs[1:] {
				if !bytes.Equal(r.Body, reqs[0].Body) || len(r.Body) == 0 {
					t.Fatalf("attempt %d body %q differs from the first %q", i+2, r.Body, reqs[0].Body)
				}
			}
			retries := ev.of(steady.EventRetry)
			if len(retries) != 2 {
				t.Fatalf("%d retry events, want 2: %+v", len(retries), retries)
			}
			for i, want := range []struct {
				status int
				id     string
			}{{503, "req_1"}, {429, "req_2"}} {
				r := retries[i]
				if r.Status != want.status || r.RequestID != want.id || r.Attempt != i+1 || r.Upstream != testUpstream {
					t.Fatalf("retry event %d = %+v, want status %d id %s attempt %d", i, r, want.status, want.id, i+1)
				}
			}
			if retries[1].Wait != 2*time.Second {
				t.Fatalf("wait after the 429 = %v, want its 2s hint", retries[1].Wait)
			}
			if el := time.Since(start); el != retries[0].Wait+2*time.Second {
				t.Fatalf("call took %v, want the two waits %v + 2s", el, retries[0].Wait)
			}
		})
	})
}

func TestNotRetried(t *testing.T) {
	cases := []struct {
		name   string
		resp   steadytest.Response
		status int
		code   string
	}{
		{"insufficient_quota", steadytest.InsufficientQuota(), 429, "insufficient_quota"},
		{"401", steadytest.OpenAIError(401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."), 401, "invalid_api_key"},
		{"400", steadytest.OpenAIError(400, "invalid_request_error", "", "bad"), 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
				synctest.Test(t, func(t *testing.T) {
					fake := steadytest.NewFakeT(t, tc.resp)
					var ev eventLog
					c := client(steady.Config{OnEvent: ev.add}, fake)
					start := time.Now()
					_, err := c.Chat.Completions.New(t.Context(), chatParams())
					aerr := apiError(t, err)
					if aerr.StatusCode != tc.status || aerr.Code != tc.code {
						t.Fatalf("error status %d code %q, want %d %q", aerr.StatusCode, aerr.Code, tc.status, tc.code)
					}
					if n := fake.Calls(); n != 1 {
						t.Fatalf("%d upstream attempts, want 1", n)
					}
					if el := time.Since(start); el != 0 {
						t.Fatalf("call took %v, want no wait", el)
					}
					if len(ev.of(steady.EventRetry)) != 0 || len(ev.of(steady.EventGiveUp)) != 1 {
						t.Fatalf("events %+v, want one give-up and no retry", ev.all)
					}
				})
			})
		})
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	cases := []struct {
		name string
		hdr  func(now time.Time) []string
		want time.Duration
	}{
		{"seconds", func(time.Time) []string { return []string{"Retry-After", "7"} }, 7 * time.Second},
		{"float seconds", func(time.Time) []string { return []string{"Retry-After", "1.5"} }, 1500 * time.Millisecond},
		{"retry-after-ms", func(time.Time) []string { return []string{"Retry-After-Ms", "250"} }, 250 * time.Millisecond},
		{"http-date", func(now time.Time) []string {
			return []string{"Retry-After", now.Add(9 * time.Second).UTC().Format(http.TimeFormat)}
		}, 9 * time.Second},
		{"http-date RFC 850", func(now time.Time) []string {
			return []string{"Retry-After", now.Add(4 * time.Second).UTC().Format("Monday, 02-Jan-06 15:04:05 GMT")}
		}, 4 * time.Second},
		{"http-date ANSI C", func(now time.Time) []string {
			return []string{"Retry-After", now.Add(6 * time.Second).UTC().Format(time.ANSIC)}
		}, 6 * time.Second},
		{"x-ms-retry-after-ms", func(time.Time) []string { return []string{"X-Ms-Retry-After-Ms", "1250"} }, 1250 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
				synctest.Test(t, func(t *testing.T) {
					// A whole second, so that the HTTP-date (second
					// precision) is exact.
					time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
					fake := steadytest.NewFakeT(t,
						steadytest.OpenAIError(429, "requests", "rate_limit_exceeded", "slow down").WithHeader(tc.hdr(time.Now())...),
						steadytest.ChatCompletion("ok"),
					)
					c := client(steady.Config{}, fake)
					start := time.Now()
					if _, err := c.Chat.Completions.New(t.Context(), chatParams()); err != nil {
						t.Fatal(err)
					}
					if el := time.Since(start); el != tc.want {
						t.Fatalf("call took %v, want the hinted %v", el, tc.want)
					}
					if reqs := fake.Requests(); len(reqs) != 2 || reqs[1].Time.Sub(reqs[0].Time) != tc.want {
						t.Fatalf("attempts %d, spaced %v; want 2 spaced %v", len(reqs), reqs[len(reqs)-1].Time.Sub(reqs[0].Time), tc.want)
					}
				})
			})
		})
	}
}

func TestRetryAfterAboveCapHandedBack(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFakeT(t,
				steadytest.OpenAIError(429, "requests", "rate_limit_exceeded", "Please retry after 86400 seconds.").WithHeader("Retry-After", "86400"))
			c := client(steady.Config{}, fake)
			start := time.Now()
			_, err := c.Chat.Completions.New(t.Context(), chatParams())
			if aerr := apiError(t, err); aerr.StatusCode != 429 || !strings.Contains(aerr.Message, "86400") {
				t.Fatalf("error %v, want the 429", err)
			}
			if el := time.Since(start); el != 0 || fake.Calls() != 1 {
				t.Fatalf("took %v with %d attempts, want at once with 1", el, fake.Calls())
			}
		})
	})
}

func TestDeadlineShorterThanRetryAfter(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			const msg = "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1."
			fake := steadytest.NewFakeT(t,
				steadytest.OpenAIError(429, "requests", "rate_limit_exceeded", msg).WithHeader("Retry-After", "30"))
			var ev eventLog
			c := client(steady.Config{OnEvent: ev.add}, fake)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.Chat.Completions.New(ctx, chatParams())
			if el := time.Since(start); el != 0 {
				t.Fatalf("call took %v, want an answer at once", el)
			}
			aerr := apiError(t, err)
			if aerr.StatusCode != 429 || aerr.Message != msg {
				t.Fatalf("error status %d message %q, want the 429 and its message", aerr.StatusCode, aerr.Message)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("the caller got DeadlineExceeded instead of the 429")
			}
			if fake.Calls() != 1 {
				t.Fatalf("%d attempts, want 1", fake.Calls())
			}
			if g := ev.of(steady.EventGiveUp); len(g) != 1 || g[0].Status != 429 {
				t.Fatalf("give-up events %+v", g)
			}
		})
	})
}

func TestCancelEndsWait(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFakeT(t, steadytest.RateLimited(60*time.Second))
			c := client(steady.Config{}, fake)
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(2*time.Second, cancel)
			start := time.Now()
			_, err := c.Chat.Completions.New(ctx, chatParams())
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if el := time.Since(start); el != 2*time.Second {
				t.Fatalf("call took %v, want it to end with the cancellation at 2s", el)
			}
			if fake.Calls() != 1 {
				t.Fatalf("%d attempts, want 1", fake.Calls())
			}
		})
	})
}

func TestBreakerTripsFailsFastHalfOpensCloses(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFakeT(t,
				steadytest.ServerError(503), steadytest.ServerError(502), steadytest.ServerError(500))
			var ev eventLog
			cfg := steady.Config{
				OnEvent: ev.add,
				Retry:   steady.RetryConfig{MaxRetries: -1},
				Breaker: steady.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 10 * time.Second, HalfOpenProbes: 2},
			}
			c := client(cfg, fake)
			// The SDK's own retries stay on: through the RoundTripper form,
			// steady's final statuses still stop them.
			for i := range 3 {
				if _, err := c.Chat.Completions.New(t.Context(), chatParams()); apiError(t, err).StatusCode < 500 {
					t.Fatalf("call %d: %v, want a 5xx", i+1, err)
				}
			}
			if n := fake.Calls(); n != 3 {
				t.Fatalf("%d attempts, want 3", n)
			}
			if b := ev.of(steady.EventBreakerState); len(b) != 1 || b[0].From != steady.BreakerClosed || b[0].To != steady.BreakerOpen || b[0].Upstream != testUpstream {
				t.Fatalf("breaker events %+v, want closed to open", b)
			}
			// Open: no upstream attempt. (Through the RoundTripper form
			// the SDK would retry the error about a second later, when
			// the first probe may go; WithMaxRetries(0) is the documented
			// setting for that form.)
			if _, err := c.Chat.Completions.New(t.Context(), chatParams(), option.WithMaxRetries(0)); !errors.Is(err, steady.ErrCircuitOpen) {
				t.Fatalf("err = %v, want ErrCircuitOpen", err)
			}
			if n := fake.Calls(); n != 3 {
				t.Fatalf("%d attempts while open, want none", n-3)
			}
		})
	})
}

// TestCircuitOpenThroughSDK pins the SDK behaviour the middleware relies
// on: an error returned with a response carrying "X-Should-Retry: false"
// ends the SDK's retry loop at once, with the error unchanged.
func TestCircuitOpenThroughSDK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503), steadytest.ServerError(503))
		var ev eventLog
		st := steady.New(steady.Config{
			OnEvent: ev.add,
			Retry:   steady.RetryConfig{MaxRetries: 1},
			Breaker: steady.BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: 10 * time.Second, HalfOpenProbes: 2},
		})
		c := viaMiddleware(st, fake) // SDK defaults: 2 retries of its own
		if _, err := c.Chat.Completions.New(t.Context(), chatParams()); apiError(t, err).StatusCode != 503 {
			t.Fatalf("first call: %v", err)
		}
		if st.BreakerState(testUpstream) != steady.BreakerOpen || fake.Calls() != 2 {
			t.Fatalf("breaker %v after %d attempts, want open after 2", st.BreakerState(testUpstream), fake.Calls())
		}

		start := time.Now()
		_, err := c.Chat.Completions.New(t.Context(), chatParams())
		if !errors.Is(err, steady.ErrCircuitOpen) {
			t.Fatalf("err = %v, want ErrCircuitOpen", err)
		}
		if el := time.Since(start); el != 0 {
			t.Fatalf("an open circuit took %v: the SDK slept before retrying", el)
		}
		if n := fake.Calls(); n != 2 {
			t.Fatalf("%d upstream attempts, want none beyond the first 2", n)
		}
		if r := ev.of(steady.EventRejected); len(r) != 1 {
			t.Fatalf("rejected events %+v, want 1 (the SDK must not have retried)", r)
		}

		// Half-open after the timeout; two good probes close it.
		time.Sleep(10*time.Second + time.Millisecond)
		fake.Add(steadytest.ChatCompletion("one"), steadytest.ChatCompletion("two"))
		if _, err := c.Chat.Completions.New(t.Context(), chatParams()); err != nil {
			t.Fatalf("first probe: %v", err)
		}
		if s := st.BreakerState(testUpstream); s != steady.BreakerHalfOpen {
			t.Fatalf("after one probe the breaker is %v, want half-open", s)
		}
		if _, err := c.Chat.Completions.New(t.Context(), chatParams()); err != nil {
			t.Fatalf("second probe: %v", err)
		}
		if s := st.BreakerState(testUpstream); s != steady.BreakerClosed {
			t.Fatalf("after two probes the breaker is %v, want closed", s)
		}
		var path []string
		for _, e := range ev.of(steady.EventBreakerState) {
			path = append(path, e.From.String()+">"+e.To.String())
		}
		if got := strings.Join(path, " "); got != "closed>open open>half-open half-open>closed" {
			t.Fatalf("breaker changes %q", got)
		}
	})
}

func TestHalfOpenFailureReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503), steadytest.ServerError(503))
		st := steady.New(steady.Config{
			Retry:   steady.RetryConfig{MaxRetries: -1},
			Breaker: steady.BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: 5 * time.Second},
		})
		c := viaMiddleware(st, fake)
		c.Chat.Completions.New(t.Context(), chatParams())
		time.Sleep(5*time.Second + time.Millisecond)
		if _, err := c.Chat.Completions.New(t.Context(), chatParams()); apiError(t, err).StatusCode != 503 {
			t.Fatalf("probe: %v", err)
		}
		if s := st.BreakerState(testUpstream); s != steady.BreakerOpen {
			t.Fatalf("a failed probe left the breaker %v, want open", s)
		}
		if _, err := c.Chat.Completions.New(t.Context(), chatParams()); !errors.Is(err, steady.ErrCircuitOpen) {
			t.Fatalf("err = %v, want ErrCircuitOpen", err)
		}
	})
}

func TestBreakerIgnores4xxAnd429(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t)
		for range 10 {
			fake.Add(steadytest.OpenAIError(429, "requests", "rate_limit_exceeded", "slow").WithHeader("X-Should-Retry", "false"),
				steadytest.OpenAIError(404, "invalid_request_error", "model_not_found", "no such model"))
		}
		st := steady.New(steady.Config{Breaker: steady.BreakerConfig{ConsecutiveFailures: 2, MinRequests: 2}})
		c := viaMiddleware(st, fake)
		for range 20 {
			c.Chat.Completions.New(t.Context(), chatParams())
		}
		if n, s := fake.Calls(), st.BreakerState(testUpstream); n != 20 || s != steady.BreakerClosed {
			t.Fatalf("%d attempts, breaker %v; want 20 and closed", n, s)
		}
	})
}

func TestStreamChunksArriveAsProduced(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			fake := steadytest.NewFakeT(t,
				steadytest.ServerError(503),
				steadytest.ChatCompletionStream("Hello", " there", " friend").ChunkEvery(time.Second))
			c := client(steady.Config{Retry: steady.RetryConfig{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}}, fake)
			start := time.Now()
			s := c.Chat.Completions.NewStreaming(t.Context(), chatParams())
			defer s.Close()
			var at []time.Duration
			var text strings.Builder
			for s.Next() {
				at = append(at, time.Since(start))
				if ch := s.Current(); len(ch.Choices) > 0 {
					text.WriteString(ch.Choices[0].Delta.Content)
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if text.String() != "Hello there friend" {
				t.Fatalf("text %q", text.String())
			}
			// Role chunk, three parts, stop chunk: one a second after the
			// retry's short backoff.
			if len(at) != 5 {
				t.Fatalf("%d chunks, want 5", len(at))
			}
			off := at[0] - time.Second
			if off < 0 || off > time.Millisecond {
				t.Fatalf("first chunk at %v, want 1s after the retry", at[0])
			}
			for i, a := range at {
				if want := off + time.Duration(i+1)*time.Second; a != want {
					t.Fatalf("chunk %d arrived at %v, want %v (as produced)", i, a, want)
				}
			}
		})
	})
}

func TestAttemptsNotMultiplied(t *testing.T) {
	cases := []struct {
		name  string
		fail  steadytest.Response
		forms []string
	}{
		{"503", steadytest.ServerError(503), []string{"middleware", "roundtripper"}},
		{"429", steadytest.RateLimited(time.Second), []string{"middleware", "roundtripper"}},
		// Through the RoundTripper form, an error cannot tell the SDK to
		// stop: the documented setup turns the SDK's retries off.
		{"connection reset", steadytest.ConnReset(), []string{"middleware", "roundtripper+WithMaxRetries(0)"}},
	}
	for _, tc := range cases {
		for _, form := range tc.forms {
			t.Run(tc.name+"/"+form, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					fake := &steadytest.Fake{Fallback: &tc.fail}
					cfg := steady.Config{Retry: steady.RetryConfig{MaxRetries: 3}, Breaker: steady.BreakerConfig{Disabled: true}}
					var c openai.Client
					switch form {
					case "middleware":
						c = viaMiddleware(steady.New(cfg), fake)
					case "roundtripper":
						cfg.Base = fake
						c = viaRoundTripper(steady.New(cfg))
					default:
						cfg.Base = fake
						c = viaRoundTripper(steady.New(cfg), option.WithMaxRetries(0))
					}
					_, err := c.Chat.Completions.New(t.Context(), chatParams())
					if err == nil {
						t.Fatal("call succeeded against a failing upstream")
					}
					if tc.fail.Err != nil && !errors.Is(err, syscall.ECONNRESET) {
						t.Fatalf("err = %v, want the connection reset", err)
					}
					if n := fake.Calls(); n != 4 {
						t.Fatalf("%d upstream attempts with the SDK's retries on, want 1+3", n)
					}
				})
			})
		}
	}
}

func TestRetryBudgetBoundsOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := steadytest.ServerError(503)
		fake := &steadytest.Fake{Fallback: &fail}
		var ev eventLog
		st := steady.New(steady.Config{
			OnEvent: ev.add,
			Retry:   steady.RetryConfig{MaxRetries: 4, BudgetRatio: 0.1, BudgetMinPerSecond: -1},
			Breaker: steady.BreakerConfig{Disabled: true},
		})
		c := viaMiddleware(st, fake)
		const calls = 100
		var wg sync.WaitGroup
		for range calls {
			wg.Go(func() { c.Chat.Completions.New(t.Context(), chatParams()) })
		}
		wg.Wait()
		// Without a budget: 500 attempts. With one: each call earns a
		// tenth of a retry.
		if n := fake.Calls(); n < calls || n > calls+calls/10 {
			t.Fatalf("%d upstream attempts for %d calls, want at most %d", n, calls, calls+calls/10)
		}
		exhausted := 0
		for _, e := range ev.of(steady.EventGiveUp) {
			if e.Reason == "retry budget exhausted" {
				exhausted++
			}
		}
		if exhausted < calls-calls/10 {
			t.Fatalf("%d give-ups for an exhausted budget, want at least %d", exhausted, calls-calls/10)
		}
	})
}

func TestEventsCarryRequestIDsNeverTheKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t,
			withID(steadytest.ServerError(502), "req_abc123"),
			steadytest.ConnReset(),
			withID(steadytest.InsufficientQuota(), "req_def456"),
		)
		var ev eventLog
		var logs bytes.Buffer
		st := steady.New(steady.Config{
			OnEvent: ev.add,
			Logger:  slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		c := viaMiddleware(st, fake, option.WithHeader("Api-Key", testAPIKey), option.WithQuery("key", testAPIKey))
		c.Chat.Completions.New(t.Context(), chatParams())

		if r := ev.of(steady.EventRetry); len(r) != 2 || r[0].RequestID != "req_abc123" || r[0].Status != 502 || r[1].Err == nil {
			t.Fatalf("retry events %+v", r)
		}
		if g := ev.of(steady.EventGiveUp); len(g) != 1 || g[0].RequestID != "req_def456" || g[0].Status != 429 {
			t.Fatalf("give-up events %+v", g)
		}
		all := fmt.Sprintf("%+v", ev.all) + logs.String()
		for _, bad := range []string{testAPIKey, "Bearer", "Authorization"} {
			if strings.Contains(all, bad) {
				t.Fatalf("events or logs contain %q:\n%s", bad, all)
			}
		}
		for _, want := range []string{"req_abc123", "req_def456", `"status":502`, "give-up"} {
			if !strings.Contains(logs.String(), want) {
				t.Fatalf("logs lack %q:\n%s", want, logs.String())
			}
		}
	})
}

func TestConcurrentUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{
			Latency: 50 * time.Millisecond,
			Faults:  steadytest.Faults{ErrorRatio: 0.2, OverloadRatio: 0.05, ResetRatio: 0.05, Seed: 7},
		})
		var ev eventLog
		st := steady.New(steady.Config{OnEvent: ev.add})
		c := viaMiddleware(st, p)
		const workers, each = 16, 10
		var mu sync.Mutex
		ok, failed := 0, 0
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					_, err := c.Chat.Completions.New(t.Context(), chatParams())
					mu.Lock()
					if err == nil {
						ok++
					} else {
						failed++
						var aerr *openai.Error
						if !errors.As(err, &aerr) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, steady.ErrCircuitOpen) {
							t.Errorf("unexpected error %v", err)
						}
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		stats := p.Stats()
		if ok+failed != workers*each {
			t.Fatalf("%d calls ended, want %d", ok+failed, workers*each)
		}
		if stats.Requests > int64(workers*each*(1+4)) {
			t.Fatalf("%d upstream attempts for %d calls", stats.Requests, workers*each)
		}
		if retries := len(ev.of(steady.EventRetry)); int64(workers*each+retries) != stats.Requests {
			t.Fatalf("%d calls + %d retries != %d upstream attempts", workers*each, retries, stats.Requests)
		}
		if ok < workers*each*8/10 {
			t.Fatalf("only %d of %d calls succeeded with 30%% of attempts failing", ok, workers*each)
		}
	})
}

func TestStackedLayersDoNotMultiply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := steadytest.ConnReset()
		fake := &steadytest.Fake{Fallback: &fail}
		inner := steady.New(steady.Config{Retry: steady.RetryConfig{MaxRetries: 2}})
		outer := steady.New(steady.Config{Retry: steady.RetryConfig{MaxRetries: 2}})
		c := viaMiddleware(outer, fake, option.WithMiddleware(inner.Middleware))
		_, err := c.Chat.Completions.New(t.Context(), chatParams())
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("err = %v, want the reset", err)
		}
		if n := fake.Calls(); n != 3 {
			t.Fatalf("%d attempts, want the inner layer's 1+2 only", n)
		}
	})
}
