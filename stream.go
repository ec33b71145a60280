package steady

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// This file guards streams: a 2xx response of server-sent events is read
// ahead until its first content event before it is handed back, so that an
// error event or a stall before that point is retried like the status it
// stands for; after that point, an error event ends the stream with a
// *StreamError (watch.go).

// Defaults of the stream guard (RetryConfig.FirstTokenTimeout and
// FirstTokenBytes).
const (
	defaultFirstTokenTimeout = time.Minute
	defaultFirstTokenBytes   = 64 << 10
)

// maxErrorEvent bounds what is read of an error event in a stream.
const maxErrorEvent = 16 << 10

// StreamError is an error event in a stream after its first content, as
// the caller reads the body: Anthropic's overloaded_error, an
// OpenAI-compatible server's error event, Azure's content filter. The
// body's Read returns it, so that the SDK's stream reports it (errors.As
// finds it in what Stream.Err returns); [ClassifyError] reads it as the
// status it stands for. Before the first content, such an event is
// retried instead, and the caller never sees it.
type StreamError struct {
	// Status is the HTTP status the error stands for: 529 for an
	// overloaded server, 429 for a rate limit, 400 for an invalid request
	// or a content filter, 500 for a server error, or the status the
	// event names.
	Status int
	// Type is the provider's error type or code, such as
	// "overloaded_error"; Message its message. Both are bounded.
	Type, Message string
	// Used is what the stream said it used before the error: the input
	// and output tokens its usage told (zero when it told none).
	Used TokenEstimate

	body []byte // the event's data, for ClassifyError
}

// Error describes the error event.
func (e *StreamError) Error() string {
	return fmt.Sprintf("steady: stream error event (%d %s): %s", e.Status, e.Type, e.Message)
}

// newStreamError reads an error event (its "event:" and "data:" lines).
func newStreamError(event []byte) *StreamError {
	data := eventData(event)
	status, typ, msg := streamErrorStatus(data)
	return &StreamError{Status: status, Type: printable(typ, maxRequestID), Message: printable(msg, maxMessage), body: data}
}

// eventData joins the data lines of one event.
func eventData(event []byte) []byte {
	var out []byte
	for len(event) > 0 {
		line := event
		if i := bytes.IndexByte(event, '\n'); i >= 0 {
			line, event = event[:i], event[i+1:]
		} else {
			event = nil
		}
		line = bytes.TrimRight(line, "\r")
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if len(out) > 0 {
				out = append(out, '\n')
			}
			out = append(out, trimSpace(v)...)
		}
	}
	return out
}

// streamErrorStatus maps an error event's data to the status it stands
// for, its type and its message.
func streamErrorStatus(data []byte) (status int, typ, msg string) {
	e := gjson.GetBytes(data, "error")
	if !e.IsObject() {
		e = gjson.ParseBytes(data)
	}
	typ = e.Get("type").String()
	code := e.Get("code")
	if typ == "" || typ == "error" {
		typ = code.String()
	}
	msg = e.Get("message").String()
	if msg == "" && e.Type == gjson.String {
		msg = e.String()
	}
	for _, r := range []gjson.Result{e.Get("status"), code, e.Get("status_code")} {
		if r.Type == gjson.Number && r.Int() >= 400 && r.Int() <= 599 {
			return int(r.Int()), typ, msg
		}
	}
	// OpenAI's rate limit has the type "requests" or "tokens" and the
	// code "rate_limit_exceeded": the code tells as much as the type.
	k := strings.ToLower(typ + " " + code.String() + " " + e.Get("status").String())
	switch {
	case strings.Contains(k, "overloaded"):
		status = 529
	case strings.Contains(k, "rate_limit"), strings.Contains(k, "too_many_requests"), strings.Contains(k, "resource_exhausted"), strings.Contains(k, "insufficient_quota"):
		status = http.StatusTooManyRequests
	case strings.Contains(k, "content_filter"), strings.Contains(k, "invalid_request"), strings.Contains(k, "invalid_argument"):
		status = http.StatusBadRequest
	case strings.Contains(k, "authentication"):
		status = http.StatusUnauthorized
	case strings.Contains(k, "permission"):
		status = http.StatusForbidden
	case strings.Contains(k, "not_found"):
		status = http.StatusNotFound
	case strings.Contains(k, "request_too_large"):
		status = http.StatusRequestEntityTooLarge
	case strings.Contains(k, "timeout"), strings.Contains(k, "deadline"):
		status = http.StatusGatewayTimeout
	case strings.Contains(k, "unavailable"):
		status = http.StatusServiceUnavailable
	default:
		status = http.StatusInternalServerError
	}
	return status, typ, msg
}

// guardPolicy is the stream guard's configuration, defaults resolved.
type guardPolicy struct {
	off   bool
	wait  time.Duration // 0: no time bound
	bytes int
}

func newGuardPolicy(c RetryConfig) guardPolicy {
	g := guardPolicy{wait: c.FirstTokenTimeout, bytes: c.FirstTokenBytes}
	if g.bytes < 0 {
		return guardPolicy{off: true}
	}
	if g.bytes == 0 {
		g.bytes = defaultFirstTokenBytes
	}
	if g.wait == 0 {
		g.wait = defaultFirstTokenTimeout
	}
	g.wait = max(g.wait, 0)
	return g
}

// Kinds of the events read ahead.
const (
	aheadMore    = iota // not content yet: read on
	aheadContent        // content, or the stream's end: hand the stream over
	aheadError          // an error event: retried as its status
)

// aheadKind tells what an event read ahead is, from its type ("event:")
// and its data.
func aheadKind(typ string, data []byte) uint8 {
	if typ == "error" {
		return aheadError
	}
	d := bytes.TrimSpace(data)
	if len(d) == 0 {
		return aheadMore // a comment or a keep-alive
	}
	if !gjson.ValidBytes(d) {
		return aheadContent // [DONE], or not JSON: the caller's
	}
	if e := gjson.GetBytes(d, "error"); e.Exists() && e.Type != gjson.Null {
		return aheadError
	}
	switch gjson.GetBytes(d, "type").String() {
	case "error", "response.failed", "response.error":
		return aheadError
	case "message_start", "ping", "content_block_start",
		"response.created", "response.in_progress", "response.queued":
		// Before the first output: a Responses stream's first output
		// item (a reasoning item, too) is its content.
		return aheadMore
	case "":
		// A chat completion chunk: content once it carries a choice (its
		// first, of the role, included) or the usage; a chunk of Azure's
		// prompt filter results alone is not.
		if ch := gjson.GetBytes(d, "choices"); ch.IsArray() && len(ch.Array()) == 0 && !gjson.GetBytes(d, "usage").IsObject() {
			return aheadMore
		}
		return aheadContent
	}
	return aheadContent
}

// aheadRead is one Read of a body read ahead.
type aheadRead struct {
	n   int
	err error
}

// guardStream reads a 2xx stream ahead until its first content event,
// within the policy's bounds, and returns the response to go on with: resp
// itself, its body giving back what was read ahead and then the rest; or,
// when an error event or a stall came first, a response of the status it
// stands for (its body the event's data), resp's body closed. ahead is how
// long the read-ahead took. A context that ended returns its error.
func guardStream(ctx context.Context, g guardPolicy, resp *http.Response) (*http.Response, time.Duration, error) {
	start := time.Now()
	rc := resp.Body
	var buf []byte
	chunk := make([]byte, 4<<10)
	results := make(chan aheadRead, 1)
	var timer <-chan time.Time
	if g.wait > 0 {
		t := time.NewTimer(g.wait)
		defer t.Stop()
		timer = t.C
	}
	var ev eventSplitter
	for {
		go func() {
			n, err := rc.Read(chunk)
			results <- aheadRead{n, err}
		}()
		var r aheadRead
		select {
		case r = <-results:
		case <-timer:
			rc.Close()
			return stalled(resp, g.wait), time.Since(start), nil
		case <-ctx.Done():
			rc.Close()
			return nil, time.Since(start), ctx.Err()
		}
		buf = append(buf, chunk[:r.n]...)
		kind, event := ev.scan(buf)
		switch {
		case kind == aheadError:
			rc.Close()
			return failedStream(resp, event), time.Since(start), nil
		case kind == aheadContent || r.err != nil || len(buf) >= g.bytes:
			resp.Body = &aheadBody{pre: buf, rc: rc, err: r.err}
			return resp, time.Since(start), nil
		}
	}
}

// eventSplitter finds the complete events in what was read ahead.
type eventSplitter struct {
	off int // where the next event begins
}

// scan reads the events of buf that are complete and not yet read, and
// returns the first that decides (content or error, with its bytes), or
// aheadMore.
func (s *eventSplitter) scan(buf []byte) (uint8, []byte) {
	for {
		rest := buf[s.off:]
		end, next := eventEnd(rest)
		if end < 0 {
			return aheadMore, nil
		}
		event := rest[:end]
		s.off += next
		typ := ""
		for _, line := range bytes.Split(event, []byte("\n")) {
			if v, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("event:")); ok {
				typ = string(trimSpace(v))
			}
		}
		if k := aheadKind(typ, eventData(event)); k != aheadMore {
			return k, event
		}
	}
}

// eventEnd returns the length of the first event of b (up to its blank
// line) and where the next begins; -1 when b holds no complete event.
func eventEnd(b []byte) (end, next int) {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		j := i + 1
		if j < len(b) && b[j] == '\r' {
			j++
		}
		if j < len(b) && b[j] == '\n' {
			return i, j + 1
		}
		if i == 0 || (i == 1 && b[0] == '\r') {
			return i, i + 1 // a blank line first
		}
	}
	return -1, 0
}

// failedStream is the response a stream's error event before its first
// content stands for.
func failedStream(resp *http.Response, event []byte) *http.Response {
	data := eventData(event)
	status, _, _ := streamErrorStatus(data)
	return synthetic(resp, status, data)
}

// stalled is the response a stream that sent no content within the
// guard's time bound stands for: a 504.
func stalled(resp *http.Response, d time.Duration) *http.Response {
	body := `{"error":{"type":"stream_stalled","message":"steady: the stream sent no content in ` + d.String() + `"}}`
	return synthetic(resp, http.StatusGatewayTimeout, []byte(body))
}

// synthetic is a response of status with body, and resp's headers (its
// rate limits and request id), in place of resp.
func synthetic(resp *http.Response, status int, body []byte) *http.Response {
	h := resp.Header.Clone()
	if h == nil {
		h = make(http.Header, 1)
	}
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         resp.Proto,
		ProtoMajor:    resp.ProtoMajor,
		ProtoMinor:    resp.ProtoMinor,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       resp.Request,
	}
}

// aheadBody gives back what was read ahead, exactly as received, then the
// rest of the body.
type aheadBody struct {
	pre []byte
	rc  io.ReadCloser
	err error // what the last read ahead returned, after pre
}

func (b *aheadBody) Read(p []byte) (int, error) {
	if len(b.pre) > 0 {
		n := copy(p, b.pre)
		b.pre = b.pre[n:]
		if len(b.pre) == 0 {
			b.pre = nil
		}
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.rc.Read(p)
}

func (b *aheadBody) Close() error { return b.rc.Close() }

// cancelBody is the body of an attempt that has a context of its own
// (see call.send): Close closes the upstream's body and then cancels that
// context, which ends a Read that Close alone does not (a transport that
// stops reading when the request's context ends).
type cancelBody struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Read(p []byte) (int, error) { return b.rc.Read(p) }

func (b *cancelBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

// fail counts one failure against the upstream outside an attempt's slot:
// an error event in a stream whose attempt counted a success. nil-safe.
func (b *breaker) fail() {
	if b == nil {
		return
	}
	if s, err := b.allow(); err == nil {
		b.report(s, errBreakerFailure)
	}
}

// deferReport hands the breaker slot of a stream's attempt to its body,
// which reports it when the stream ends: a success, or a failure if an
// error event ends it (so that a stream failing after its first token
// counts as one failure, not a success and a failure). It reports whether
// it did. A probe's verdict is not deferred: it is known at the first
// content.
func deferReport(resp *http.Response, s breakerSlot, outcome error) bool {
	if outcome != nil || s.done == nil || s.probe || resp == nil {
		return false
	}
	w, ok := resp.Body.(*watchedBody)
	if !ok || !w.sse {
		return false
	}
	w.slot = s // not yet shared: the caller has not got resp
	return true
}
