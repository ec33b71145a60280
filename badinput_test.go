package steady

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady/steadytest"
)

// rawRT answers from a list of functions, one per attempt, and counts them.
type rawRT struct {
	calls int
	resps []func(*http.Request) *http.Response
}

func (r *rawRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	i := min(r.calls, len(r.resps)-1)
	r.calls++
	resp := r.resps[i](req)
	resp.Request = req
	return resp, nil
}

// bareResponse is what a careless custom base may return: no Header, no
// Body.
func bareResponse(status int) func(*http.Request) *http.Response {
	return func(*http.Request) *http.Response { return &http.Response{StatusCode: status} }
}

// failingBody yields prefix, then fails with err.
func failingBody(prefix string, err error) io.ReadCloser {
	return io.NopCloser(io.MultiReader(strings.NewReader(prefix), errReader{err}))
}

func TestTransportNotMadeByNew(t *testing.T) {
	var zero Transport
	var nilT *Transport
	for name, st := range map[string]*Transport{"zero value": &zero, "empty literal": {}, "nil pointer": nilT} {
		t.Run(name, func(t *testing.T) {
			resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
			if resp != nil || !errors.Is(err, errNotNew) || !strings.HasPrefix(err.Error(), "steady: ") {
				t.Fatalf("RoundTrip = %v, %v; want errNotNew", resp, err)
			}
			called := false
			next := func(*http.Request) (*http.Response, error) { called = true; return nil, nil }
			resp, err = st.Middleware(newRTRequest(t, strings.NewReader(rtBody)), next)
			if !errors.Is(err, errNotNew) || called {
				t.Fatalf("Middleware = %v, next called %v; want errNotNew without sending", err, called)
			}
			if resp == nil || resp.Header.Get("X-Should-Retry") != "false" {
				t.Fatalf("Middleware response %v, want one that stops the SDK's retries", resp)
			}
			if s := st.BreakerState("https://api.example.test"); s != BreakerClosed {
				t.Fatalf("BreakerState = %v", s)
			}
			if s := st.Snapshot(); s != nil {
				t.Fatalf("Snapshot = %v", s)
			}
		})
	}
}

func TestNilRequest(t *testing.T) {
	st := New(Config{Base: steadytest.NewFakeT(t)})
	if _, err := st.RoundTrip(nil); !errors.Is(err, errNilRequest) {
		t.Fatalf("err = %v, want errNilRequest", err)
	}
	if _, err := st.RoundTrip(&http.Request{Method: "GET"}); !errors.Is(err, errNilURL) {
		t.Fatalf("err = %v, want errNilURL", err)
	}
}

func TestRequestWithoutHeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := steadytest.NewFakeT(t, steadytest.ServerError(503), steadytest.ChatCompletion("ok"))
		st := New(Config{Base: fake})
		req := newRTRequest(t, strings.NewReader(rtBody))
		req.Header = nil
		resp, err := st.RoundTrip(req)
		if err != nil || resp.StatusCode != 200 || fake.Calls() != 2 {
			t.Fatalf("got %v, %v after %d attempts; want 200 after 2", resp, err, fake.Calls())
		}
		resp.Body.Close()
		if req.Header != nil {
			t.Fatal("the caller's request gained a Header")
		}
	})
}

func TestBaseResponseWithoutHeaderOrBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Retried, then success.
		base := &rawRT{resps: []func(*http.Request) *http.Response{bareResponse(503), bareResponse(200)}}
		st := New(Config{Base: base})
		resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
		if err != nil || resp.StatusCode != 200 || base.calls != 2 {
			t.Fatalf("got %v, %v after %d attempts; want 200 after 2", resp, err, base.calls)
		}
		resp.Body.Close()

		// Given up: the response handed back is marked and closable.
		base = &rawRT{resps: []func(*http.Request) *http.Response{bareResponse(503)}}
		st = New(Config{Base: base, Retry: RetryConfig{MaxRetries: 2}})
		resp, err = st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
		if err != nil || resp.StatusCode != 503 || base.calls != 3 {
			t.Fatalf("got %v, %v after %d attempts; want 503 after 3", resp, err, base.calls)
		}
		if resp.Header.Get("X-Should-Retry") != "false" || resp.Body == nil {
			t.Fatalf("final response header %v body %v", resp.Header, resp.Body)
		}
		if b, err := io.ReadAll(resp.Body); len(b) != 0 || err != nil {
			t.Fatalf("body %q, %v", b, err)
		}
		resp.Body.Close()
	})
}

// TestBodyErrorMidReadKept: an error body that fails while being read is
// handed back with the bytes before the failure and the failure itself,
// both when it is the final answer and when it was kept across a retry.
func TestBodyErrorMidReadKept(t *testing.T) {
	errCut := errors.New("connection cut")
	const prefix = `{"error":{"message":"overloaded","type":"server_error"`
	cut := func(*http.Request) *http.Response {
		return &http.Response{StatusCode: 503, Header: http.Header{}, Body: failingBody(prefix, errCut), ContentLength: -1}
	}
	check := func(t *testing.T, resp *http.Response, err error) {
		t.Helper()
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("got %v, %v; want the 503", resp, err)
		}
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != prefix || !errors.Is(rerr, errCut) {
			t.Fatalf("body %q, %v; want %q then the cut", b, rerr, prefix)
		}
	}
	t.Run("final", func(t *testing.T) {
		st := New(Config{Base: &rawRT{resps: []func(*http.Request) *http.Response{cut}}, Retry: RetryConfig{MaxRetries: -1}})
		resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
		check(t, resp, err)
	})
	t.Run("kept across a retry", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := New(Config{Base: &rawRT{resps: []func(*http.Request) *http.Response{cut}}})
			req := newRTRequest(t, strings.NewReader(rtBody))
			req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
			resp, err := st.RoundTrip(req)
			check(t, resp, err)
		})
	})
}

// TestHostileRetryHints: whatever a server puts in its retry headers, a
// call ends, without a panic, within the retry settings' own bounds.
func TestHostileRetryHints(t *testing.T) {
	for _, v := range []string{"NaN", "-5", "-1e300", "1e400", "+Inf", "99999999999999999999999", "0x10", "", "3 seconds", "Wed, 99 Foo 2026 99:99:99 GMT"} {
		for _, h := range []string{"Retry-After", "Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
			t.Run(h+"="+v, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					fake := steadytest.NewFakeT(t,
						steadytest.OpenAIError(429, "requests", "rate_limit_exceeded", "slow down").WithHeader(h, v),
						steadytest.ChatCompletion("ok"))
					st := New(Config{Base: fake, Retry: RetryConfig{MaxDelay: time.Second}})
					start := time.Now()
					resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					// Either the hint is ignored (a backoff of at most
					// MaxDelay, then the 200) or it is read as too long
					// (the 429 at once).
					el := time.Since(start)
					switch resp.StatusCode {
					case 200:
						if el > time.Second || fake.Calls() != 2 {
							t.Fatalf("200 after %v and %d attempts; want at most 1s and 2", el, fake.Calls())
						}
					case 429:
						if el != 0 || fake.Calls() != 1 {
							t.Fatalf("429 after %v and %d attempts; want at once and 1", el, fake.Calls())
						}
					default:
						t.Fatalf("status %d", resp.StatusCode)
					}
				})
			})
		}
	}
}

// ctxRT fails as net/http does when the request's context has ended.
type ctxRT struct{ calls int }

func (r *ctxRT) RoundTrip(req *http.Request) (*http.Response, error) {
	r.calls++
	if req.Body != nil {
		req.Body.Close()
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

func TestCancelledBeforeSending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := &ctxRT{}
		st := New(Config{Base: base, Breaker: BreakerConfig{ConsecutiveFailures: 1}})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		for _, mw := range []bool{false, true} {
			body := &bodyProbe{ReadCloser: io.NopCloser(strings.NewReader(rtBody))}
			req := newRTRequest(t, body).WithContext(ctx)
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(rtBody)), nil }
			var err error
			if mw {
				// Base is refused through Middleware: send through next.
				_, err = New(Config{Breaker: BreakerConfig{ConsecutiveFailures: 1}}).Middleware(req, base.RoundTrip)
			} else {
				_, err = st.RoundTrip(req)
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("middleware %v: err = %v, want context.Canceled", mw, err)
			}
			if !body.closed {
				t.Fatalf("middleware %v: the request body was not closed", mw)
			}
		}
		if base.calls > 2 {
			t.Fatalf("%d attempts for 2 cancelled calls, want at most one each", base.calls)
		}
		if s := st.BreakerState("https://api.example.test"); s != BreakerClosed {
			t.Fatalf("the caller's cancellation counted against the upstream: breaker %v", s)
		}
	})
}

// nothingRT returns neither a response nor an error, as a broken base may.
type nothingRT struct{ calls int }

func (r *nothingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	r.calls++
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, nil
}

func TestBaseReturnsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := &nothingRT{}
		st := New(Config{Base: base, Retry: RetryConfig{MaxRetries: 1}})
		resp, err := st.RoundTrip(newRTRequest(t, strings.NewReader(rtBody)))
		if resp != nil || !errors.Is(err, errNoResponse) || !strings.HasPrefix(err.Error(), "steady: ") {
			t.Fatalf("RoundTrip = %v, %v; want errNoResponse", resp, err)
		}
		// A broken base is a bug to report, not a failure to retry.
		if base.calls != 1 {
			t.Fatalf("%d attempts, want 1", base.calls)
		}
	})
}
