package steady

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"net/http"
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

// An Estimator returns the tokens req will count against its provider's
// limits. body is req's JSON body, read through req.GetBody; it is valid
// only during the call and must not be modified or retained. body is nil
// when the request has none or it cannot be replayed.
type Estimator func(req *http.Request, body []byte) TokenEstimate

// charsPerToken is the default estimate's ratio: about four bytes of text
// make one token for English text with the tokenizers of current models.
const charsPerToken = 4

// maxN caps the n parameter: no provider accepts more than 128 choices.
const maxN = 128

// maxTokensValue caps every number read from a body, so that no sum can
// overflow.
const maxTokensValue = 1 << 40

// EstimateTokens is the default [Estimator]'s arithmetic on a JSON request
// body. The text of chat messages (string or parts), responses input and
// instructions, embeddings input (strings, or token arrays counted one
// token per number), the prompt and tool definitions, at about four bytes a
// token, make the prompt. Input is the prompt and Output is
// max_completion_tokens, max_tokens or max_output_tokens, both times n, as
// providers count a request when it arrives. A body that is not a JSON
// object estimates to zero. EstimateTokens reads body in one pass and does
// not allocate.
func EstimateTokens(body []byte) TokenEstimate {
	_, est := scanRequest(body)
	return est
}

// scanRequest reads the model and the token estimate of a JSON request body
// in one pass. model aliases body and holds the raw string bytes (escapes
// are not decoded). A body that is not a JSON object gives nothing.
func scanRequest(b []byte) (model []byte, est TokenEstimate) {
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return nil, TokenEstimate{}
	}
	var chars, ints, maxOut int64
	n := int64(1)
	for {
		s.ws()
		if s.eat('}') || s.i >= len(s.b) {
			break
		}
		if !s.eat('"') {
			break
		}
		key, ok := s.str()
		if !ok {
			break
		}
		s.ws()
		if !s.eat(':') {
			break
		}
		s.ws()
		switch string(key) {
		case "model":
			if s.eat('"') {
				v, ok := s.str()
				if !ok {
					return model, finish(chars, ints, maxOut, n)
				}
				model = v
			} else if !s.skip() {
				return model, finish(chars, ints, maxOut, n)
			}
		case "messages", "input", "instructions", "prompt", "system", "tools", "functions":
			c, k, ok := s.count()
			chars += c
			ints += k
			if !ok {
				return model, finish(chars, ints, maxOut, n)
			}
		case "max_completion_tokens", "max_tokens", "max_output_tokens":
			if v, ok := s.int(); ok {
				if v > maxOut {
					maxOut = v
				}
			} else if !s.skip() {
				return model, finish(chars, ints, maxOut, n)
			}
		case "n":
			if v, ok := s.int(); ok {
				n = max(1, min(v, maxN))
			} else if !s.skip() {
				return model, finish(chars, ints, maxOut, n)
			}
		default:
			if !s.skip() {
				return model, finish(chars, ints, maxOut, n)
			}
		}
		s.ws()
		if !s.eat(',') {
			s.ws()
			s.eat('}')
			break
		}
	}
	return model, finish(chars, ints, maxOut, n)
}

func finish(chars, ints, maxOut, n int64) TokenEstimate {
	prompt := min((chars+charsPerToken-1)/charsPerToken+ints, maxTokensValue)
	return TokenEstimate{Input: min(prompt*n, maxTokensValue), Output: min(maxOut*n, maxTokensValue)}
}

// scanner is a forgiving single-pass reader of JSON bytes. It never
// allocates and never panics: on bytes that are not JSON it stops.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads the rest of a string whose opening quote was consumed and
// returns its raw bytes. The first eight bytes are searched at once for a
// quote or a backslash (keys and short values end there); longer strings
// are searched with bytes.IndexByte.
func (s *scanner) str() ([]byte, bool) {
	v, i, ok := scanString(s.b, s.i)
	s.i = i
	return v, ok
}

// scanString reads the string starting at b[start], just after its
// opening quote, and returns its raw bytes and the index after its closing
// quote.
func scanString(b []byte, start int) (v []byte, next int, ok bool) {
	i := start
	if i+8 <= len(b) {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ (0x0101010101010101 * '"')
		e := x ^ (0x0101010101010101 * '\\')
		m := (((q - 0x0101010101010101) &^ q) | ((e - 0x0101010101010101) &^ e)) & 0x8080808080808080
		if m == 0 {
			i += 8
		} else if k := i + bits.TrailingZeros64(m)/8; b[k] == '"' {
			return b[start:k], k + 1, true
		} else {
			i = k + 2 // skip the backslash and the byte it escapes
		}
	}
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			break
		}
		end := i + j
		// The quote is escaped when an odd number of backslashes precede
		// it. Bytes before i are whole characters already.
		bs := 0
		for k := end - 1; k >= i && b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return b[start:end], end + 1, true
		}
		i = end + 1
	}
	return nil, len(b), false
}

// int reads a non-negative integer, ignoring a fraction or exponent
// (which it skips); a negative number reads as 0.
func (s *scanner) int() (int64, bool) {
	neg := s.eat('-')
	if s.i >= len(s.b) || s.b[s.i] < '0' || s.b[s.i] > '9' {
		return 0, false
	}
	var v int64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		if v < maxTokensValue {
			v = v*10 + int64(s.b[s.i]-'0')
		}
		s.i++
	}
	s.skipNumberTail()
	if neg {
		return 0, true
	}
	return min(v, maxTokensValue), true
}

func (s *scanner) skipNumberTail() {
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E', c == '+', c == '-':
			s.i++
		default:
			return
		}
	}
}

// skip passes over one value of any kind.
func (s *scanner) skip() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		s.i++
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				s.i++
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default:
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}

// Byte classes for count.
const (
	clOther = iota // letters of true, false, null; anything unexpected
	clSpace        // whitespace, ',' and ':'
	clQuote
	clOpen
	clClose
	clNumber
)

var class = func() (t [256]uint8) {
	for _, c := range " \t\r\n,:" {
		t[c] = clSpace
	}
	t['"'] = clQuote
	t['{'], t['['] = clOpen, clOpen
	t['}'], t[']'] = clClose, clClose
	for _, c := range "-0123456789" {
		t[c] = clNumber
	}
	return t
}()

// count passes over one value and returns the bytes of text in its string
// values (not keys, nor the values of keys that carry no text, such as
// "role" or "url") and how many numbers it holds (token arrays).
func (s *scanner) count() (chars, nums int64, ok bool) {
	b := s.b
	i := s.i
	chars, nums, i, ok = countValue(b, i)
	s.i = i
	return chars, nums, ok
}

// countValue is count on b from i; it returns the index after the value.
func countValue(b []byte, i int) (chars, nums int64, next int, ok bool) {
	depth := 0
	skipNext := false
	for i < len(b) {
		switch class[b[i]] {
		case clSpace:
			i++
		case clQuote:
			var v []byte
			var ok bool
			v, i, ok = scanString(b, i+1)
			if !ok {
				return chars, nums, i, false
			}
			// A string followed by ':' is a key.
			j := i
			for j < len(b) && class[b[j]] == clSpace && b[j] != ',' && b[j] != ':' {
				j++
			}
			if j < len(b) && b[j] == ':' {
				skipNext = textless(v)
				i = j + 1
				continue
			}
			if !skipNext {
				chars += int64(len(v))
			}
			skipNext = false
			if depth == 0 {
				return chars, nums, i, true
			}
		case clOpen:
			depth++
			i++
		case clClose:
			depth--
			skipNext = false
			i++
			if depth <= 0 {
				return chars, nums, i, depth == 0
			}
		case clNumber:
			nums++
			i++
			for i < len(b) && (class[b[i]] == clNumber || b[i] == '.' || b[i] == 'e' || b[i] == 'E' || b[i] == '+') {
				i++
			}
			skipNext = false
			if depth == 0 {
				return chars, nums, i, true
			}
		default:
			// true, false, null
			skipNext = false
			if depth == 0 {
				sc := scanner{b: b, i: i}
				ok := sc.skip()
				return chars, nums, sc.i, ok
			}
			i++
		}
	}
	return chars, nums, i, false
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
