// Package steadytest provides a scripted fake transport and a simulated
// rate-limited LLM provider, for testing code that calls OpenAI-compatible
// APIs, in the spirit of net/http/httptest.
//
// A [Fake] answers requests from a script and records what it saw:
//
//	fake := steadytest.NewFake(
//		steadytest.RateLimited(time.Millisecond), // a 429 with retry-after-ms: 1
//		steadytest.ChatCompletion("Hello!"),      // then a 200
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
// Both are [net/http.RoundTripper]s that never touch the network, so they
// run inside testing/synctest bubbles, where their delays take no real
// time. A Provider is also an [net/http.Handler] for an httptest.Server or
// a real listener.
package steadytest
