package steady

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
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
	if n := testing.AllocsPerRun(100, func() { scanRequest(body) }); n != 0 {
		t.Errorf("scanRequest allocates %v times", n)
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

// FuzzEstimate checks that the scanner never panics, never returns a
// negative or unbounded estimate, returns a model that is part of the body,
// and agrees with encoding/json on the model of valid bodies.
func FuzzEstimate(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_completion_tokens":100,"n":2}`,
		`{"model":"o3","instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"max_output_tokens":10}`,
		`{"model":"e","input":[[1,2,3],[4,5]]}`,
		`{"model":"a\"b\\","input":"x"}`,
		`{"max_tokens":99999999999999999999999999}`,
		`{"messages":[[[[[[[[[[`,
		`not json`,
		string(chatBody(512)),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		model, est := scanRequest(body)
		if est.Input < 0 || est.Output < 0 || est.Input > maxTokensValue || est.Output > maxTokensValue {
			t.Fatalf("estimate out of range: %+v", est)
		}
		if len(model) > 0 && !bytes.Contains(body, model) {
			t.Fatalf("model %q is not in the body", model)
		}
		var v map[string]json.RawMessage
		if json.Unmarshal(body, &v) != nil {
			return
		}
		var m string
		raw, ok := v["model"]
		if !ok || !utf8.Valid(raw) || json.Unmarshal(raw, &m) != nil || strings.ContainsAny(m, "\\\"") || bytes.Contains(raw, []byte{'\\'}) {
			return
		}
		// encoding/json keeps the last of duplicate keys; so does the scanner.
		if bytes.Count(body, []byte(`"model"`)) != 1 {
			return
		}
		if string(model) != m {
			t.Fatalf("model %q, encoding/json says %q", model, m)
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
