// Package steady keeps calls to LLM APIs steady under rate limits and
// outages.
//
// A [Transport] reads the rate-limit headers that OpenAI-compatible
// providers send, paces requests so that they stay under the announced
// limits, retries what is worth retrying with jittered backoff, and trips a
// circuit breaker per upstream after sustained server failures.
//
// It plugs into the official OpenAI Go SDK either as middleware:
//
//	t := steady.New(steady.Config{})
//	client := openai.NewClient(option.WithMiddleware(t.Middleware))
//
// or as the HTTP client's transport:
//
//	client := openai.NewClient(
//		option.WithHTTPClient(&http.Client{Transport: t}),
//		option.WithMaxRetries(0),
//	)
//
// and it works with any plain [http.Client] as an [http.RoundTripper].
package steady
