package steady

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"sync"
)

// watchedBody is the body of a 2xx response as the caller reads it: the
// upstream's bytes, unchanged and as they come, watched for the usage they
// report (usage.go) and, in a stream, for the kind of each event. When it
// ends (EOF) or is closed, the attempt's permit is settled with the tokens
// used.
type watchedBody struct {
	mu   sync.Mutex // serializes Read and Close; guards what follows
	rc   io.ReadCloser
	pm   *permit
	sse  bool
	scan usageScan
	line lineScan // sse only
	eof  bool
}

// watch wraps the body of resp, a 2xx response to an attempt admitted
// with pm, when there is a permit to settle.
func watch(resp *http.Response, pm *permit) {
	if pm == nil || resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	resp.Body = &watchedBody{rc: resp.Body, pm: pm, sse: isEventStream(resp.Header)}
}

// isEventStream reports a server-sent events response.
func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "text/event-stream"
}

// Read reads from the upstream's body and watches what it returns.
func (b *watchedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.rc.Read(p)
	if n > 0 {
		b.feed(p[:n])
	}
	if err == io.EOF && !b.eof {
		b.eof = true
		b.finishLocked()
	}
	return n, err
}

// feed watches p.
func (b *watchedBody) feed(p []byte) {
	if !b.sse {
		b.scan.feed(p)
		return
	}
	for len(p) > 0 {
		seg := b.line.next(p)
		b.scan.partial = b.line.partial
		b.scan.feed(p[:seg])
		p = p[seg:]
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

// finishLocked settles the permit with the usage read, once.
func (b *watchedBody) finishLocked() {
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
	evPartial  // Anthropic's message_start: usage of the input only
	evTerminal // the stream's last event: [DONE], message_stop, response.completed
	evError    // an error event
)

// linePrefix is how much of a line is kept to tell its kind.
const linePrefix = 40

// lineScan follows the lines of a server-sent events stream, keeping the
// first bytes of each line to tell the kind of its event.
type lineScan struct {
	pre     [linePrefix]byte
	preN    int
	told    bool // the current line's kind is decided
	kind    uint8
	partial bool // the current event is a message_start
	// terminal is set once the stream's last event began.
	terminal bool
	// errorAt is set when an error event began.
	errorSeen bool
}

// next reads p up to and including the end of the current line, or all of
// it, and returns how many bytes it read.
func (l *lineScan) next(p []byte) int {
	i := bytes.IndexByte(p, '\n')
	seg := len(p)
	if i >= 0 {
		seg = i + 1
	}
	if !l.told {
		k := copy(l.pre[l.preN:], p[:seg])
		l.preN += k
		if i >= 0 || l.preN == len(l.pre) {
			l.tell(i >= 0)
		}
	}
	if i >= 0 {
		if l.preN == 1 || l.preN == 2 && l.pre[0] == '\r' {
			l.partial = false // a blank line ends the event
		}
		l.preN, l.told = 0, false
	}
	return seg
}

// tell decides the kind of the current line from its first bytes.
func (l *lineScan) tell(whole bool) {
	l.told = true
	line := l.pre[:l.preN]
	if whole && l.preN < len(l.pre) {
		line = bytes.TrimRight(line, "\r\n")
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
	switch k {
	case evPartial:
		l.partial = true
	case evTerminal:
		l.terminal = true
	case evError:
		l.errorSeen = true
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
		switch string(bytes.TrimRight(v, " \t")) {
		case "message_start":
			return evPartial
		case "message_stop", "response.completed":
			return evTerminal
		case "error":
			return evError
		}
		return evOther
	}
	if bytes.HasPrefix(v, []byte("[DONE]")) {
		return evTerminal
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
	case bytes.HasPrefix(s, []byte(`{"type":"message_start"`)):
		return evPartial
	case bytes.HasPrefix(s, []byte(`{"type":"message_stop"`)), bytes.HasPrefix(s, []byte(`{"type":"response.completed"`)):
		return evTerminal
	}
	return evOther
}
