package steady

import (
	"bytes"
)

// This file reads what a response says it used, as the caller reads the
// body: the "usage" objects of OpenAI-compatible JSON bodies (chat
// completions, completions, embeddings, the Responses API) and of their
// streams (the final chunk of a chat stream with
// stream_options.include_usage, the Responses API's response.completed),
// and Anthropic's message_start and message_delta. Nothing of the content
// is kept: the scanner holds a few bytes of a key and the numbers it reads.

// usageKey is what the scanner looks for.
var usageKey = []byte(`"usage"`)

// maxUsageObject bounds the bytes of one usage object the scanner reads:
// past it, the object is given up (its numbers so far are kept).
const maxUsageObject = 4 << 10

// Usage fields.
const (
	ufNone = iota
	ufInput
	ufOutput
	ufTotal
	ufCacheIn // Anthropic's cache_creation_input_tokens, counted as input
)

// Scanner states.
const (
	usSearch = iota // looking for "usage"
	usColon         // after "usage": a ':' is next
	usValue         // after the ':': '{' opens the object, anything else is not one
	usObject        // inside the usage object
)

// usageScan finds the usage objects in bytes fed to it in pieces of any
// size and keeps, per field, the largest number seen: streams repeat usage
// (Anthropic's message_delta counts output tokens cumulatively; a chat
// stream's chunks carry "usage":null until the last). Its zero value is
// ready; it never allocates.
type usageScan struct {
	tail  [len(`"usage"`) - 1]byte // the last bytes of the previous piece, for a key split across pieces
	tailN int

	state   uint8
	inStr   bool
	esc     bool
	isKey   bool // the string being read is a member name
	wantKey bool // a member name is next
	inNum   bool
	depth   int    // inside the usage object: 1 for its own members
	objects uint64 // bit d: the container at depth d+1 is an object
	objN    int    // bytes of the object read
	field   uint8
	key     [32]byte
	keyN    int
	num     int64

	in, out, total, cacheIn int64
	seen                    bool // a usage object with at least one field was read
	outSeen                 bool // a final output count was read
}

// feed scans the next piece.
func (s *usageScan) feed(p []byte) {
	for len(p) > 0 {
		if s.state == usSearch {
			p = s.search(p)
			continue
		}
		p = s.step(p)
	}
}

// search looks for "usage" in p, including a key split between the
// previous piece and this one, and returns what follows the key.
func (s *usageScan) search(p []byte) []byte {
	if s.tailN > 0 {
		var b [2*len(`"usage"`) - 2]byte
		n := copy(b[:], s.tail[:s.tailN])
		m := copy(b[n:], p)
		if i := bytes.Index(b[:n+m], usageKey); i >= 0 && i+len(usageKey) > n {
			s.tailN = 0
			s.state = usColon
			return p[i+len(usageKey)-n:]
		}
	}
	i := indexUsage(p)
	if i < 0 {
		s.keepTail(p)
		return nil
	}
	s.tailN = 0
	s.state = usColon
	return p[i+len(usageKey):]
}

// indexUsage is bytes.Index(p, usageKey), which on JSON runs at a byte
// at a time: no byte of the key is rare in it (its quote opens every
// string, its letters are English text's). It alternates two searches at
// IndexByte's speed: for a quote, which skips a completion's text (where
// quotes are escaped and rare), and then, over the structure that follows
// (where quotes are dense), for the key's 'g', rarer than its other bytes
// in the members of chat, Responses and Anthropic bodies.
func indexUsage(p []byte) int {
	const window = 256 // the structure searched by its 'g' after a quote
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		end := min(i+window, len(p))
		// The window ends with the key's length after it, so that a key
		// that begins inside it is found whole.
		if k := indexUsageG(p[i:min(end+len(usageKey)-1, len(p))]); k >= 0 {
			return i + k
		}
		if end == len(p) {
			return -1
		}
		i = end
	}
}

// indexUsageG is bytes.Index(p, usageKey), anchored on its 'g'.
func indexUsageG(p []byte) int {
	const g = len(`"usa`) // the 'g' in the key
	for i := g; i < len(p); {
		j := bytes.IndexByte(p[i:], 'g')
		if j < 0 {
			return -1
		}
		k := i + j
		if k+len(usageKey)-g <= len(p) && string(p[k-g:k-g+len(usageKey)]) == `"usage"` {
			return k - g
		}
		i = k + 1
	}
	return -1
}

// keepTail keeps the end of p that may begin a key split across pieces.
func (s *usageScan) keepTail(p []byte) {
	if len(p) >= len(s.tail) {
		s.tailN = copy(s.tail[:], p[len(p)-len(s.tail):])
		return
	}
	// A short piece: keep the newest bytes of the tail and p.
	var b [2 * len(`"usage"`)]byte
	n := copy(b[:], s.tail[:s.tailN])
	n += copy(b[n:], p)
	k := min(n, len(s.tail))
	s.tailN = copy(s.tail[:], b[n-k:n])
}

// step reads p after a "usage" key, and returns what it did not read.
func (s *usageScan) step(p []byte) []byte {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch s.state {
		case usColon:
			switch c {
			case ' ', '\t', '\r', '\n':
			case ':':
				s.state = usValue
			default:
				s.state = usSearch // a string "usage", not a member name
				return p[i:]
			}
		case usValue:
			switch c {
			case ' ', '\t', '\r', '\n':
			case '{':
				if n, ok := s.whole(p[i+1:]); ok {
					s.state, s.tailN = usSearch, 0
					return p[i+1+n:]
				}
				s.state, s.depth, s.objN, s.objects = usObject, 1, 0, 1
				s.inStr, s.inNum, s.field, s.wantKey = false, false, ufNone, true
			default:
				s.state = usSearch // null
				return p[i:]
			}
		case usObject:
			if rest, done := s.object(p[i:]); done {
				return rest
			}
			return nil
		}
	}
	return nil
}

// object reads the usage object's bytes; done reports its end (or that
// it was given up), with what follows it.
func (s *usageScan) object(p []byte) (rest []byte, done bool) {
	for i := 0; i < len(p); i++ {
		s.objN++
		if s.objN > maxUsageObject {
			s.end()
			return p[i:], true
		}
		c := p[i]
		if s.inStr {
			switch {
			case s.esc:
				s.esc = false
			case c == '\\':
				s.esc = true
			case c == '"':
				s.inStr = false
				s.field = ufNone
				if s.isKey && s.depth == 1 {
					s.field = usageField(s.key[:min(s.keyN, len(s.key))], s.keyN)
				}
			default:
				if s.isKey {
					if s.keyN < len(s.key) {
						s.key[s.keyN] = c
					}
					s.keyN++
				}
			}
			continue
		}
		if s.inNum {
			if c >= '0' && c <= '9' {
				if s.num < maxTokensValue {
					s.num = s.num*10 + int64(c-'0')
				}
				continue
			}
			s.inNum = false
			s.record()
		}
		switch {
		case c == '"':
			s.inStr, s.esc, s.keyN = true, false, 0
			s.isKey, s.wantKey = s.wantKey, false
		case c >= '0' && c <= '9':
			s.inNum, s.num = true, int64(c-'0')
		case c == ':':
			s.wantKey = false
		case c == '{' || c == '[':
			if s.depth >= 63 {
				s.end() // deeper than any usage object: given up
				return p[i:], true
			}
			if c == '{' {
				s.objects |= 1 << s.depth
			} else {
				s.objects &^= 1 << s.depth
			}
			s.depth++
			s.field, s.wantKey = ufNone, c == '{'
		case c == '}' || c == ']':
			s.depth--
			s.field = ufNone
			if s.depth == 0 {
				s.end()
				return p[i+1:], true
			}
		case c == ',':
			s.field = ufNone
			s.wantKey = s.objects&(1<<(s.depth-1)) != 0
		}
	}
	return nil, false
}

// whole reads a usage object that p holds whole (p begins after its
// '{'), the common case, in one pass with its state in locals, and
// returns the bytes it read, through the '}'. ok is false, and nothing is
// kept, when p ends first or holds what the fast path does not read (an
// escape in a member's name, a value it cannot skip): object then reads
// the same bytes as they come.
func (s *usageScan) whole(p []byte) (n int, ok bool) {
	p = p[:min(len(p), maxUsageObject)]
	var vals [ufCacheIn + 1]int64
	var seen [ufCacheIn + 1]bool
	i := 0
	ws := func() {
		for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
			i++
		}
	}
	for {
		ws()
		if i >= len(p) {
			return 0, false
		}
		if p[i] == '}' {
			break
		}
		if p[i] != '"' {
			return 0, false
		}
		k := bytes.IndexByte(p[i+1:], '"')
		if k < 0 {
			return 0, false
		}
		key := p[i+1 : i+1+k]
		if bytes.IndexByte(key, '\\') >= 0 {
			return 0, false
		}
		i += k + 2
		ws()
		if i >= len(p) || p[i] != ':' {
			return 0, false
		}
		i++
		ws()
		if i >= len(p) {
			return 0, false
		}
		switch c := p[i]; {
		case c >= '0' && c <= '9':
			var v int64
			for i < len(p) && p[i] >= '0' && p[i] <= '9' {
				if v < maxTokensValue {
					v = v*10 + int64(p[i]-'0')
				}
				i++
			}
			if f := usageField(key[:min(len(key), 32)], len(key)); f != ufNone {
				vals[f], seen[f] = v, true
			}
		case c == '{' || c == '[':
			e := skipValue(p[i:])
			if e < 0 {
				return 0, false
			}
			i += e
		case c == 'n' || c == 't' || c == 'f':
			for i < len(p) && p[i] >= 'a' && p[i] <= 'z' {
				i++
			}
		case c == '"':
			e := skipString(p[i+1:])
			if e < 0 {
				return 0, false
			}
			i += 1 + e
		default:
			return 0, false
		}
		ws()
		if i >= len(p) {
			return 0, false
		}
		if p[i] == ',' {
			i++
			continue
		}
		if p[i] != '}' {
			return 0, false
		}
		break
	}
	// In the members' order of precedence, as record keeps them.
	for f := ufInput; f <= ufCacheIn; f++ {
		if seen[f] {
			s.field, s.num = uint8(f), vals[f]
			s.record()
		}
	}
	return i + 1, true
}

// skipString returns the length of a JSON string's rest, p beginning
// after its opening quote, through its closing quote; -1 if p ends first.
func skipString(p []byte) int {
	for i := 0; ; {
		k := bytes.IndexByte(p[i:], '"')
		if k < 0 {
			return -1
		}
		j := i + k
		// Escaped when an odd number of backslashes precede it.
		b := 0
		for b < j && p[j-1-b] == '\\' {
			b++
		}
		if b%2 == 0 {
			return j + 1
		}
		i = j + 1
	}
}

// skipValue returns the length of the object or array p begins with,
// through its closing bracket; -1 if p ends first or nests too deep.
func skipValue(p []byte) int {
	depth := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '"':
			e := skipString(p[i+1:])
			if e < 0 {
				return -1
			}
			i += e
		case '{', '[':
			if depth++; depth > 63 {
				return -1
			}
		case '}', ']':
			if depth--; depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// record keeps the number just read in its field.
func (s *usageScan) record() {
	v := min(s.num, maxTokensValue)
	switch s.field {
	case ufInput:
		s.in = max(s.in, v)
		s.seen = true
	case ufOutput:
		// The latest count: a stream's last usage is its final one
		// (Anthropic's message_start tells an output of 1 before its
		// message_delta tells the total).
		s.out = v
		s.outSeen = true
		s.seen = true
	case ufTotal:
		s.total = max(s.total, v)
		s.seen = true
	case ufCacheIn:
		s.cacheIn = max(s.cacheIn, v)
	}
	s.field = ufNone
}

// end closes the usage object and goes back to searching.
func (s *usageScan) end() {
	if s.inNum {
		s.inNum = false
		s.record()
	}
	s.state, s.depth, s.tailN = usSearch, 0, 0
}

// usageField names the field of a usage member.
func usageField(k []byte, n int) uint8 {
	if n > len(k) {
		return ufNone
	}
	switch string(k) {
	case "prompt_tokens", "input_tokens":
		return ufInput
	case "completion_tokens", "output_tokens":
		return ufOutput
	case "total_tokens":
		return ufTotal
	case "cache_creation_input_tokens":
		return ufCacheIn
	}
	return ufNone
}

// result returns what the scan read: the tokens used, and whether a usage
// object was read at all. Output is known (outOK) only from a final count:
// an Anthropic message_start tells the input alone.
func (s *usageScan) result() (u TokenEstimate, outOK, ok bool) {
	if !s.seen {
		return TokenEstimate{}, false, false
	}
	u.Input = min(s.in+s.cacheIn, maxTokensValue)
	u.Output = s.out
	if s.in == 0 && s.out == 0 && s.total > 0 {
		// Only a total (some gateways): counted as input, the part
		// that is never learned.
		u.Input = s.total
	}
	return u, s.outSeen, true
}
