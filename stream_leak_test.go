package steady_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// deafStream answers its first request with a 200 stream that sends
// nothing and whose Read ignores Close: only the request's context ends
// it, as a transport that stops reading when the request's context ends
// does. Later requests get an answer from next. reading counts the Reads
// under way.
type deafStream struct {
	next    http.RoundTripper
	calls   atomic.Int32
	reading atomic.Int32
}

func (d *deafStream) RoundTrip(r *http.Request) (*http.Response, error) {
	if d.calls.Add(1) > 1 {
		return d.next.RoundTrip(r)
	}
	return &http.Response{StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: &deafBody{d: d, ctx: r.Context()}, Request: r}, nil
}

type deafBody struct {
	d   *deafStream
	ctx context.Context
}

func (b *deafBody) Read([]byte) (int, error) {
	b.d.reading.Add(1)
	defer b.d.reading.Add(-1)
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

func (b *deafBody) Close() error { return nil } // does not end a Read

// TestStreamGuardReadEnds: the stream guard's read ahead does not outlive
// the attempt it gave up on. A stream that sends nothing, and whose Read
// Close does not end, stalls past FirstTokenTimeout (2 s): the guard
// closes its body, which cancels the attempt's own context, and the Read
// under way ends then, not at the caller's deadline (90 s); the call is
// retried and served. When the caller cancels during the read ahead, the
// Read ends as well. Nothing is left running either way (synctest waits
// for every goroutine of the bubble).
func TestStreamGuardReadEnds(t *testing.T) {
	providerForms(t, func(t *testing.T, client clientFunc) {
		t.Run("stall", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				deaf := &deafStream{next: steadytest.NewFakeT(t, steadytest.ChatCompletionStream("Hello"))}
				c, _ := client(steady.Config{Retry: steady.RetryConfig{FirstTokenTimeout: 2 * time.Second}}, deaf)
				ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
				defer cancel()
				start := time.Now()
				text, err := streamChat(ctx, c)
				took := time.Since(start)
				synctest.Wait()
				t.Logf("stalled stream: %q, %v, in %v; attempts %d; reads still under way %d", text, err, took, deaf.calls.Load(), deaf.reading.Load())
				if err != nil || text != "Hello" {
					t.Errorf("got %q, %v; want the retry's answer", text, err)
				}
				if n := deaf.reading.Load(); n != 0 {
					t.Errorf("%d reads of the abandoned stream still under way after the call", n)
				}
			})
		})
		t.Run("routed", func(t *testing.T) {
			// A routed request (Config.Upstreams) reads its body apart
			// from pacing: its stream is known as one all the same.
			synctest.Test(t, func(t *testing.T) {
				deaf := &deafStream{next: steadytest.NewFakeT(t, steadytest.ChatCompletionStream("Hello"))}
				c, _ := client(steady.Config{Retry: steady.RetryConfig{FirstTokenTimeout: 2 * time.Second},
					Upstreams: []steady.Upstream{{Name: "only", BaseURL: testBaseURL, Key: "sk-only"}}}, deaf)
				ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
				defer cancel()
				text, err := streamChat(ctx, c)
				synctest.Wait()
				if err != nil || text != "Hello" {
					t.Errorf("got %q, %v; want the retry's answer", text, err)
				}
				if n := deaf.reading.Load(); n != 0 {
					t.Errorf("%d reads of the abandoned stream still under way after the call", n)
				}
			})
		})
		t.Run("caller-cancels", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				deaf := &deafStream{next: steadytest.NewFakeT(t)}
				c, _ := client(steady.Config{}, deaf)
				ctx, cancel := context.WithCancel(t.Context())
				time.AfterFunc(5*time.Second, cancel)
				start := time.Now()
				_, err := streamChat(ctx, c)
				took := time.Since(start)
				synctest.Wait()
				t.Logf("canceled: %v in %v; reads still under way %d", err, took, deaf.reading.Load())
				if err == nil || took != 5*time.Second {
					t.Errorf("got %v after %v; want the cancellation's error at 5 s", err, took)
				}
				if n := deaf.reading.Load(); n != 0 {
					t.Errorf("%d reads still under way after the call", n)
				}
			})
		})
	})
}
