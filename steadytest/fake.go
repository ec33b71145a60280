package steadytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
// The zero value is an empty 200 OK.
type Response struct {
	// Status is the HTTP status code. Zero means 200.
	Status int

	// Header holds the response headers. It may be nil. Each answer gets
	// its own copy, so a Response can be reused.
	Header http.Header

	// Body is the response body. With Chunks, it is sent first, at once.
	Body string

	// Delay is how long the Fake waits before the response headers arrive.
	// The wait ends early, with the context's error, when the request's
	// context ends.
	Delay time.Duration

	// Err, if set, is returned by RoundTrip instead of a response, after
	// Delay.
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
	// Method is the request's HTTP method.
	Method string
	// Path is the request URL's path.
	Path string
	// URL is a copy of the request's URL.
	URL *url.URL
	// Header is a copy of the request's headers.
	Header http.Header
	// Body is everything read from the request's body (nil if it had none).
	Body []byte
	// Time is when the request arrived (time.Now, so fake inside a
	// synctest bubble).
	Time time.Time
	// N is the request's position among all requests the Fake has seen,
	// counting from 1.
	N int
}

// MatchPath returns a matcher for [Fake.On] and [Fake.OnFunc]: it matches
// a request whose URL path is p or ends with p, so that
// MatchPath("/chat/completions") matches "/v1/chat/completions". Any
// func(*Request) bool is a matcher; write one for a method, a header or a
// body.
func MatchPath(p string) func(*Request) bool {
	return func(r *Request) bool { return r.Path == p || strings.HasSuffix(r.Path, p) }
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

	// KeepRequests bounds how many requests Requests returns: only the
	// most recent KeepRequests are kept. Zero keeps all of them; negative
	// keeps none (Calls still counts them), for benchmarks.
	KeepRequests int

	t        testing.TB // set by NewFakeT
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
// order, before the sequence. Once they are used up, such requests fall
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
	if k := f.KeepRequests; k > 0 && len(reqs) > k {
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
	rec := &Request{
		Method: req.Method,
		URL:    cloneURL(req.URL),
		Header: req.Header.Clone(),
		Body:   body,
		Time:   time.Now(),
	}
	if rec.Method == "" {
		rec.Method = http.MethodGet
	}
	if rec.URL != nil {
		rec.Path = rec.URL.Path
	}
	if rec.Header == nil {
		rec.Header = http.Header{}
	}

	resp, ok := f.next(rec)
	if !ok {
		err := fmt.Errorf("%w for %s %s (request %d)", ErrNoResponse, rec.Method, rec.Path, rec.N)
		if f.t != nil {
			f.t.Errorf("%v", err)
		}
		return nil, err
	}
	return respond(req, resp, nil)
}

// next records rec and picks its response. Matchers and answer functions
// run without the lock held, so they may call the Fake's methods.
func (f *Fake) next(rec *Request) (Response, bool) {
	f.mu.Lock()
	f.calls++
	rec.N = f.calls
	if f.KeepRequests >= 0 {
		f.reqs = append(f.reqs, rec)
	}
	if k := f.KeepRequests; k > 0 && len(f.reqs) >= 2*k {
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
			return m.fn(rec), true
		}
		f.mu.Lock()
		if len(m.rs) > 0 {
			r := m.rs[0]
			m.rs[0] = Response{}
			m.rs = m.rs[1:]
			f.mu.Unlock()
			return r, true
		}
		f.mu.Unlock()
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seq) > 0 {
		r := f.seq[0]
		f.seq[0] = Response{}
		f.seq = f.seq[1:]
		return r, true
	}
	if f.Fallback != nil {
		return *f.Fallback, true
	}
	return Response{}, false
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

func cloneURL(u *url.URL) *url.URL {
	if u == nil {
		return nil
	}
	u2 := *u
	if u.User != nil {
		u2.User = new(url.Userinfo)
		*u2.User = *u.User
	}
	return &u2
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

// respond turns r into an answer to req, honouring Delay, Err and Chunks.
// onDone, if not nil, is called once the answer is complete: at once for a
// plain body or an error, at the stream's end for Chunks.
func respond(req *http.Request, r Response, onDone func()) (*http.Response, error) {
	if onDone == nil {
		onDone = func() {}
	}
	ctx := req.Context()
	if err := wait(ctx, r.Delay, nil); err != nil {
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
	h := r.Header.Clone()
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
