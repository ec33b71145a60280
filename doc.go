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
//
// Every failed response (status 400 or more) steady hands back carries
// "X-Should-Retry: false", so the SDK's own retries do not multiply its
// attempts; through Middleware, a final error such as [ErrCircuitOpen] or a
// pacing [*WaitError] also stops the SDK's retry loop at once.
//
// Requests are paced per partition (upstream host, a hash of the
// credential, and the model), following what [ParseRateLimits] reads from
// each response, the limits stated in [PacingConfig], and the shared
// cooldown after a 429. [Transport.Snapshot] shows every partition's
// limits, waits and breaker state; [Config.OnEvent] and [Config.Logger]
// report every retry, wait and breaker change.
//
// Package steadytest, beside this one, holds a scripted fake transport and
// a simulated rate-limited provider for tests of code that calls LLM APIs.
package steady
