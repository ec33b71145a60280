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
// attempts, and "X-Steady-Give-Up" saying why steady stopped; through
// Middleware, a final error such as [ErrCircuitOpen] or a pacing
// [*WaitError] also stops the SDK's retry loop at once.
//
// The zero [Config] is the production setup, and every field follows one
// rule: for a number, zero means the default its documentation states and
// a negative value means none, that limit or feature is off (never retry,
// no cap, no budget, no headroom). Whole features are turned off by their
// Disabled field. The one field where zero is itself "none" is
// [PacingConfig].MaxWait: pacing waits are uncapped unless a positive cap
// is set.
//
// The circuit breaker ([BreakerConfig]) fails fast by default: a request
// meeting an open circuit fails at once with [ErrCircuitOpen]. With
// BreakerConfig.Hold, requests wait instead until the upstream recovers,
// as long as their deadlines allow, and only probes reach the upstream
// meanwhile.
//
// Requests are paced per partition (upstream host, a hash of the
// credential, and the model), following what [ratelimit.Parse] reads from
// each response, the limits stated in [PacingConfig], and the shared
// cooldown after a 429. [Transport.Snapshot] shows every partition's
// limits, waits and breaker state; [Config.OnEvent] and [Config.Logger]
// report every retry, wait and breaker change.
//
// A partition whose provider announces no limits, and has none configured,
// is paced at a rate discovered from what the provider accepts and refuses;
// a guess never refuses a call, only the caller's deadline does.
//
// Package steadytest, beside this one, holds a scripted fake transport, a
// simulated rate-limited provider and a recorder of steady's events for
// tests of code that calls LLM APIs. Two modules of their own plug into a
// Transport: steadyredis shares its partitions with a fleet of processes
// through Redis ([PacingConfig].Store), and steadyotel records its metrics
// and traces with OpenTelemetry.
package steady
