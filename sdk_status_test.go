package steady_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestStatusTableThroughSDK walks the status rules end to end, through
// both ways of plugging steady into the SDK with the SDK's retries on: a
// retryable first answer is followed by one more attempt and the call
// succeeds; any other first answer is the call's error after one attempt.
func TestStatusTableThroughSDK(t *testing.T) {
	anthropicErr := func(status int, typ, code string) steadytest.Response {
		body := fmt.Sprintf(`{"type":"error","error":{"type":%q,"message":"no","details":{"error_code":%q}},"request_id":"req_a"}`, typ, code)
		return steadytest.JSON(status, body)
	}
	oaErr := func(status int) steadytest.Response {
		return steadytest.OpenAIError(status, "server_error", "", http.StatusText(status))
	}
	cases := []struct {
		name  string
		first steadytest.Response
		retry bool
	}{
		{"408", oaErr(408), true},
		{"409", oaErr(409), true},
		{"429", steadytest.RateLimited(0), true},
		{"500", oaErr(500), true},
		{"502", oaErr(502), true},
		{"503", oaErr(503), true},
		{"504", oaErr(504), true},
		{"529", anthropicErr(529, "overloaded_error", ""), true},
		{"400", oaErr(400), false},
		{"401", oaErr(401), false},
		{"402", oaErr(402), false},
		{"403", oaErr(403), false},
		{"404", oaErr(404), false},
		{"422", oaErr(422), false},
		{"429 insufficient_quota", steadytest.InsufficientQuota(), false},
		{"429 spend limit", anthropicErr(429, "rate_limit_error", "enforced_spend_limit_reached"), false},
		{"400 billing", anthropicErr(400, "billing_error", ""), false},
		{"x-should-retry true on a 400", oaErr(400).WithHeader("X-Should-Retry", "true"), true},
		{"x-should-retry false on a 503", oaErr(503).WithHeader("X-Should-Retry", "false"), false},
		{"x-should-retry true on insufficient_quota", steadytest.InsufficientQuota().WithHeader("X-Should-Retry", "true"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
				synctest.Test(t, func(t *testing.T) {
					status := tc.first.Status
					fake := steadytest.NewFake(tc.first, steadytest.ChatCompletion("ok"))
					c := client(steady.Config{}, fake)
					_, err := c.Chat.Completions.New(t.Context(), chatParams())
					if tc.retry {
						if err != nil || fake.Calls() != 2 {
							t.Fatalf("err %v after %d attempts; want success after 2", err, fake.Calls())
						}
						return
					}
					aerr := apiError(t, err)
					if aerr.StatusCode != status {
						t.Fatalf("status %d, want %d", aerr.StatusCode, status)
					}
					if h := aerr.Response.Header; h.Get("X-Should-Retry") != "false" || h.Get("X-Steady-Give-Up") == "" {
						t.Fatalf("handed back without the give-up marks: %v", h)
					}
					if fake.Calls() != 1 {
						t.Fatalf("%d attempts, want 1", fake.Calls())
					}
				})
			})
		})
	}
}

// TestTransportFailuresThroughSDK: connection failures before a response
// are retried, a certificate error is not, through the middleware and
// through the RoundTripper form set up as documented (the SDK's retries
// off).
func TestTransportFailuresThroughSDK(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		retry bool
	}{
		{"refused", &netError{syscall.ECONNREFUSED}, true},
		{"reset", steadytest.ConnReset().Err, true},
		{"EOF", io.EOF, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"certificate", x509.UnknownAuthorityError{}, false},
	}
	for _, tc := range cases {
		for _, form := range []string{"middleware", "roundtripper+WithMaxRetries(0)"} {
			t.Run(tc.name+"/"+form, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					fake := steadytest.NewFake(steadytest.Response{Err: tc.err}, steadytest.ChatCompletion("ok"))
					var c openai.Client
					if form == "middleware" {
						c = viaMiddleware(steady.New(steady.Config{}), fake)
					} else {
						c = viaRoundTripper(steady.New(steady.Config{Base: fake}), option.WithMaxRetries(0))
					}
					_, err := c.Chat.Completions.New(t.Context(), chatParams())
					if tc.retry {
						if err != nil || fake.Calls() != 2 {
							t.Fatalf("err %v after %d attempts; want success after 2", err, fake.Calls())
						}
						return
					}
					if !errors.Is(err, tc.err) && !errors.As(err, new(x509.UnknownAuthorityError)) {
						t.Fatalf("err = %v, want the %s error", err, tc.name)
					}
					if fake.Calls() != 1 {
						t.Fatalf("%d attempts, want 1", fake.Calls())
					}
				})
			})
		}
	}
}

// netError is a dial failure as net reports it.
type netError struct{ errno syscall.Errno }

func (e *netError) Error() string { return "dial tcp: " + e.errno.Error() }
func (e *netError) Unwrap() error { return e.errno }

// TestHostileHeadersThroughSDK: a provider sending NaN, negative, huge and
// overlong rate-limit and retry headers neither panics steady nor makes a
// call wait without bound: every call ends with the provider's answer, or
// at once when the server asks for a pause past the call's deadline.
func TestHostileHeadersThroughSDK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := steadytest.NewProvider(steadytest.ProviderConfig{
			RequestsPerWindow: 2,
			Window:            10 * time.Second,
			Faults:            steadytest.Faults{HostileHeaders: true},
		})
		c := viaMiddleware(steady.New(steady.Config{}), p)
		ok := 0
		for i := range 12 {
			ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
			start := time.Now()
			_, err := c.Chat.Completions.New(ctx, chatParams())
			cancel()
			if el := time.Since(start); el > 3*time.Minute {
				t.Fatalf("call %d took %v", i, el)
			}
			if err == nil {
				ok++
				continue
			}
			var we *steady.WaitError
			if errors.As(err, &we) && errors.Is(err, context.DeadlineExceeded) {
				continue // the server asked for a pause past the deadline
			}
			if aerr := apiError(t, err); aerr.StatusCode != 429 {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		if ok == 0 || p.Stats().Accepted != int64(ok) {
			t.Fatalf("%d calls succeeded, provider accepted %d", ok, p.Stats().Accepted)
		}
	})
}

// TestSDKStopsOnShouldRetryFalseWithError pins, without steady, the SDK
// behaviour that Transport.Middleware relies on: a middleware returning an
// error together with a response carrying "X-Should-Retry: false" ends the
// SDK's retry loop at once, and the caller gets that error unchanged. If a
// new SDK version breaks this, steady's middleware form multiplies
// attempts and sleeps on an open circuit.
func TestSDKStopsOnShouldRetryFalseWithError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sentinel := errors.New("final")
		calls := 0
		mw := func(req *http.Request, _ option.MiddlewareNext) (*http.Response, error) {
			calls++
			return &http.Response{
				StatusCode: 503,
				Header:     http.Header{"X-Should-Retry": {"false"}},
				Body:       http.NoBody,
				Request:    req,
			}, sentinel
		}
		fake := steadytest.NewFake() // never reached
		c := openai.NewClient(
			option.WithMiddleware(mw),
			option.WithHTTPClient(&http.Client{Transport: fake}),
			option.WithBaseURL(testBaseURL),
			option.WithAPIKey(testAPIKey),
		)
		start := time.Now()
		_, err := c.Chat.Completions.New(t.Context(), chatParams())
		if !errors.Is(err, sentinel) {
			t.Fatalf("err = %v, want the middleware's error", err)
		}
		if calls != 1 || time.Since(start) != 0 || fake.Calls() != 0 {
			t.Fatalf("middleware called %d times over %v, %d upstream attempts; want 1, at once, 0", calls, time.Since(start), fake.Calls())
		}

		// The contrast: an error alone is retried by the SDK.
		calls = 0
		bare := openai.NewClient(
			option.WithMiddleware(func(*http.Request, option.MiddlewareNext) (*http.Response, error) {
				calls++
				return nil, sentinel
			}),
			option.WithHTTPClient(&http.Client{Transport: fake}),
			option.WithBaseURL(testBaseURL),
			option.WithAPIKey(testAPIKey),
		)
		if _, err := bare.Chat.Completions.New(t.Context(), chatParams()); !errors.Is(err, sentinel) || calls != 3 {
			t.Fatalf("an error alone: %v after %d calls, want it after the SDK's 3", err, calls)
		}
	})
}

// TestStreamCutNotRetried: a stream that breaks after its 2xx headers is
// the caller's to handle: its chunks so far arrive, then the error, and
// nothing is sent again.
func TestStreamCutNotRetried(t *testing.T) {
	forms(t, func(t *testing.T, client func(steady.Config, *steadytest.Fake) openai.Client) {
		synctest.Test(t, func(t *testing.T) {
			stream := steadytest.ChatCompletionStream("Hello", " there").ChunkEvery(time.Second)
			stream.Chunks = stream.Chunks[:2] // role and "Hello"
			stream.Chunks[1].Err = steadytest.ConnReset().Err
			fake := steadytest.NewFake(stream, steadytest.ChatCompletionStream("again"))
			c := client(steady.Config{}, fake)
			s := c.Chat.Completions.NewStreaming(t.Context(), chatParams())
			defer s.Close()
			var text string
			for s.Next() {
				if ch := s.Current(); len(ch.Choices) > 0 {
					text += ch.Choices[0].Delta.Content
				}
			}
			if s.Err() == nil || text != "Hello" {
				t.Fatalf("text %q, err %v; want %q then an error", text, s.Err(), "Hello")
			}
			if fake.Calls() != 1 {
				t.Fatalf("%d attempts, want 1", fake.Calls())
			}
		})
	})
}

// TestProviderDialectsThroughSDK: whatever dialect the simulated provider
// speaks, steady reads its error bodies the same way end to end: a quota
// failure is tried once, an outage 1+MaxRetries times, and a 429 with its
// Retry-After is waited out.
func TestProviderDialectsThroughSDK(t *testing.T) {
	dialects := []steadytest.Dialect{steadytest.DialectOpenAI, steadytest.DialectHerokuSeed, steadytest.DialectHerokuDocs,
		steadytest.DialectAnthropic, steadytest.DialectIETF, steadytest.DialectNone}
	for _, d := range dialects {
		t.Run(d.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 1, Window: 10 * time.Second, Dialect: d})
				st := steady.New(steady.Config{
					Retry:   steady.RetryConfig{MaxRetries: 2},
					Breaker: steady.BreakerConfig{Disabled: true},
					Pacing:  steady.PacingConfig{Disabled: true},
				})
				c := viaMiddleware(st, p)

				p.SetFaults(steadytest.Faults{InsufficientQuota: true})
				_, err := c.Chat.Completions.New(t.Context(), chatParams())
				if aerr := apiError(t, err); aerr.StatusCode != 429 || p.Stats().Requests != 1 {
					t.Fatalf("quota: status %d after %d attempts, want 429 after 1", aerr.StatusCode, p.Stats().Requests)
				}

				p.SetFaults(steadytest.Faults{Outage: true})
				_, err = c.Chat.Completions.New(t.Context(), chatParams())
				if aerr := apiError(t, err); aerr.StatusCode < 500 || p.Stats().Requests != 1+3 {
					t.Fatalf("outage: status %d after %d attempts, want a 5xx after 3 more", aerr.StatusCode, p.Stats().Requests-1)
				}

				p.SetFaults(steadytest.Faults{})
				if _, err := c.Chat.Completions.New(t.Context(), chatParams()); err != nil {
					t.Fatalf("first call in the window: %v", err)
				}
				start := time.Now()
				if _, err := c.Chat.Completions.New(t.Context(), chatParams()); err != nil {
					t.Fatalf("second call: %v", err)
				}
				if el := time.Since(start); el <= 0 || el > 10*time.Second {
					t.Fatalf("second call took %v, want a wait for the window of 10s", el)
				}
			})
		})
	}
}
