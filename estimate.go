package steady

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"math/bits"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/steady-go/steady/internal/ascii"
)

// TokenEstimate is how many tokens a request is expected to count against a
// provider's token limits when it arrives: its prompt (Input) and the most
// it may generate (Output), each times the number of choices asked for.
type TokenEstimate struct {
	Input  int64 // prompt tokens
	Output int64 // maximum completion tokens, times n
}

// Total returns Input + Output, what a combined tokens window counts.
func (e TokenEstimate) Total() int64 { return e.Input + e.Output }

// estimator is the type of [PacingConfig.Estimator].
type estimator = func(req *http.Request, body io.Reader) TokenEstimate

// charsPerToken is the default estimate's ratio: about four bytes of text
// make one token for English text with the tokenizers of current models.
const charsPerToken = 4

// maxN caps the n parameter: no provider accepts more than 128 choices.
const maxN = 128

// maxTokensValue caps every number read from a body, so that no sum can
// overflow.
const maxTokensValue = 1 << 40

// maxModel bounds the model name inspectRequest returns. A longer name is
// cut and suffixed with a hash of the whole name, so distinct long names
// stay distinct (ascii.BoundHashed).
const maxModel = ascii.MaxName

// inspectChunk is the size of the buffer a request body is read through.
const inspectChunk = 16 << 10

// EstimateTokens is the default [PacingConfig.Estimator]'s arithmetic on a JSON request
// body. The text of chat messages (string or parts), responses input and
// instructions, embeddings input (strings, or token arrays counted one
// token per number), the prompt and tool definitions, at about four bytes a
// token, make the prompt; images, files and the values of keys such as
// "role", "type" or "url" carry no text. Input is the prompt and Output is
// max_completion_tokens, max_tokens or max_output_tokens, both times n, as
// providers count a request when it arrives. A body that is not a JSON
// object estimates to zero. EstimateTokens reads body in one pass and does
// not allocate.
func EstimateTokens(body []byte) TokenEstimate {
	var s reqScanner
	s.reset()
	s.feed(body)
	return s.estimate()
}

// scanRequest reads the model (bounded as inspectRequest's) and the token
// estimate of a JSON request body in one pass.
func scanRequest(b []byte) (model string, est TokenEstimate) {
	var s reqScanner
	s.reset()
	s.feed(b)
	return s.model(nil), s.estimate()
}

// errNotReplayable reports a request body that GetBody cannot give again.
var errNotReplayable = errors.New("steady: request body cannot be replayed")

// rewindBody returns a new copy of req's body through GetBody: the body of
// a retry, and of a first attempt whose body was inspected. A nil GetBody,
// or one that returns (nil, nil), gives errNotReplayable; GetBody's own
// error is returned wrapped in it.
//
// The transport sends every attempt of a request whose body was inspected
// with a body from rewindBody, called after inspection and just before the
// send: a GetBody that rewinds and returns the same reader as req.Body
// (common in hand-written code) is then rewound after inspection read it,
// and the attempt goes out whole. req.Body is then not sent; the transport
// closes it when the request is done, unless [sameBody] says it is the body
// it sent last.
func rewindBody(req *http.Request) (io.ReadCloser, error) {
	if req.GetBody == nil {
		return nil, errNotReplayable
	}
	rc, err := req.GetBody()
	if err != nil {
		if rc != nil {
			rc.Close()
		}
		return nil, errors.Join(errNotReplayable, err)
	}
	if rc == nil {
		return nil, errNotReplayable
	}
	return rc, nil
}

// settleInspected leaves req's body as it must be sent after inspection
// read rc: a copy from GetBody is closed; req.Body itself (a GetBody that
// rewinds and returns the body it was given) is rewound with GetBody
// again, and left open.
func settleInspected(req *http.Request, rc io.ReadCloser) {
	if !sameBody(rc, req.Body) {
		rc.Close()
		return
	}
	if again, err := req.GetBody(); err == nil && again != nil && !sameBody(again, req.Body) {
		again.Close()
	}
}

// sameBody reports whether a and b are the same reader (a GetBody that
// returns req.Body itself). It never panics on readers whose types cannot
// be compared.
func sameBody(a, b io.ReadCloser) (same bool) {
	if a == nil || b == nil {
		return false
	}
	defer func() {
		if recover() != nil {
			same = false // readers of a type that cannot be compared
		}
	}()
	return a == b
}

// hasBody reports whether req has a body to send.
func hasBody(req *http.Request) bool {
	return req.Body != nil && req.Body != http.NoBody
}

// inspectPool holds the scanners and read buffers of inspectRequest.
var inspectPool = sync.Pool{New: func() any { return new(inspection) }}

type inspection struct {
	s   reqScanner
	buf [inspectChunk]byte
}

// inspectRequest reads what pacing needs of req: its model, bounded to
// maxModel bytes, and its token estimate (est's, or the default's when est
// is nil). It reads a copy of the body through GetBody, once, through a
// fixed buffer, whatever its size; it never reads req.Body. A request
// without a body, without GetBody, or whose GetBody fails or returns nil
// gives no model and, with the default, no estimate: such a body cannot
// be replayed, so it is not retried either.
//
// The pacer keys and labels partitions with model as returned and keeps
// nothing else of the body; the transport then sends the attempt with a
// body from rewindBody (see attemptRequest), never req.Body once it was
// inspected.
func inspectRequest(req *http.Request, est estimator) (model string, e TokenEstimate) {
	model, e, _ = inspectRequestStream(req, est, nil)
	return model, e
}

// inspectRequestStream is inspectRequest, and reports whether the body
// asks for a stream ("stream": true at its top level). A model name found
// in names (nil: none) is returned without allocating, and a new one is
// added to it.
func inspectRequestStream(req *http.Request, est estimator, names *modelNames) (model string, e TokenEstimate, stream bool) {
	var rc io.ReadCloser
	if hasBody(req) {
		rc, _ = rewindBody(req)
	}
	in := inspectPool.Get().(*inspection)
	defer inspectPool.Put(in)
	s := &in.s
	s.reset()
	if rc != nil {
		defer settleInspected(req, rc)
	}
	if est != nil {
		r := &teeScanner{s: s, r: rc}
		e = est(req, r)
		e.Input = min(max(e.Input, 0), maxTokensValue)
		e.Output = min(max(e.Output, 0), maxTokensValue)
		if rc != nil && !r.end {
			s.drain(rc, in.buf[:])
		}
		r.s, r.r = nil, nil // invalid after the call
		return s.model(names), e, s.stream
	}
	if rc == nil {
		return "", TokenEstimate{}, false
	}
	s.drain(rc, in.buf[:])
	return s.model(names), s.estimate(), s.stream
}

// drain feeds s from r through buf until the end of r or of s's object.
func (s *reqScanner) drain(r io.Reader, buf []byte) {
	for !s.done {
		n, err := r.Read(buf)
		s.feed(buf[:n])
		if err != nil {
			return
		}
	}
}

// teeScanner is the body an Estimator reads: what it reads is scanned for
// the model on the way.
type teeScanner struct {
	s   *reqScanner
	r   io.Reader // nil when there is no body
	end bool      // r returned an error
}

var errEstimatorDone = errors.New("steady: request body read after the Estimator returned")

func (t *teeScanner) Read(p []byte) (int, error) {
	if t.s == nil {
		return 0, errEstimatorDone
	}
	if t.r == nil || t.end {
		return 0, io.EOF
	}
	n, err := t.r.Read(p)
	t.s.feed(p[:n])
	if err != nil {
		t.end = true
	}
	return n, err
}

// Lexer states of reqScanner.
const (
	stValue   = iota // a value is next
	stKey            // a member name or '}' is next
	stColon          // ':' is next
	stAfter          // ',' or a closing bracket is next
	stString         // inside a string
	stNumber         // inside a number
	stLiteral        // inside true, false or null
)

// What a string being read is.
const (
	strSkip = iota
	strKey
	strModel
	strText
)

// Top-level members the estimate reads.
const (
	topOther = iota
	topModel
	topText
	topMax
	topN
	topStream
)

// maxDepth bounds the nesting reqScanner follows; deeper bodies stop the
// scan where they pass it.
const maxDepth = 512

// reqScanner reads the model and the token estimate of a JSON request body
// fed to it in pieces of any size, in one pass: it keeps no part of the
// body but the first maxModel bytes of the model and the current member
// name. It is forgiving: on bytes that are not JSON it stops, keeping what
// it counted.
type reqScanner struct {
	state   uint8
	str     uint8 // what the string being read is
	top     uint8 // the top-level member being read
	esc     bool  // the last byte read in a string was a backslash
	fresh   bool  // the string being read has just begun
	done    bool  // the top-level object ended, or the body is not JSON
	depth   int
	objects [maxDepth / 64]uint64 // bit d: the container at depth d+1 is an object
	mute    int                   // depth of the object whose textless member is being read; -1 for none

	key    [24]byte
	keyLen int // > len(key) when the name is longer

	num     int64
	numNeg  bool
	numTail bool // past the integer part

	strChars int64 // bytes of text in the string being read

	modelBuf  [maxModel]byte
	modelLen  int    // bytes of the model being read, or read last
	modelHash uint64 // FNV-1a of the whole model name
	modelOK   bool   // a model string was read whole
	curLen    int    // model being read: its length so far
	curHash   uint64
	curBuf    [maxModel]byte

	chars, ints, maxOut, n int64
	stream                 bool // the top-level "stream" member is true
}

func (s *reqScanner) reset() {
	*s = reqScanner{mute: -1, n: 1}
}

func (s *reqScanner) estimate() TokenEstimate {
	prompt := min((s.chars+charsPerToken-1)/charsPerToken+s.ints, maxTokensValue)
	return TokenEstimate{Input: min(prompt*s.n, maxTokensValue), Output: min(s.maxOut*s.n, maxTokensValue)}
}

// model returns the last model name read whole, bounded by
// ascii.BoundHashed; a name that needs no bound is taken from names when
// it is there (names may be nil).
func (s *reqScanner) model(names *modelNames) string {
	if !s.modelOK {
		return ""
	}
	first := s.modelBuf[:min(s.modelLen, maxModel)]
	if s.modelLen <= maxModel && names != nil {
		if m, ok := names.lookup(first); ok {
			return m
		}
		m := ascii.BoundHashed(string(first), s.modelLen, s.modelHash)
		if m == string(first) {
			names.add(m)
		}
		return m
	}
	return ascii.BoundHashed(string(first), s.modelLen, s.modelHash)
}

// maxModelNames bounds the model names a modelNames keeps.
const maxModelNames = 256

// modelNames keeps the model names a pacer's requests named (up to
// maxModelNames), so that reading a name seen before does not allocate
// it again. Lookups take no lock: the map is replaced, never changed.
type modelNames struct {
	m  atomic.Pointer[map[string]string]
	mu sync.Mutex // serializes add
}

// lookup returns the kept name equal to b.
func (n *modelNames) lookup(b []byte) (string, bool) {
	m := n.m.Load()
	if m == nil {
		return "", false
	}
	s, ok := (*m)[string(b)]
	return s, ok
}

// add keeps name, unless maxModelNames are kept already.
func (n *modelNames) add(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := map[string]string{}
	if old := n.m.Load(); old != nil {
		if _, ok := (*old)[name]; ok || len(*old) >= maxModelNames {
			return
		}
		m = maps.Clone(*old)
	}
	m[name] = name
	n.m.Store(&m)
}

func (s *reqScanner) isObject() bool {
	d := s.depth - 1
	return s.objects[d/64]&(1<<(d%64)) != 0
}

// open enters a container.
func (s *reqScanner) open(object bool) bool {
	if s.depth >= maxDepth {
		s.done = true
		return false
	}
	d := s.depth
	if object {
		s.objects[d/64] |= 1 << (d % 64)
		s.state = stKey
	} else {
		s.objects[d/64] &^= 1 << (d % 64)
		s.state = stValue
	}
	s.depth++
	return true
}

// close leaves a container and completes it as a value.
func (s *reqScanner) close() {
	s.depth--
	s.valueDone()
}

// valueDone moves past a value that ended at the current depth.
func (s *reqScanner) valueDone() {
	s.state = stAfter
	if s.mute == s.depth {
		s.mute = -1
	}
	if s.depth == 0 {
		s.done = true
	}
}

// keyDone decides what the value of the member just named is.
func (s *reqScanner) keyDone() {
	var k []byte
	if s.keyLen <= len(s.key) {
		k = s.key[:s.keyLen]
	}
	if s.depth == 1 {
		s.top = topOther
		switch string(k) {
		case "model":
			s.top = topModel
		case "messages", "input", "instructions", "prompt", "system", "tools", "functions":
			s.top = topText
		case "max_completion_tokens", "max_tokens", "max_output_tokens":
			s.top = topMax
		case "n":
			s.top = topN
		case "stream":
			s.top = topStream
		}
		return
	}
	if s.mute < 0 && textless(k) {
		s.mute = s.depth
	}
}

// textless reports whether the value of key carries no prompt text.
func textless(key []byte) bool {
	switch string(key) {
	case "role", "type", "id", "call_id", "url", "image_url", "detail",
		"file_data", "file_id", "status", "format":
		return true
	}
	return false
}

// counted reports whether a value read now is prompt text.
func (s *reqScanner) counted() bool {
	return s.top == topText && s.depth >= 1 && s.mute < 0
}

// number ends a number and records it.
func (s *reqScanner) numberDone() {
	v := min(s.num, maxTokensValue)
	if s.numNeg {
		v = 0
	}
	if s.depth == 1 {
		switch s.top {
		case topMax:
			s.maxOut = max(s.maxOut, v)
		case topN:
			s.n = max(1, min(v, maxN))
		case topText:
			s.ints++
		}
	} else if s.counted() {
		s.ints++
	}
	s.valueDone()
}

// take records bytes of the string being read.
func (s *reqScanner) take(p []byte) {
	switch s.str {
	case strText:
		s.strChars += int64(len(p))
	case strKey:
		if s.keyLen+len(p) <= len(s.key) {
			copy(s.key[s.keyLen:], p)
		}
		s.keyLen += len(p)
	case strModel:
		s.takeModel(p)
	}
}

// takeModel records bytes of the model name being read: the first
// maxModel, and the hash of all.
func (s *reqScanner) takeModel(p []byte) {
	if s.curLen < maxModel {
		copy(s.curBuf[s.curLen:], p)
	}
	s.curLen += len(p)
	h := s.curHash
	for _, c := range p {
		h ^= uint64(c)
		h *= 1099511628211
	}
	s.curHash = h
}

// stringDone ends a string.
func (s *reqScanner) stringDone() {
	switch s.str {
	case strKey:
		s.state = stColon
		s.keyDone()
		return
	case strText:
		s.chars += s.strChars
	case strModel:
		s.modelBuf, s.modelLen, s.modelHash, s.modelOK = s.curBuf, s.curLen, s.curHash, true
	}
	s.valueDone()
}

// startString begins a string: a member name in stKey, else a value.
func (s *reqScanner) startString(key bool) {
	s.state = stString
	s.esc, s.fresh = false, true
	switch {
	case key:
		s.str, s.keyLen = strKey, 0
	case s.depth == 1 && s.top == topModel:
		s.str, s.curLen, s.curHash = strModel, 0, 14695981039346656037
	case s.counted():
		s.str, s.strChars = strText, 0
	default:
		s.str = strSkip
	}
}

// feed scans the next piece of the body.
func (s *reqScanner) feed(b []byte) {
	q := -1 // index of the next quote in b at or after i, when known
	i := 0
	for i < len(b) && !s.done {
		switch s.state {
		case stString:
			if s.esc {
				s.esc = false
				s.take(b[i : i+1])
				i++
				continue
			}
			if s.fresh && q < i && i+8 <= len(b) {
				s.fresh = false
				// Keys and short values end within eight bytes: look
				// for a quote or a backslash in all eight at once.
				x := binary.LittleEndian.Uint64(b[i:])
				qx := x ^ (0x0101010101010101 * '"')
				ex := x ^ (0x0101010101010101 * '\\')
				m := (((qx - 0x0101010101010101) &^ qx) | ((ex - 0x0101010101010101) &^ ex)) & 0x8080808080808080
				if m == 0 {
					s.take(b[i : i+8])
					i += 8
					continue // a long string: searched below
				}
				if k := i + bits.TrailingZeros64(m)/8; b[k] == '"' {
					s.take(b[i:k])
					i = k + 1
					s.stringDone()
					continue
				}
			}
			if q < i {
				q = bytes.IndexByte(b[i:], '"')
				if q < 0 {
					q = len(b)
				} else {
					q += i
				}
			}
			if k := bytes.IndexByte(b[i:q], '\\'); k >= 0 {
				k += i
				s.take(b[i : k+1])
				i = k + 1
				s.esc = true
				continue
			}
			s.take(b[i:q])
			i = q
			if q < len(b) {
				i++
				s.stringDone()
			}
		case stNumber:
			c := b[i]
			switch {
			case c >= '0' && c <= '9':
				if !s.numTail && s.num < maxTokensValue {
					s.num = s.num*10 + int64(c-'0')
				}
			case c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-':
				s.numTail = true
			default:
				s.numberDone()
				continue // b[i] is read in stAfter
			}
			i++
		case stLiteral:
			if c := b[i]; c >= 'a' && c <= 'z' {
				i++
				continue
			}
			s.valueDone()
		default:
			// The common steps first, inline; the rest in structural.
			switch c := b[i]; {
			case c == '"' && s.state == stKey:
				s.startString(true)
			case c == '"' && s.state == stValue && s.depth > 0:
				s.startString(false)
			case c == ':' && s.state == stColon:
				s.state = stValue
			case c == ',' && s.state == stAfter:
				s.state = stValue
				if s.isObject() {
					s.state = stKey
				}
			default:
				i = s.structural(b, i)
				continue
			}
			i++
		}
	}
}

// structural reads b[i] outside strings, numbers and literals, and
// returns the index of the next byte to read.
func (s *reqScanner) structural(b []byte, i int) int {
	c := b[i]
	switch c {
	case ' ', '\t', '\n', '\r':
		return i + 1
	}
	switch s.state {
	case stValue:
		switch {
		case c == '{':
			s.open(true)
		case c == '[':
			if s.depth == 0 {
				s.done = true // the body is not an object
			} else {
				s.open(false)
			}
		case s.depth == 0:
			s.done = true
		case c == '"':
			s.startString(false)
		case c == '-' || c >= '0' && c <= '9':
			s.state, s.num, s.numNeg, s.numTail = stNumber, 0, c == '-', false
			if c != '-' {
				return i // the digit is read in stNumber
			}
		case c >= 'a' && c <= 'z':
			s.state = stLiteral
			if s.depth == 1 && s.top == topStream {
				s.stream = c == 't' // "stream": true asks for a stream
			}
		case c == ']' && !s.isObject():
			s.close() // an empty array
		default:
			s.done = true
		}
	case stKey:
		switch c {
		case '"':
			s.startString(true)
		case '}':
			s.close()
		default:
			s.done = true
		}
	case stColon:
		if c != ':' {
			s.done = true
		}
		s.state = stValue
	case stAfter:
		switch {
		case c == ',' && s.isObject():
			s.state = stKey
		case c == ',':
			s.state = stValue
		case c == '}' && s.isObject(), c == ']' && !s.isObject():
			s.close()
		default:
			s.done = true
		}
	}
	return i + 1
}

// attemptRequest returns the request to send on an attempt of req, after
// admission: req itself on the first attempt (inspection read a copy of
// its body, or rewound req.Body when GetBody hands out req.Body itself),
// else a clone whose body comes from rewindBody.
func attemptRequest(ctx context.Context, req *http.Request, attempt int) (*http.Request, error) {
	if attempt == 1 {
		return req, nil
	}
	r := req.Clone(ctx)
	if !hasBody(req) {
		return r, nil
	}
	body, err := rewindBody(req)
	if err != nil {
		return nil, err
	}
	r.Body = body
	return r, nil
}

// closeFirst closes req's body when a first attempt ends before it is
// sent; a later attempt has not yet taken a body.
func closeFirst(req *http.Request, attempt int) {
	if attempt == 1 {
		closeBody(req)
	}
}
