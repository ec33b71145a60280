package steady

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
)

// bodyRecorder is a base that reads each attempt's body as net/http would
// (failing when it is shorter than ContentLength), records it, and answers
// from statuses in turn.
type bodyRecorder struct {
	statuses []int
	bodies   []string
	errs     []error
}

func (b *bodyRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var got []byte
	var err error
	if req.Body != nil {
		got, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err == nil && req.ContentLength > 0 && int64(len(got)) != req.ContentLength {
			err = fmt.Errorf("http: ContentLength=%d with Body length %d", req.ContentLength, len(got))
		}
	}
	b.bodies = append(b.bodies, string(got))
	b.errs = append(b.errs, err)
	st := b.statuses[min(len(b.bodies)-1, len(b.statuses)-1)]
	return &http.Response{StatusCode: st, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{}`)), Request: req}, err
}

// closeCounter counts Close calls on a request body.
type closeCounter struct {
	io.Reader
	closes int
}

func (c *closeCounter) Close() error { c.closes++; return nil }

// TestGetBodyCasesEndToEnd sends bodies whose GetBody rewinds the
// request's own reader, returns nothing, or fails: with pacing on, each
// attempt that goes out carries the whole body, and a body that cannot be
// replayed is not retried.
func TestGetBodyCasesEndToEnd(t *testing.T) {
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}],"max_tokens":5}`
	for _, tc := range []struct {
		name     string
		get      func(r *bytes.Reader, rc io.ReadCloser) func() (io.ReadCloser, error)
		statuses []int
		attempts int
		status   int
	}{
		{"same reader", func(r *bytes.Reader, rc io.ReadCloser) func() (io.ReadCloser, error) {
			return func() (io.ReadCloser, error) { r.Seek(0, io.SeekStart); return rc, nil }
		}, []int{429, 200}, 2, 200},
		{"nil, nil", func(*bytes.Reader, io.ReadCloser) func() (io.ReadCloser, error) {
			return func() (io.ReadCloser, error) { return nil, nil }
		}, []int{429, 200}, 1, 429},
		{"error", func(*bytes.Reader, io.ReadCloser) func() (io.ReadCloser, error) {
			return func() (io.ReadCloser, error) { return nil, io.ErrUnexpectedEOF }
		}, []int{503, 200}, 1, 503},
		{"fresh copy", func(*bytes.Reader, io.ReadCloser) func() (io.ReadCloser, error) {
			return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
		}, []int{500, 429, 200}, 3, 200},
	} {
		for _, disabled := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/pacing disabled %v", tc.name, disabled), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					base := &bodyRecorder{statuses: tc.statuses}
					tr := New(Config{Base: base, Pacing: PacingConfig{Disabled: disabled}})
					r := bytes.NewReader([]byte(body))
					cc := &closeCounter{Reader: r}
					req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "https://api.example.com/v1/chat/completions", cc)
					if err != nil {
						t.Fatal(err)
					}
					req.ContentLength = int64(len(body))
					req.GetBody = tc.get(r, cc)
					resp, err := (&http.Client{Transport: tr}).Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != tc.status || len(base.bodies) != tc.attempts {
						t.Errorf("status %d after %d attempts, want %d after %d", resp.StatusCode, len(base.bodies), tc.status, tc.attempts)
					}
					for i, b := range base.bodies {
						if b != body || base.errs[i] != nil {
							t.Errorf("attempt %d sent %q (%v)", i+1, b, base.errs[i])
						}
					}
					if cc.closes == 0 {
						t.Error("the request body was never closed")
					}
				})
			})
		}
	}
}

// okBase reads and closes each request body and answers 200.
type okBase struct{}

func (okBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// benchRoundTrip measures what steady allocates per attempt, pacing on,
// for a body of the given shape: inspection, the attempt's body, the
// permit; the base itself allocates only its response.
func benchRoundTrip(b *testing.B, body []byte) {
	tr := New(Config{Base: okBase{}})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/v1/chat/completions", bytes.NewReader(body))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

func BenchmarkRoundTripBody2KB(b *testing.B)       { benchRoundTrip(b, longChatBody(2048)) }
func BenchmarkRoundTripBody1MiB(b *testing.B)      { benchRoundTrip(b, longChatBody(1<<20)) }
func BenchmarkRoundTripBody4MiB(b *testing.B)      { benchRoundTrip(b, longChatBody(4<<20)) }
func BenchmarkRoundTripBodyImage4MiB(b *testing.B) { benchRoundTrip(b, imageBody(4<<20)) }

// TestLongModelsThroughTransport sends 100 requests with distinct 1 MiB
// model names through a pacing transport: each makes its own partition,
// and what the partitions keep stays bounded.
func TestLongModelsThroughTransport(t *testing.T) {
	const n = 100
	name := bytes.Repeat([]byte("m"), 1<<20)
	body := append(append([]byte(`{"model":"`), name...), `","messages":[{"content":"hi"}]}`...)
	idx := len(`{"model":"`) + len(name) - 8
	tr := New(Config{Base: okBase{}})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		copy(body[idx:], fmt.Sprintf("%08d", i))
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/v1/chat/completions", bytes.NewReader(body))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	snap := tr.Snapshot()
	if len(snap) != n {
		t.Errorf("%d partitions, want %d", len(snap), n)
	}
	for _, s := range snap {
		if len(s.Model) > maxModel {
			t.Fatalf("partition keeps a model of %d bytes", len(s.Model))
		}
	}
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d bytes for %d partitions of distinct 1 MiB model names", grew, n)
	if grew > 10<<20 {
		t.Errorf("heap grew %d bytes", grew)
	}
	runtime.KeepAlive(tr)
}
