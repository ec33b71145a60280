package steady

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// drip is a body that yields one byte every interval; Close ends a read
// under way.
type drip struct {
	data     []byte
	interval time.Duration
	once     sync.Once
	closed   chan struct{}
}

func newDrip(data string, interval time.Duration) *drip {
	return &drip{data: []byte(data), interval: interval, closed: make(chan struct{})}
}

func (d *drip) Read(p []byte) (int, error) {
	if len(d.data) == 0 {
		return 0, io.EOF
	}
	select {
	case <-time.After(d.interval):
	case <-d.closed:
		return 0, io.ErrClosedPipe
	}
	n := copy(p[:min(len(p), 1)], d.data)
	d.data = d.data[n:]
	return n, nil
}

func (d *drip) Close() error { d.once.Do(func() { close(d.closed) }); return nil }

// dripBody is a JSON error of about 2,000 bytes: 100 s at 50 ms a byte.
var dripBody = `{"error": {"message": "overloaded", "type": "server_error"}, "pad": "` + strings.Repeat("p", 1900) + `"}`

func TestClassifyDrippingBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		resp := &http.Response{StatusCode: 503, Header: http.Header{}, Body: newDrip(dripBody, 50*time.Millisecond), ContentLength: -1}
		start := time.Now()
		f := ClassifyResponse(resp)
		if el := time.Since(start); el > errorBodyWait+50*time.Millisecond {
			t.Errorf("classification took %v", el)
		}
		if !f.Retryable || f.Status != 503 || f.Message == "" {
			t.Errorf("%+v", f)
		}
		// The body still yields every byte: what was read, the read under
		// way, then the rest.
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != dripBody {
			t.Errorf("body after classification: %d bytes, %v", len(got), err)
		}
		resp.Body.Close()
	})
}

func TestClassifyStalledBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrip("{}", time.Hour)
		resp := &http.Response{StatusCode: 429, Header: http.Header{}, Body: d, ContentLength: -1}
		start := time.Now()
		if f := ClassifyResponse(resp); !f.Retryable {
			t.Errorf("%+v", f)
		}
		if el := time.Since(start); el > errorBodyWait {
			t.Errorf("classification took %v", el)
		}
		// Closing ends the read under way.
		resp.Body.Close()
		synctest.Wait()
	})
}

// TestDrippingBodyThroughTransport retries after a dripping 503, then
// hands back a dripping 503 whole when it gives up: the call is held for
// the bounded reads, not for the bodies.
func TestDrippingBodyThroughTransport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			calls++
			if req.Body != nil {
				io.Copy(io.Discard, req.Body)
				req.Body.Close()
			}
			return &http.Response{StatusCode: 503, Header: http.Header{"Retry-After": {"0"}},
				Body: newDrip(dripBody, 50*time.Millisecond), ContentLength: -1, Request: req}, nil
		})
		tr := New(Config{Base: base, Retry: RetryConfig{MaxRetries: 2}})
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/v1/chat/completions", bytes.NewReader([]byte(`{"model":"m"}`)))
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); calls != 3 || el > 3*errorBodyWait+time.Second {
			t.Errorf("%d attempts took %v", calls, el)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != dripBody {
			t.Errorf("final body: %d bytes, %v", len(got), err)
		}
		resp.Body.Close()
		if f := ClassifyResponse(resp); f.GaveUp != "retries exhausted" || !f.Retryable {
			t.Errorf("%+v", f)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestKeepErrorBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A classified body that dripped is kept as read and closed.
		d := newDrip(dripBody, 50*time.Millisecond)
		_, eb := readErrorBody(d, -1, maxErrorBody, errorBodyWait)
		start := time.Now()
		b, err := keepErrorBody(eb, maxDrain)
		if err != nil || len(b) == 0 || !strings.HasPrefix(dripBody, string(b)) || time.Since(start) > time.Millisecond {
			t.Errorf("%d bytes, %v, %v", len(b), err, time.Since(start))
		}
		// A body not classified is read within the wait.
		start = time.Now()
		b, _ = keepErrorBody(newDrip(dripBody, 50*time.Millisecond), maxDrain)
		if el := time.Since(start); el > 2*errorBodyWait+100*time.Millisecond || len(b) == 0 {
			t.Errorf("%d bytes in %v", len(b), el)
		}
		synctest.Wait()
	})
}

// TestClassifyTwice classifies a dripping body, as steady does, then
// again, as its caller may: the second reads nothing more.
func TestClassifyTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		resp := &http.Response{StatusCode: 503, Header: http.Header{}, Body: newDrip(dripBody, 50*time.Millisecond), ContentLength: -1}
		f1 := ClassifyResponse(resp)
		start := time.Now()
		f2 := ClassifyResponse(resp)
		if time.Since(start) != 0 || f1 != f2 {
			t.Errorf("second classification took %v: %+v, first %+v", time.Since(start), f2, f1)
		}
		if got, err := io.ReadAll(resp.Body); err != nil || string(got) != dripBody {
			t.Errorf("body: %d bytes, %v", len(got), err)
		}
		resp.Body.Close()
	})
}

// countingBody records how much of it was read and whether it was closed.
type countingBody struct {
	r      io.Reader
	read   int
	closed bool
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

func (c *countingBody) Close() error { c.closed = true; return nil }

// TestDiscardDrainsPastPrefix drains an error body of 100 KiB to its end
// after classification, so that its connection can be reused.
func TestDiscardDrainsPastPrefix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		data := strings.Repeat("x", 100<<10)
		cb := &countingBody{r: strings.NewReader(data)}
		resp := &http.Response{StatusCode: 500, Header: http.Header{}, Body: cb, ContentLength: int64(len(data))}
		ClassifyResponse(resp)
		b, err := keepErrorBody(resp.Body, maxDrain)
		if len(b) != maxErrorBody || err != nil {
			t.Errorf("kept %d bytes, %v", len(b), err)
		}
		if cb.read != len(data) || !cb.closed {
			t.Errorf("read %d of %d bytes, closed %v", cb.read, len(data), cb.closed)
		}
	})
}
