package steady

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/steady-go/steady/internal/ascii"
	"github.com/tidwall/gjson"
)

func TestEstimateTokens(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  string
		model string
		want  TokenEstimate
	}{
		{"chat string", `{"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}]}`, "gpt-4o", TokenEstimate{2, 0}},
		{"chat parts", `{"messages":[{"role":"user","content":[{"type":"text","text":"abcdefghijkl"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"model":"m"}`, "m", TokenEstimate{3, 0}},
		{"chat max completion times n", `{"model":"m","messages":[{"role":"system","content":"abcd"},{"role":"user","content":"efgh"}],"max_completion_tokens":100,"n":3}`, "m", TokenEstimate{6, 300}},
		{"chat max_tokens", `{"model":"m","max_tokens":50,"messages":[]}`, "m", TokenEstimate{0, 50}},
		{"responses", `{"model":"o3","instructions":"abcdabcd","input":"abcd","max_output_tokens":10}`, "o3", TokenEstimate{3, 10}},
		{"responses items", `{"model":"o3","input":[{"role":"user","content":[{"type":"input_text","text":"abcdabcd"}]}]}`, "o3", TokenEstimate{2, 0}},
		{"embeddings strings", `{"model":"e","input":["abcd","abcd","abcd"]}`, "e", TokenEstimate{3, 0}},
		{"embeddings tokens", `{"model":"e","input":[[1,2,3],[4,5]]}`, "e", TokenEstimate{5, 0}},
		{"embeddings one token array", `{"input":[1,2,3,4],"model":"e"}`, "e", TokenEstimate{4, 0}},
		{"whitespace and escapes", "{ \"model\" : \"a\\\"b\" ,\n \"messages\" : [ { \"content\" : \"ab\\\"cd\" } ] }", `a\"b`, TokenEstimate{2, 0}},
		{"unknown keys skipped", `{"model":"m","metadata":{"messages":"xxxxxxxxxxxxxxxxxxxx"},"stream":true,"temperature":0.5,"messages":[{"content":"abcd"}]}`, "m", TokenEstimate{1, 0}},
		{"tools counted", `{"model":"m","tools":[{"type":"function","function":{"name":"abcd","description":"abcd"}}]}`, "m", TokenEstimate{2, 0}},
		{"n capped", `{"max_tokens":1,"n":100000}`, "", TokenEstimate{0, maxN}},
		{"negative max", `{"max_tokens":-5}`, "", TokenEstimate{0, 0}},
		{"float max", `{"max_tokens":12.7e0}`, "", TokenEstimate{0, 12}},
		{"not JSON", `hello world`, "", TokenEstimate{}},
		{"array body", `[{"model":"m"}]`, "", TokenEstimate{}},
		{"empty", ``, "", TokenEstimate{}},
		{"truncated", `{"model":"m","messages":[{"content":"abcdabcd`, "m", TokenEstimate{}},
		{"null values", `{"model":null,"messages":null,"max_tokens":null,"n":null}`, "", TokenEstimate{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			model, est := scanRequest([]byte(tc.body))
			if string(model) != tc.model {
				t.Errorf("model = %q, want %q", model, tc.model)
			}
			if est != tc.want {
				t.Errorf("estimate = %+v, want %+v", est, tc.want)
			}
			if got := EstimateTokens([]byte(tc.body)); got != est {
				t.Errorf("EstimateTokens = %+v, scanRequest = %+v", got, est)
			}
		})
	}
}

// chatBody returns a chat completion body of about size bytes, shaped like
// the SDK's.
func chatBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[{"content":"You are a helpful assistant that answers briefly.","role":"system"}`)
	i := 0
	for b.Len() < size-120 {
		fmt.Fprintf(&b, `,{"content":"Question %d: what is the capital of country number %d, and why does it matter?","role":"user"}`, i, i)
		i++
	}
	b.WriteString(`],"model":"gpt-4o-mini","max_completion_tokens":256,"temperature":0.2}`)
	return b.Bytes()
}

func TestEstimateMatchesJSON(t *testing.T) {
	body := chatBody(2048)
	var v struct {
		Model    string `json:"model"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
		Max int64 `json:"max_completion_tokens"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	chars := 0
	for _, m := range v.Messages {
		chars += len(m.Content)
	}
	model, est := scanRequest(body)
	if string(model) != v.Model {
		t.Errorf("model %q, want %q", model, v.Model)
	}
	want := TokenEstimate{Input: int64((chars + 3) / 4), Output: v.Max}
	if est != want {
		t.Errorf("estimate %+v, want %+v", est, want)
	}
}

func TestEstimateDoesNotAllocate(t *testing.T) {
	body := chatBody(2048)
	if n := testing.AllocsPerRun(100, func() { EstimateTokens(body) }); n != 0 {
		t.Errorf("EstimateTokens allocates %v times", n)
	}
}

// longChatBody returns a chat body of about size bytes with a system
// prompt and one long user message, the common shape.
func longChatBody(size int) []byte {
	text := strings.Repeat("Summarize the following report in three sentences. ", size/52)
	return []byte(`{"messages":[{"content":"You are a helpful assistant that answers briefly.","role":"system"},{"content":"` +
		text + `","role":"user"}],"model":"gpt-4o-mini","max_completion_tokens":256,"temperature":0.2}`)
}

func BenchmarkEstimate2KBLong(b *testing.B) {
	body := longChatBody(1900)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		scanRequest(body)
	}
}

// BenchmarkEstimate2KB measures a body of many short messages, the
// costliest shape per byte.
func BenchmarkEstimate2KB(b *testing.B) {
	body := chatBody(2048)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		scanRequest(body)
	}
}

// scanChunks scans body fed in pieces of size.
func scanChunks(body []byte, size int) (string, TokenEstimate) {
	var s reqScanner
	s.reset()
	for len(body) > 0 && !s.done {
		k := min(size, len(body))
		s.feed(body[:k])
		body = body[k:]
	}
	return s.model(nil), s.estimate()
}

// fnv64 is FNV-1a, the hash of long model names.
func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// refScan is the estimate's rules applied with encoding/json's tokens, for
// valid bodies without escapes (whose raw and decoded text agree).
func refScan(body []byte) (model []byte, est TokenEstimate, ok bool) {
	if !json.Valid(body) || bytes.IndexByte(body, '\\') >= 0 || !utf8.Valid(body) ||
		bytes.Count(body, []byte("{"))+bytes.Count(body, []byte("[")) > maxDepth-8 {
		return nil, TokenEstimate{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return nil, TokenEstimate{}, true
	}
	var chars, ints, maxOut int64
	n := int64(1)
	var walk func(tok json.Token, count bool)
	walk = func(tok json.Token, count bool) {
		switch v := tok.(type) {
		case json.Delim:
			for dec.More() {
				t, _ := dec.Token()
				if k, isKey := t.(string); isKey && v == '{' {
					t, _ = dec.Token()
					walk(t, count && !textless([]byte(k)))
					continue
				}
				walk(t, count)
			}
			dec.Token()
		case string:
			if count {
				chars += int64(len(v))
			}
		case json.Number:
			if count {
				ints++
			}
		}
	}
	num := func(v json.Number) int64 {
		s := string(v)
		if s[0] == '-' {
			return 0
		}
		var x int64
		for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			if x < maxTokensValue {
				x = x*10 + int64(s[i]-'0')
			}
		}
		return min(x, maxTokensValue)
	}
	for dec.More() {
		k, _ := dec.Token()
		tok, _ := dec.Token()
		switch k {
		case "model":
			if v, isStr := tok.(string); isStr {
				model = []byte(v)
			} else {
				walk(tok, false)
			}
		case "messages", "input", "instructions", "prompt", "system", "tools", "functions":
			walk(tok, true)
		case "max_completion_tokens", "max_tokens", "max_output_tokens":
			if v, isNum := tok.(json.Number); isNum {
				maxOut = max(maxOut, num(v))
			} else {
				walk(tok, false)
			}
		case "n":
			if v, isNum := tok.(json.Number); isNum {
				n = max(1, min(num(v), maxN))
			} else {
				walk(tok, false)
			}
		default:
			walk(tok, false)
		}
	}
	prompt := min((chars+charsPerToken-1)/charsPerToken+ints, maxTokensValue)
	return model, TokenEstimate{Input: min(prompt*n, maxTokensValue), Output: min(maxOut*n, maxTokensValue)}, true
}

// FuzzEstimate checks that the scanner never panics, never returns a
// negative or unbounded estimate or model, gives the same whatever the
// pieces the body comes in, and agrees with encoding/json's reading of
// valid bodies.
func FuzzEstimate(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_completion_tokens":100,"n":2}`,
		`{"model":"o3","instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"max_output_tokens":10}`,
		`{"model":"e","input":[[1,2,3],[4,5]]}`,
		`{"model":"a\"b\\","input":"x"}`,
		`{"max_tokens":99999999999999999999999999}`,
		`{"messages":[[[[[[[[[[`,
		`{"messages":[{"content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"high"}},{"type":"text","text":"abc"}]}],"model":"` + strings.Repeat("m", 100) + `"}`,
		`not json`,
		string(chatBody(512)),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		size := len(body)%61 + 1
		model, est := scanRequest(body)
		if est.Input < 0 || est.Output < 0 || est.Input > maxTokensValue || est.Output > maxTokensValue {
			t.Fatalf("estimate out of range: %+v", est)
		}
		if len(model) > maxModel || !utf8.ValidString(model) {
			t.Fatalf("model %q", model)
		}
		if m2, e2 := scanChunks(body, size); m2 != model || e2 != est {
			t.Fatalf("in pieces of %d: %q %+v, whole: %q %+v", size, m2, e2, model, est)
		}
		rm, rest, ok := refScan(body)
		if !ok {
			return
		}
		if est != rest {
			t.Fatalf("estimate %+v, encoding/json %+v", est, rest)
		}
		want := ""
		if rm != nil {
			want = ascii.BoundHashed(string(rm[:min(len(rm), maxModel)]), len(rm), fnv64(rm))
		}
		if model != want {
			t.Fatalf("model %q, encoding/json %q", model, want)
		}
	})
}

func ExampleEstimateTokens() {
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku about rate limits."}],"max_completion_tokens":60,"n":2}`)
	est := EstimateTokens(body)
	fmt.Println("input:", est.Input, "output:", est.Output, "total:", est.Total())
	// Output:
	// input: 16 output: 120 total: 136
}

// sameReaderRequest is common hand-written code: GetBody rewinds the
// request's own reader and returns it.
func sameReaderRequest(t testing.TB, body []byte) *http.Request {
	r := bytes.NewReader(body)
	rc := io.NopCloser(r)
	req, err := http.NewRequest(http.MethodPost, "https://api.example.com/v1/chat/completions", rc)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) {
		r.Seek(0, io.SeekStart)
		return rc, nil
	}
	return req
}

func TestInspectRequest(t *testing.T) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":10}`)
	want := TokenEstimate{Input: 2, Output: 10}
	newReq := func(get func() (io.ReadCloser, error)) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/v1/chat/completions", bytes.NewReader(body))
		if get != nil {
			req.GetBody = get
		}
		return req
	}
	t.Run("NewRequest", func(t *testing.T) {
		req := newReq(nil)
		if m, e := inspectRequest(req, nil); m != "gpt-4o" || e != want {
			t.Errorf("%q %+v", m, e)
		}
		if b, _ := io.ReadAll(req.Body); !bytes.Equal(b, body) {
			t.Errorf("req.Body read by inspection: %q left", b)
		}
	})
	t.Run("GetBody returns req.Body", func(t *testing.T) {
		req := sameReaderRequest(t, body)
		if m, e := inspectRequest(req, nil); m != "gpt-4o" || e != want {
			t.Errorf("%q %+v", m, e)
		}
		// Inspection read the shared reader; the attempt's body comes
		// from rewindBody, after it, and is whole.
		rc, err := rewindBody(req)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(rc); !bytes.Equal(b, body) {
			t.Errorf("attempt body %q", b)
		}
		if !sameBody(rc, req.Body) {
			t.Error("sameBody does not see the shared reader")
		}
	})
	for name, get := range map[string]func() (io.ReadCloser, error){
		"GetBody nil, nil": func() (io.ReadCloser, error) { return nil, nil },
		"GetBody error":    func() (io.ReadCloser, error) { return nil, errors.New("gone") },
	} {
		t.Run(name, func(t *testing.T) {
			req := newReq(get)
			if m, e := inspectRequest(req, nil); m != "" || e != (TokenEstimate{}) {
				t.Errorf("%q %+v", m, e)
			}
			if _, err := rewindBody(req); !errors.Is(err, errNotReplayable) {
				t.Errorf("rewindBody: %v", err)
			}
			if b, _ := io.ReadAll(req.Body); !bytes.Equal(b, body) {
				t.Errorf("req.Body %q", b)
			}
		})
	}
	t.Run("no GetBody", func(t *testing.T) {
		req := newReq(nil)
		req.GetBody = nil
		if m, e := inspectRequest(req, nil); m != "" || e != (TokenEstimate{}) {
			t.Errorf("%q %+v", m, e)
		}
	})
	t.Run("Estimator reads part, steady finds the model", func(t *testing.T) {
		late := append([]byte(`{"messages":[{"content":"`+strings.Repeat("x", 100<<10)+`"}],`), `"model":"late-model"}`...)
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/", bytes.NewReader(late))
		var kept io.Reader
		m, e := inspectRequest(req, func(_ *http.Request, body io.Reader) TokenEstimate {
			kept = body
			var p [10]byte
			io.ReadFull(body, p[:])
			return TokenEstimate{Input: 7, Output: -1}
		})
		if m != "late-model" || e != (TokenEstimate{Input: 7}) {
			t.Errorf("%q %+v", m, e)
		}
		if _, err := kept.Read(make([]byte, 1)); err == nil {
			t.Error("the body read after the Estimator returned")
		}
	})
	t.Run("Estimator without a body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
		called := false
		inspectRequest(req, func(_ *http.Request, body io.Reader) TokenEstimate {
			called = true
			if n, err := body.Read(make([]byte, 8)); n != 0 || err != io.EOF {
				t.Errorf("empty body: %d, %v", n, err)
			}
			return TokenEstimate{}
		})
		if !called {
			t.Error("Estimator not called")
		}
	})
	t.Run("reads once", func(t *testing.T) {
		calls := 0
		req := newReq(func() (io.ReadCloser, error) {
			calls++
			return io.NopCloser(bytes.NewReader(body)), nil
		})
		inspectRequest(req, nil)
		if calls != 1 {
			t.Errorf("GetBody called %d times", calls)
		}
	})
}

func TestSameBody(t *testing.T) {
	a := io.NopCloser(uncomparableReader{})
	b := io.NopCloser(uncomparableReader{})
	if sameBody(a, b) || sameBody(nil, a) || sameBody(http.NoBody, nil) {
		t.Error("uncomparable or nil readers are not the same")
	}
	rc := io.NopCloser(strings.NewReader("x"))
	if !sameBody(rc, rc) || sameBody(rc, io.NopCloser(strings.NewReader("x"))) {
		t.Error("identity")
	}
}

// uncomparableReader is a reader whose values cannot be compared.
type uncomparableReader struct{ _ []byte }

func (uncomparableReader) Read([]byte) (int, error) { return 0, io.EOF }

func TestModelBounded(t *testing.T) {
	long := func(c byte) string { return strings.Repeat(string(c), 100) }
	a, b := ascii.BoundHashed(long('a')[:64], 100, fnv64([]byte(long('a')))), ascii.BoundHashed(long('a')[:64], 100, fnv64([]byte(long('a')+"b")))
	if len(a) != maxModel || a == b || !strings.HasPrefix(a, strings.Repeat("a", 47)+"~") {
		t.Errorf("%q %q", a, b)
	}
	for _, name := range []string{"gpt-4o-mini", strings.Repeat("é", 32), "a\x00b", "\xff\xfe", strings.Repeat("é", 40)} {
		m, _ := scanRequest([]byte(`{"model":"` + name + `"}`))
		if len(m) > maxModel || !utf8.ValidString(m) || strings.ContainsFunc(m, func(r rune) bool { return r < 0x20 }) {
			t.Errorf("%q: model %q", name, m)
		}
	}
}

// TestInspectLongModelsHeap sends 100 requests with distinct 1 MiB model
// names through inspection: what is kept of them stays bounded.
func TestInspectLongModelsHeap(t *testing.T) {
	const n = 100
	name := bytes.Repeat([]byte("m"), 1<<20)
	body := append(append([]byte(`{"model":"`), name...), `","messages":[{"content":"hi"}]}`...)
	idx := len(`{"model":"`) + len(name) - 8
	models := make([]string, 0, n)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		copy(body[idx:], fmt.Sprintf("%08d", i))
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/", bytes.NewReader(body))
		m, _ := inspectRequest(req, nil)
		models = append(models, m)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	seen := map[string]bool{}
	for _, m := range models {
		if len(m) > maxModel || seen[m] {
			t.Fatalf("model %q (%d bytes) long or repeated", m, len(m))
		}
		seen[m] = true
	}
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d bytes for %d distinct 1 MiB model names", grew, n)
	if grew > 10<<20 {
		t.Errorf("heap grew %d bytes for %d long model names", grew, n)
	}
	runtime.KeepAlive(models)
}

// imageBody is a responses request of about size bytes, most of it a
// base64 image.
func imageBody(size int) []byte {
	return []byte(`{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_text","text":"What is in this image?"},` +
		`{"type":"input_image","image_url":"data:image/png;base64,` + strings.Repeat("iVBORw0KGgo", size/11) + `"}]}],"max_output_tokens":300}`)
}

func benchInspect(b *testing.B, body []byte) {
	req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/v1/chat/completions", bytes.NewReader(body))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if m, _ := inspectRequest(req, nil); m == "" {
			b.Fatal("no model")
		}
	}
}

// The inspection of a request before each attempt: 2 KB, 1 MiB and 4 MiB
// bodies of text, and a 4 MiB image.
func BenchmarkInspect2KB(b *testing.B)       { benchInspect(b, longChatBody(2048)) }
func BenchmarkInspect1MiB(b *testing.B)      { benchInspect(b, longChatBody(1<<20)) }
func BenchmarkInspect4MiB(b *testing.B)      { benchInspect(b, longChatBody(4<<20)) }
func BenchmarkInspectImage4MiB(b *testing.B) { benchInspect(b, imageBody(4<<20)) }

// BenchmarkInspectManyMessages1MiB is the costliest shape per byte: many
// short messages.
func BenchmarkInspectManyMessages1MiB(b *testing.B) { benchInspect(b, chatBody(1<<20)) }

// gjsonEstimate is the default estimate computed with gjson on a body
// held in memory: the alternative to the streaming scanner, kept to
// compare the two in benchmarks.
func gjsonEstimate(body []byte) (string, TokenEstimate) {
	doc := gjson.ParseBytes(body)
	if !doc.IsObject() {
		return "", TokenEstimate{}
	}
	var model []byte
	var chars, ints, maxOut int64
	n := int64(1)
	var walk func(v gjson.Result, count bool)
	walk = func(v gjson.Result, count bool) {
		switch v.Type {
		case gjson.String:
			if count {
				chars += int64(len(v.Raw) - 2)
			}
		case gjson.Number:
			if count {
				ints++
			}
		case gjson.JSON:
			obj := v.IsObject()
			v.ForEach(func(k, e gjson.Result) bool {
				walk(e, count && !(obj && textless([]byte(k.Raw[1:len(k.Raw)-1]))))
				return true
			})
		}
	}
	num := func(v gjson.Result) int64 {
		if v.Type != gjson.Number || strings.HasPrefix(v.Raw, "-") {
			return 0
		}
		return min(max(int64(v.Num), 0), maxTokensValue)
	}
	doc.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			if v.Type == gjson.String {
				model = []byte(v.Raw[1 : len(v.Raw)-1])
			}
		case "messages", "input", "instructions", "prompt", "system", "tools", "functions":
			walk(v, true)
		case "max_completion_tokens", "max_tokens", "max_output_tokens":
			maxOut = max(maxOut, num(v))
		case "n":
			if v.Type == gjson.Number {
				n = max(1, min(num(v), maxN))
			}
		}
		return true
	})
	prompt := min((chars+charsPerToken-1)/charsPerToken+ints, maxTokensValue)
	return ascii.BoundHashed(string(model[:min(len(model), maxModel)]), len(model), fnv64(model)),
		TokenEstimate{Input: min(prompt*n, maxTokensValue), Output: min(maxOut*n, maxTokensValue)}
}

func TestGJSONEstimateAgrees(t *testing.T) {
	for _, body := range [][]byte{chatBody(2048), longChatBody(2048), imageBody(4096), chatBody(1 << 20)} {
		m1, e1 := scanRequest(body)
		m2, e2 := gjsonEstimate(body)
		if m1 != m2 || e1 != e2 {
			t.Errorf("scanner %q %+v, gjson %q %+v", m1, e1, m2, e2)
		}
	}
}

func benchEstimateWith(b *testing.B, body []byte, fn func([]byte) (string, TokenEstimate)) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		fn(body)
	}
}

// The streaming scanner against gjson on bodies in memory (gjson needs the
// whole body; inspection through GetBody would add reading it).
func BenchmarkEstimateScanner2KB(b *testing.B)  { benchEstimateWith(b, chatBody(2048), scanRequest) }
func BenchmarkEstimateGJSON2KB(b *testing.B)    { benchEstimateWith(b, chatBody(2048), gjsonEstimate) }
func BenchmarkEstimateScanner1MiB(b *testing.B) { benchEstimateWith(b, chatBody(1<<20), scanRequest) }
func BenchmarkEstimateGJSON1MiB(b *testing.B)   { benchEstimateWith(b, chatBody(1<<20), gjsonEstimate) }

// TestInspectStream: the inspection tells a body that asks for a stream
// ("stream": true at its top level) from every other, so that only those
// requests pay for the stream guard's context of their own.
func TestInspectStream(t *testing.T) {
	for body, want := range map[string]bool{
		`{"model":"gpt-4o","stream":true,"messages":[]}`: true,
		`{"stream": true}`:                  true,
		`{"model":"gpt-4o","stream":false}`: false,
		`{"model":"gpt-4o","messages":[{"role":"user","content":"stream"}]}`: false,
		`{"model":"gpt-4o","stream_options":{"include_usage":true}}`:         false,
		`{"x":{"stream":true}}`: false,
		`{"model":"gpt-4o"}`:    false,
		`not json`:              false,
	} {
		req := httptest.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", strings.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
		if _, _, got := inspectRequestStream(req, nil, nil); got != want {
			t.Errorf("%s: stream %v, want %v", body, got, want)
		}
	}
}

// TestModelNames: a model name read again is the one kept, without an
// allocation; a name that needs its bound is never kept; at most
// maxModelNames are kept, and the ones past them read as before.
func TestModelNames(t *testing.T) {
	var names modelNames
	read := func(body string) string {
		req, err := http.NewRequest("POST", "https://api.example.test/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		m, _, _ := inspectRequestStream(req, nil, &names)
		return m
	}
	a := read(`{"model":"gpt-4o-mini","messages":[]}`)
	b := read(`{"messages":[],"model":"gpt-4o-mini"}`)
	if a != "gpt-4o-mini" || b != a || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Errorf("read %q, then %q: want the same kept name", a, b)
	}
	long := strings.Repeat("m", 100)
	if got, want := read(`{"model":"`+long+`"}`), ascii.BoundName(long); got != want {
		t.Errorf("long name %q, want %q", got, want)
	}
	if _, ok := names.lookup([]byte(long[:maxModel])); ok {
		t.Error("a cut name was kept")
	}
	for i := range maxModelNames + 10 {
		if m := fmt.Sprintf("model-%d", i); read(`{"model":"`+m+`"}`) != m {
			t.Fatalf("model %d misread", i)
		}
	}
	if m := names.m.Load(); len(*m) != maxModelNames {
		t.Errorf("%d names kept, want %d", len(*m), maxModelNames)
	}
	body := []byte(`{"model":"gpt-4o-mini"}`)
	var s reqScanner
	s.reset()
	s.feed(body)
	if n := testing.AllocsPerRun(100, func() {
		if s.model(&names) != "gpt-4o-mini" {
			t.Fatal("misread")
		}
	}); n != 0 {
		t.Errorf("%v allocations reading a kept name", n)
	}
}
