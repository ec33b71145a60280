package steady

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// watchedBody is the body of a 2xx response as the caller reads it: the
// upstream's bytes, unchanged and as they come, watched for the usage they
// report (usage.go) and, in a stream, for the kind of each event. When it
// ends (EOF) or is closed, the attempt's permit is settled with the tokens
// used. In a stream, an error event ends the body with a *StreamError: its
// bytes are not handed on, so that the line that begins an event is held
// back (at most linePrefix bytes, only while a read ends inside them)
// until its kind is known.
type watchedBody struct {
	mu   sync.Mutex // serializes Read and Close; guards what follows
	rc   io.ReadCloser
	pm   *permit
	br   *breaker
	sse  bool
	scan usageScan
	line lineScan // sse only
	eof  bool

	hold  [linePrefix]byte // the start of an undecided line, held back
	holdN int
	inErr bool   // an error event began: it is read, then err returned
	errEv []byte // the error event's bytes read so far
	err   error  // the *StreamError every Read returns once reached

	// slot is the attempt's breaker slot, when the stream's end reports
	// it (see deferReport).
	slot breakerSlot
}

// watch wraps the body of resp, a 2xx response to an attempt admitted
// with pm (nil when pacing is off) through breaker br. A stream is always
// watched (its error events end it with a *StreamError). Another body is
// watched only when its usage will be used (need: the pacer settles by
// usage, or events are observed) and it may be JSON: otherwise it is
// handed over as it came, at no cost.
func watch(resp *http.Response, pm *permit, br *breaker, need bool) {
	if resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	ct := resp.Header.Get("Content-Type")
	sse := isEventStreamType(ct)
	if !sse && (pm == nil || !need || !mayBeJSON(ct)) {
		return
	}
	resp.Body = &watchedBody{rc: resp.Body, pm: pm, br: br, sse: sse}
}

// isEventStream reports a server-sent events response.
func isEventStream(h http.Header) bool { return isEventStreamType(h.Get("Content-Type")) }

// isEventStreamType reports a Content-Type of server-sent events.
func isEventStreamType(ct string) bool {
	// Every successful response asks this: a cut and a case-insensitive
	// compare, not mime.ParseMediaType's map of parameters.
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// mayBeJSON reports whether a body of Content-Type ct may tell its usage:
// JSON (application/json, any +json type), text/plain (that some
// gateways send JSON as), or no type at all. Audio, images and HTML are
// not read.
func mayBeJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	if mt == "" || strings.EqualFold(mt, "text/plain") {
		return true
	}
	return len(mt) >= 4 && strings.EqualFold(mt[len(mt)-4:], "json")
}

// Read reads from the upstream's body and watches what it returns.
func (b *watchedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sse {
		return b.readStream(p)
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		b.scan.feed(p[:n])
	}
	if err == io.EOF && !b.eof {
		b.eof = true
		b.finishLocked()
	}
	return n, err
}

// readStream is Read for a stream.
func (b *watchedBody) readStream(p []byte) (int, error) {
	for {
		if b.err != nil {
			return 0, b.err
		}
		if b.inErr {
			b.readErrorEvent()
			continue
		}
		if len(p) == 0 {
			return 0, nil
		}
		k, cur := 0, -1 // the start of the current line in p, when in it
		if b.holdN > 0 {
			if len(p) <= b.holdN {
				// Too small a read to hold back in: the line goes on
				// undecided.
				k = copy(p, b.hold[:b.holdN])
				b.holdN = copy(b.hold[:], b.hold[k:b.holdN])
				return k, nil
			}
			k, cur = copy(p, b.hold[:b.holdN]), 0
			b.holdN = 0
		} else if b.line.atStart() {
			cur = 0
		}
		n, err := b.rc.Read(p[k:])
		data := p[:k+n]
		errAt := -1
		for i := k; i < len(data); {
			seg, decided := b.line.next(data[i:])
			if decided && b.line.kind == evError && cur >= 0 {
				errAt = cur
				break
			}
			i += seg
			if data[i-1] == '\n' {
				cur = i
			}
		}
		if errAt >= 0 {
			b.scan.feed(data[k:max(errAt, k)])
		} else {
			b.scan.feed(data[k:])
		}
		if errAt >= 0 {
			b.errEv = append(b.errEv[:0], data[errAt:]...)
			b.inErr = true
			if err != nil {
				b.errEv = append(b.errEv, "\n\n"...) // the stream ends here
			}
			if errAt > 0 {
				return errAt, nil
			}
			continue
		}
		deliver := len(data)
		if err == nil && cur >= 0 && cur < len(data) && !b.line.told {
			b.holdN = copy(b.hold[:], data[cur:])
			deliver = cur
		}
		if err == io.EOF && !b.eof {
			b.eof = true
			b.finishLocked()
		}
		if deliver == 0 && err == nil {
			continue
		}
		return deliver, err
	}
}

// readErrorEvent reads the rest of the error event that began (bounded),
// and makes the *StreamError every later Read returns. A server error
// counts against the upstream's breaker: the attempt counted a success
// when its headers came.
func (b *watchedBody) readErrorEvent() {
	var buf [512]byte
	for {
		if end, _ := eventEnd(b.errEv); end >= 0 {
			b.errEv = b.errEv[:end]
			break
		}
		if len(b.errEv) >= maxErrorEvent {
			break
		}
		n, err := b.rc.Read(buf[:])
		b.errEv = append(b.errEv, buf[:n]...)
		if err != nil {
			break
		}
	}
	se := newStreamError(b.errEv)
	if u, _, ok := b.scan.result(); ok {
		se.Used = u
	}
	b.inErr, b.errEv = false, nil
	b.err = se
	if se.Status == http.StatusTooManyRequests {
		// A rate limit after the first token: the partition is paced
		// as after a 429 (a quota refused is not a pause).
		now := time.Now()
		if f := classify(se.Status, nil, se.body, now, nil); !keyRefused(f) {
			b.pm.streamLimited(f.RetryAfter, f.HasRetryAfter, now)
		}
	}
	switch {
	case se.Status < 500:
		b.reportLocked(nil)
	case b.slot.done != nil:
		b.reportLocked(errBreakerFailure)
	default:
		b.br.fail() // the attempt's slot was reported already (a probe)
	}
	b.finishLocked()
}

// reportLocked reports the attempt's breaker slot, if the body holds it.
func (b *watchedBody) reportLocked(outcome error) {
	if b.slot.done != nil {
		s := b.slot
		b.slot = breakerSlot{}
		b.br.report(s, outcome)
	}
}

// Close closes the upstream's body and settles what was read.
func (b *watchedBody) Close() error {
	err := b.rc.Close()
	b.mu.Lock()
	b.finishLocked()
	b.mu.Unlock()
	return err
}

// finishLocked settles the permit with the usage read, once, and reports
// the breaker slot it holds as a success.
func (b *watchedBody) finishLocked() {
	b.reportLocked(nil)
	if b.pm == nil {
		return
	}
	pm := b.pm
	b.pm = nil
	u, outOK, ok := b.scan.result()
	if !ok {
		return // nothing told: the estimate stands
	}
	if b.sse && !b.eof && !b.line.terminal {
		outOK = false // closed before the stream's end: the output is not final
	}
	pm.used(u, outOK)
}

// Event kinds a stream's lines tell.
const (
	evOther    = iota
	evTerminal // the stream's last event: [DONE], message_stop, response.completed
	evError    // an error event
)

// linePrefix is how much of a line is kept to tell its kind.
const linePrefix = 40

// lineScan follows the lines of a server-sent events stream, keeping the
// first bytes of each line to tell the kind of its event.
type lineScan struct {
	pre  [linePrefix]byte
	preN int
	told bool // the current line's kind is decided
	kind uint8
	// terminal is set once the stream's last event began.
	terminal bool
	mid      bool // inside a line
}

// atStart reports whether the next byte begins a line.
func (l *lineScan) atStart() bool { return !l.mid }

// next reads p up to and including the end of the current line, or all of
// it, and returns how many bytes it read and whether the line's kind was
// decided by them.
func (l *lineScan) next(p []byte) (seg int, decided bool) {
	i := bytes.IndexByte(p, '\n')
	seg = len(p)
	if i >= 0 {
		seg = i + 1
	}
	l.mid = i < 0
	if !l.told {
		k := copy(l.pre[l.preN:], p[:seg])
		l.preN += k
		if i >= 0 || l.preN == len(l.pre) {
			l.tell(i >= 0)
			decided = true
		}
	}
	if i >= 0 {
		l.preN, l.told = 0, false
	}
	return seg, decided
}

// tell decides the kind of the current line from its first bytes.
func (l *lineScan) tell(whole bool) {
	l.told = true
	line := l.pre[:l.preN]
	for whole && len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	var k uint8
	switch {
	case bytes.HasPrefix(line, []byte("event:")):
		k = eventKind(trimSpace(line[len("event:"):]), false)
	case bytes.HasPrefix(line, []byte("data:")):
		k = eventKind(trimSpace(line[len("data:"):]), true)
	default:
		return
	}
	if k == evTerminal {
		l.terminal = true
	}
	l.kind = k
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// eventKind tells an event's kind from an "event:" line's value, or the
// start of a "data:" line's JSON.
func eventKind(v []byte, data bool) uint8 {
	if !data {
		for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			v = v[:len(v)-1]
		}
		switch string(v) {
		case "message_stop", "response.completed":
			return evTerminal
		case "error":
			return evError
		}
		return evOther
	}
	if len(v) < 3 || v[0] != '{' {
		if bytes.HasPrefix(v, []byte("[DONE]")) {
			return evTerminal
		}
		return evOther
	}
	if v[1] == '"' && v[2] != 'e' && v[2] != 't' {
		return evOther // compact JSON whose first member is neither "error" nor "type"
	}
	// The JSON's first member, without its spaces.
	var b [linePrefix]byte
	n := 0
	for _, c := range v {
		if c != ' ' && c != '\t' {
			b[n] = c
			n++
		}
	}
	s := b[:n]
	switch {
	case bytes.HasPrefix(s, []byte(`{"error"`)), bytes.HasPrefix(s, []byte(`{"type":"error"`)):
		return evError
	case bytes.HasPrefix(s, []byte(`{"type":"message_stop"`)), bytes.HasPrefix(s, []byte(`{"type":"response.completed"`)):
		return evTerminal
	}
	return evOther
}
