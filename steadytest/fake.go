package steadytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ErrNoResponse is returned, wrapped, by [Fake.RoundTrip] when a request
// finds no scripted response: the sequence ran out, or no matcher matched
// and the sequence is empty.
var ErrNoResponse = errors.New("steadytest: no scripted response")

// Response is one scripted answer of a [Fake].
//
// The zero value is an empty 200 OK. [Response.WithHeader] sets its
// headers and [Response.WithDelay] delays it.
type Response struct {
	// Status is the HTTP status code. Zero means 200.
	Status int

	// header holds the response headers, set with WithHeader. It may be
	// nil. Each answer gets its own copy, so a Response can be reused.
	header http.Header

	// Body is the response body. With Chunks, it is sent first, at once.
	Body string

	// delay is how long the Fake waits before the response headers
	// arrive, set with WithDelay. The wait ends early, with the context's
	// error, when the request's context ends.
	delay time.Duration

	// Err, if set, is returned by RoundTrip instead of a response, after
	// the delay.
	Err error

	// Chunks makes the body a stream: each chunk is written after its own
	// delay, after Body (if any). The stream ends when the last chunk has
	// been written, when the reader closes the body, or when the request's
	// context ends.
	Chunks []Chunk
}

// Chunk is one piece of a streamed response body.
type Chunk struct {
	// Delay is how long after the previous chunk (or after the headers)
	// this chunk arrives.
	Delay time.Duration

	// Data is what the chunk carries.
	Data string

	// Err, if set, ends the stream after Data: the body's Read returns Err,
	// as when a connection breaks in the middle of a response.
	Err error
}

// Request is a request recorded by a [Fake].
type Request struct {
	// Request is a copy of the request the Fake saw (req.Clone): its
	// Method (never empty), URL, Header (never nil) and the rest. Its body
	// has been read and closed: it is http.NoBody, and what it held is in
	// Body.
	*http.Request
	// Body is everything read from the request's body (nil if it had none).
	Body []byte
	// Time is when the request arrived (time.Now, so fake inside a
	// synctest bubble).
	Time time.Time
}

// Fake is an [http.RoundTripper] that answers requests from a script and
// records every request it sees. It never touches the network, so it runs
// inside testing/synctest bubbles.
//
// Requests are answered first by the matchers registered with [Fake.On] and
// [Fake.OnFunc], in the order they were registered, then by the sequence
// given to [NewFake] and [Fake.Add], in order. When nothing is left,
// RoundTrip returns an error wrapping [ErrNoResponse] and, for a Fake made
// by [NewFakeT], reports it with t.Errorf.
//
// The zero value is a Fake with an empty script. A Fake is safe for
// concurrent use. Set its fields before first use.
type Fake struct {
	// Fallback, if set, answers every request that finds no scripted
	// response, instead of an error: a Fake that always succeeds.
	Fallback *Response

	t testing.TB // set by NewFakeT
	// keep bounds how many requests Requests returns: only the most
	// recent keep are kept. Zero keeps all of them; negative keeps none
	// (Calls still counts them), for this package's benchmarks.
	keep int

	mu       sync.Mutex
	seq      []Response // guarded by mu
	matchers []*matched // guarded by mu
	reqs     []*Request // guarded by mu
	calls    int        // guarded by mu
}

type matched struct {
	m  func(*Request) bool
	rs []Response              // guarded by Fake.mu
	fn func(*Request) Response // answers every match when set
}

var _ http.RoundTripper = (*Fake)(nil)

// NewFake returns a Fake that answers requests with responses, in order.
func NewFake(responses ...Response) *Fake {
	f := &Fake{}
	f.Add(responses...)
	return f
}

// NewFakeT returns a Fake that answers requests with responses, in order,
// and reports a request that finds no scripted response with t.Errorf.
func NewFakeT(t testing.TB, responses ...Response) *Fake {
	f := NewFake(responses...)
	f.t = t
	return f
}

// Add appends responses to the sequence.
func (f *Fake) Add(responses ...Response) {
	f.mu.Lock()
	f.seq = append(f.seq, responses...)
	f.mu.Unlock()
}

// On answers the requests that match reports true for with responses, in
// order, before the sequence. A matcher is any func(*Request) bool, for a
// path, a method, a header or a body. Once they are used up, such requests fall
// through to later matchers and then to the sequence. A nil match matches
// every request. match may be called from several goroutines at once.
func (f *Fake) On(match func(*Request) bool, responses ...Response) {
	f.mu.Lock()
	// A new slice, so that next can range over a snapshot without the lock.
	f.matchers = append(f.matchers[:len(f.matchers):len(f.matchers)],
		&matched{m: match, rs: append([]Response(nil), responses...)})
	f.mu.Unlock()
}

// OnFunc answers every request that match reports true for with fn's
// response, before the sequence and the matchers registered after it. It
// never runs out. A nil match matches every request. match and fn may be
// called from several goroutines at once.
func (f *Fake) OnFunc(match func(*Request) bool, fn func(*Request) Response) {
	f.mu.Lock()
	f.matchers = append(f.matchers[:len(f.matchers):len(f.matchers)], &matched{m: match, fn: fn})
	f.mu.Unlock()
}

// Requests returns the requests seen so far, in the order they arrived.
func (f *Fake) Requests() []*Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	reqs := f.reqs
	if k := f.keep; k > 0 && len(reqs) > k {
		reqs = reqs[len(reqs)-k:]
	}
	return append([]*Request(nil), reqs...)
}

// Calls returns how many requests the Fake has seen. With n scripted
// responses (given to NewFake, Add and On) and no Fallback or OnFunc,
// Calls() == n says that every one was used.
func (f *Fake) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// RoundTrip records req and answers it with the next scripted response.
// It reads and closes req's body. A request whose context has already ended
// is neither recorded nor answered: RoundTrip returns the context's error.
func (f *Fake) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := readRequestBody(req)
	if err != nil {
		return nil, err
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	clone := req.Clone(ctx)
	clone.Body, clone.GetBody, clone.ContentLength = http.NoBody, nil, int64(len(body))
	if clone.Method == "" {
		clone.Method = http.MethodGet
	}
	if clone.Header == nil {
		clone.Header = http.Header{}
	}
	rec := &Request{Request: clone, Body: body, Time: time.Now()}
	path := ""
	if clone.URL != nil {
		path = clone.URL.Path
	}

	resp, n, ok := f.next(rec)
	if !ok {
		err := fmt.Errorf("%w for %s %s (request %d)", ErrNoResponse, clone.Method, path, n)
		if f.t != nil {
			f.t.Errorf("%v", err)
		}
		return nil, err
	}
	return respond(req, resp, nil)
}

// next records rec and picks its response; n is rec's position among all
// requests the Fake has seen, counting from 1. Matchers and answer
// functions run without the lock held, so they may call the Fake's methods.
func (f *Fake) next(rec *Request) (r Response, n int, ok bool) {
	f.mu.Lock()
	f.calls++
	n = f.calls
	if f.keep >= 0 {
		f.reqs = append(f.reqs, rec)
	}
	if k := f.keep; k > 0 && len(f.reqs) >= 2*k {
		// Copy down rather than reslice so old requests can be collected;
		// only every k requests, so recording stays O(1) amortized.
		n := copy(f.reqs, f.reqs[len(f.reqs)-k:])
		clear(f.reqs[n:])
		f.reqs = f.reqs[:n]
	}
	matchers := f.matchers
	f.mu.Unlock()

	for _, m := range matchers {
		if m.m != nil && !m.m(rec) {
			continue
		}
		if m.fn != nil {
			return m.fn(rec), n, true
		}
		f.mu.Lock()
		if len(m.rs) > 0 {
			r = m.rs[0]
			m.rs[0] = Response{}
			m.rs = m.rs[1:]
			f.mu.Unlock()
			return r, n, true
		}
		f.mu.Unlock()
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seq) > 0 {
		r = f.seq[0]
		f.seq[0] = Response{}
		f.seq = f.seq[1:]
		return r, n, true
	}
	if f.Fallback != nil {
		return *f.Fallback, n, true
	}
	return Response{}, n, false
}

// readRequestBody reads and closes req's body, as a real transport does.
// An empty body reads as nil.
func readRequestBody(req *http.Request) ([]byte, error) {
	if req.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("steadytest: reading request body: %w", err)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}

// wait sleeps d, or until ctx ends (returning its error), or until stop is
// closed (returning errStopped). stop may be nil.
func wait(ctx context.Context, d time.Duration, stop <-chan struct{}) error {
	if d <= 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return errStopped
	}
}

var errStopped = errors.New("steadytest: stream closed by reader")

// respond turns r into an answer to req, honouring its delay, Err and
// Chunks.
// onDone, if not nil, is called once the answer is complete: at once for a
// plain body or an error, at the stream's end for Chunks.
func respond(req *http.Request, r Response, onDone func()) (*http.Response, error) {
	if onDone == nil {
		onDone = func() {}
	}
	ctx := req.Context()
	if err := wait(ctx, r.delay, nil); err != nil {
		onDone()
		return nil, err
	}
	if r.Err != nil {
		onDone()
		return nil, r.Err
	}
	status := r.Status
	if status == 0 {
		status = http.StatusOK
	}
	h := r.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	resp := &http.Response{
		Status:     statusLine(status),
		StatusCode: status,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Request:    req,
	}
	if len(r.Chunks) == 0 {
		resp.Body = io.NopCloser(strings.NewReader(r.Body))
		resp.ContentLength = int64(len(r.Body))
		if req.Method == http.MethodHead {
			resp.Body = http.NoBody
		}
		onDone()
		return resp, nil
	}
	resp.ContentLength = -1
	resp.Body = stream(ctx, r.Body, r.Chunks, onDone)
	return resp, nil
}

func statusLine(code int) string {
	if text := http.StatusText(code); text != "" {
		return strconv.Itoa(code) + " " + text
	}
	return strconv.Itoa(code) + " status code " + strconv.Itoa(code)
}

// streamBody is the reading end of a streamed body. Closing it stops the
// writer.
type streamBody struct {
	*io.PipeReader
	once sync.Once
	stop chan struct{}
}

func (b *streamBody) Close() error {
	b.once.Do(func() { close(b.stop) })
	return b.PipeReader.Close()
}

// stream returns a body fed by a goroutine that writes first, then each
// chunk after its delay, and calls onDone when it ends.
func stream(ctx context.Context, first string, chunks []Chunk, onDone func()) io.ReadCloser {
	pr, pw := io.Pipe()
	b := &streamBody{PipeReader: pr, stop: make(chan struct{})}
	// A write blocked on a reader that stopped reading must also end when
	// the request's context does.
	stopWatch := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	go func() {
		defer onDone()
		defer stopWatch()
		write := func(s string) error {
			if s == "" {
				return nil
			}
			_, err := io.WriteString(pw, s)
			return err
		}
		if err := write(first); err != nil {
			pw.CloseWithError(err)
			return
		}
		for _, c := range chunks {
			if err := wait(ctx, c.Delay, b.stop); err != nil {
				pw.CloseWithError(err)
				return
			}
			if err := write(c.Data); err != nil {
				pw.CloseWithError(err)
				return
			}
			if c.Err != nil {
				pw.CloseWithError(c.Err)
				return
			}
		}
		pw.Close()
	}()
	return b
}
