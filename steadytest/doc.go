// Package steadytest provides a scripted fake transport, a simulated
// rate-limited LLM provider and a recorder of steady's events, for testing
// code that calls OpenAI-compatible APIs, in the spirit of
// net/http/httptest.
//
// A [Fake] answers requests from a script of [Response] values (made by
// [RateLimited], [ServerError], [ChatCompletion] and their kin) and records
// what it saw:
//
//	fake := steadytest.NewFakeT(t,
//		steadytest.RateLimited(time.Second), // a 429 asking for a 1 s wait
//		steadytest.ChatCompletion("Hello!"), // then a 200
//	)
//	client := openai.NewClient(option.WithHTTPClient(&http.Client{Transport: fake}), ...)
//	// ... call client, then inspect fake.Requests()
//
// A [Provider] simulates a whole OpenAI-compatible API that enforces
// requests and tokens limits, announces them in a chosen [Dialect] and
// injects [Faults]:
//
//	p := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 60})
//	client := openai.NewClient(option.WithHTTPClient(&http.Client{Transport: p}), ...)
//	// ... hammer it, then check p.Stats().MaxRequestsInWindow <= 60
//
// A [Recorder] collects what steady did, so that a test fails when steady
// is taken out of the client (the SDK alone also retries 429s, so the
// requests a Fake saw cannot tell):
//
//	tr := steady.New(steady.Config{})
//	rec := steadytest.Record(tr)
//	client := openai.NewClient(option.WithMiddleware(tr.Middleware), option.WithHTTPClient(&http.Client{Transport: fake}), ...)
//	// ... call client, then look for steady.EventRetry in rec.Events()
//
// Fake and Provider are [net/http.RoundTripper]s that never touch the
// network, so they run inside testing/synctest bubbles, where their delays
// take no real time. A Provider is also an [net/http.Handler] for an
// httptest.Server or a real listener.
package steadytest
