package bench

import (
	"net/http"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady"
)

// peerSpec is one way of calling an LLM API through the OpenAI Go SDK.
type peerSpec struct {
	// Name labels the peer in tables and benchmarks.
	Name string
	// Setup describes, for the report, how the SDK is configured.
	Setup string
	// Transport returns the peer's layer around base as an
	// http.RoundTripper, for the overhead benchmark.
	Transport func(base http.RoundTripper) http.RoundTripper
	// Options returns the SDK options that send every call through the
	// peer to base.
	Options func(base http.RoundTripper) []option.RequestOption
}

// allPeers returns the bare SDK, go-retryablehttp, failsafe-go and steady,
// each set up as its documentation suggests.
func allPeers() []peerSpec {
	return []peerSpec{
		{
			Name:      "bare SDK",
			Setup:     "the SDK's own retries (2 retries, 0.5 s to 8 s backoff, Retry-After honoured)",
			Transport: func(base http.RoundTripper) http.RoundTripper { return base },
			Options: func(base http.RoundTripper) []option.RequestOption {
				return []option.RequestOption{option.WithHTTPClient(&http.Client{Transport: base})}
			},
		},
		{
			Name:  "go-retryablehttp",
			Setup: "retryablehttp.NewClient() defaults (4 retries, 1 s to 30 s backoff, Retry-After honoured) as the HTTP client, SDK retries off",
			Transport: func(base http.RoundTripper) http.RoundTripper {
				return &retryablehttp.RoundTripper{Client: retryableClient(base)}
			},
			Options: func(base http.RoundTripper) []option.RequestOption {
				return []option.RequestOption{
					option.WithHTTPClient(retryableClient(base).StandardClient()),
					option.WithMaxRetries(0),
				}
			},
		},
		{
			Name:      "failsafe-go",
			Setup:     "failsafehttp retry policy (4 retries, 1 s to 30 s backoff, Retry-After honoured) around a circuit breaker (5 of 10 failed, open 30 s), SDK retries off",
			Transport: failsafeTransport,
			Options: func(base http.RoundTripper) []option.RequestOption {
				return []option.RequestOption{
					option.WithHTTPClient(&http.Client{Transport: failsafeTransport(base)}),
					option.WithMaxRetries(0),
				}
			},
		},
		{
			Name:  "steady",
			Setup: "steady.New(steady.Config{}) as SDK middleware, SDK defaults left on",
			Transport: func(base http.RoundTripper) http.RoundTripper {
				return steady.New(steady.Config{Base: base})
			},
			Options: func(base http.RoundTripper) []option.RequestOption {
				t := steady.New(steady.Config{})
				return []option.RequestOption{
					option.WithHTTPClient(&http.Client{Transport: base}),
					option.WithMiddleware(t.Middleware),
				}
			},
		},
	}
}

// batchPeers returns the bare SDK, go-retryablehttp, failsafe-go, and
// steady in both forms: SDK middleware and the HTTP client's transport.
func batchPeers() []peerSpec {
	ps := allPeers()
	for i := range ps {
		if ps[i].Name == "steady" {
			ps[i].Name = "steady (middleware)"
		}
	}
	return append(ps, peerSpec{
		Name:      "steady (transport)",
		Setup:     "steady.New(steady.Config{}) as the HTTP client's transport (option.WithHTTPClient), SDK defaults left on",
		Transport: func(base http.RoundTripper) http.RoundTripper { return steady.New(steady.Config{Base: base}) },
		Options: func(base http.RoundTripper) []option.RequestOption {
			return []option.RequestOption{option.WithHTTPClient(&http.Client{Transport: steady.New(steady.Config{Base: base})})}
		},
	})
}

// holdPeer returns steady as SDK middleware with its breaker holding calls
// until the circuit closes (while their deadline allows) instead of
// failing them at once.
func holdPeer() peerSpec {
	hold := steady.BreakerConfig{Hold: true}
	return peerSpec{
		Name:  "steady, hold mode",
		Setup: "steady.New(steady.Config{Breaker: steady.BreakerConfig{Hold: true}}) as SDK middleware, SDK defaults left on",
		Transport: func(base http.RoundTripper) http.RoundTripper {
			return steady.New(steady.Config{Base: base, Breaker: hold})
		},
		Options: func(base http.RoundTripper) []option.RequestOption {
			return []option.RequestOption{
				option.WithHTTPClient(&http.Client{Transport: base}),
				option.WithMiddleware(steady.New(steady.Config{Breaker: hold}).Middleware),
			}
		},
	}
}

// retryableClient is retryablehttp's default client sending through base,
// with its logger off.
func retryableClient(base http.RoundTripper) *retryablehttp.Client {
	c := retryablehttp.NewClient()
	c.Logger = nil
	c.HTTPClient = &http.Client{Transport: base}
	return c
}

// failsafeTransport is failsafehttp's retry policy around a circuit
// breaker that counts 5xx and transport errors.
func failsafeTransport(base http.RoundTripper) http.RoundTripper {
	retry := failsafehttp.NewRetryPolicyBuilder().
		WithBackoff(time.Second, 30*time.Second).
		WithJitterFactor(0.25).
		WithMaxRetries(4).
		AbortOnErrors(circuitbreaker.ErrOpen).
		ReturnLastFailure().
		Build()
	breaker := circuitbreaker.NewBuilder[*http.Response]().
		HandleIf(func(resp *http.Response, err error) bool {
			return err != nil || resp.StatusCode >= 500
		}).
		WithFailureThresholdRatio(5, 10).
		WithDelay(30 * time.Second).
		Build()
	return failsafehttp.NewRoundTripper(base, retry, breaker)
}

// newClient returns an SDK client that calls baseURL through peer and base.
func newClient(peer peerSpec, baseURL string, base http.RoundTripper) openai.Client {
	opts := append([]option.RequestOption{
		option.WithBaseURL(baseURL),
		option.WithAPIKey("sk-bench"),
	}, peer.Options(base)...)
	return openai.NewClient(opts...)
}
