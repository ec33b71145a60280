package steadytest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// endpoint is an API the provider serves.
type endpoint int

const (
	epUnknown endpoint = iota
	epChat
	epResponses
	epEmbeddings
	epModels
)

// route finds the endpoint a path ends in, under any prefix.
func route(path string) endpoint {
	path = strings.TrimSuffix(path, "/")
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return epChat
	case strings.HasSuffix(path, "/responses"):
		return epResponses
	case strings.HasSuffix(path, "/embeddings"):
		return epEmbeddings
	case strings.HasSuffix(path, "/models"):
		return epModels
	}
	return epUnknown
}

func (e endpoint) method() string {
	if e == epModels {
		return "GET"
	}
	return "POST"
}

// apiRequest is what the provider reads from a request body.
type apiRequest struct {
	ep           endpoint
	model        string
	stream       bool
	includeUsage bool
	n            int
	maxTokens    int64 // 0: not set
	promptTokens int64
	inputs       int // embeddings: how many inputs
	dimensions   int
	base64       bool
	// output, when not negative, is how many tokens the completion
	// generates (ProviderConfig.OutputTokens), already cut to maxTokens.
	output int64
}

// cost is the tokens the request counts against the tokens limit: the
// prompt estimate plus the completion budget, times n.
func (r *apiRequest) cost() int64 {
	return satMul(satAdd(r.promptTokens, r.maxTokens), int64(r.n))
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func satMul(a, b int64) int64 {
	if b != 0 && a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

// textCounter adds up the characters of the texts in a request.
type textCounter struct{ runes int64 }

func (c *textCounter) add(s string) { c.runes += int64(utf8.RuneCountInString(s)) }

func (c *textCounter) tokens() int64 { return (c.runes + 3) / 4 }

// content adds the texts of a message content or a responses input: a
// string, or a list of parts and items whose "text" and "content" fields
// hold text.
func (c *textCounter) content(v any) {
	switch v := v.(type) {
	case string:
		c.add(v)
	case []any:
		for _, e := range v {
			c.content(e)
		}
	case map[string]any:
		if s, ok := v["text"].(string); ok {
			c.add(s)
		}
		if ct, ok := v["content"]; ok {
			c.content(ct)
		}
	}
}

var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadRequest}, args...)...)
}

// parseRequest reads a request body for endpoint ep.
func parseRequest(ep endpoint, body []byte) (apiRequest, error) {
	r := apiRequest{ep: ep, n: 1, model: defaultModel, output: -1}
	if ep == epModels {
		return r, nil
	}
	var in struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		N                   *int    `json:"n"`
		MaxTokens           *int64  `json:"max_tokens"`
		MaxCompletionTokens *int64  `json:"max_completion_tokens"`
		MaxOutputTokens     *int64  `json:"max_output_tokens"`
		Messages            []any   `json:"messages"`
		Input               any     `json:"input"`
		Instructions        *string `json:"instructions"`
		Dimensions          *int    `json:"dimensions"`
		EncodingFormat      string  `json:"encoding_format"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return r, badRequest("the body is not valid JSON: %v", err)
	}
	if in.Model == "" {
		return r, badRequest("you must provide a model parameter")
	}
	r.model = in.Model
	r.stream = in.Stream && ep != epEmbeddings
	r.includeUsage = r.stream && in.StreamOptions != nil && in.StreamOptions.IncludeUsage
	if in.N != nil {
		if *in.N < 1 || *in.N > 128 {
			return r, badRequest("n must be between 1 and 128, got %d", *in.N)
		}
		r.n = *in.N
	}
	for _, m := range []*int64{in.MaxOutputTokens, in.MaxTokens, in.MaxCompletionTokens} {
		if m != nil {
			if *m < 0 {
				return r, badRequest("token limits must not be negative, got %d", *m)
			}
			r.maxTokens = *m
		}
	}
	var tc textCounter
	switch ep {
	case epChat:
		if len(in.Messages) == 0 {
			return r, badRequest("'messages' must be a non-empty array")
		}
		for _, m := range in.Messages {
			mm, ok := m.(map[string]any)
			if !ok {
				return r, badRequest("each message must be an object")
			}
			if _, ok := mm["role"].(string); !ok {
				return r, badRequest("each message needs a 'role'")
			}
			tc.content(mm["content"])
		}
	case epResponses:
		if in.Input == nil && in.Instructions == nil {
			return r, badRequest("provide 'input' or 'instructions'")
		}
		tc.content(in.Input)
		if in.Instructions != nil {
			tc.add(*in.Instructions)
		}
	case epEmbeddings:
		n, toks, err := embeddingInput(in.Input)
		if err != nil {
			return r, err
		}
		r.inputs, r.maxTokens, r.n = n, 0, 1
		r.promptTokens = toks
		if in.Dimensions != nil {
			if *in.Dimensions < 1 || *in.Dimensions > 4096 {
				return r, badRequest("dimensions must be between 1 and 4096, got %d", *in.Dimensions)
			}
			r.dimensions = *in.Dimensions
		}
		switch in.EncodingFormat {
		case "", "float":
		case "base64":
			r.base64 = true
		default:
			return r, badRequest("encoding_format must be float or base64, got %q", in.EncodingFormat)
		}
		return r, nil
	}
	r.promptTokens = tc.tokens()
	return r, nil
}

// embeddingInput reads an embeddings input: a string, strings, a token
// array or token arrays. It returns the number of inputs and their tokens.
func embeddingInput(v any) (inputs int, tokens int64, err error) {
	var tc textCounter
	switch v := v.(type) {
	case string:
		tc.add(v)
		return 1, max(tc.tokens(), 1), nil
	case []any:
		if len(v) == 0 {
			break
		}
		if _, ok := v[0].(float64); ok {
			return 1, int64(len(v)), nil
		}
		for _, e := range v {
			switch e := e.(type) {
			case string:
				tc.add(e)
				tokens += max((int64(utf8.RuneCountInString(e))+3)/4, 1)
			case []any:
				tokens += int64(len(e))
			default:
				return 0, 0, badRequest("'input' must be a string, strings, or token arrays")
			}
		}
		return len(v), tokens, nil
	}
	return 0, 0, badRequest("'input' must be a non-empty string, array of strings, or token arrays")
}

// completion is the canned answer to r: its text, its tokens and its
// finish reason, cut to r's token budget.
func completion(answer string, r *apiRequest) (text string, tokens int64, finish string) {
	if r.output >= 0 {
		text, finish = generated(r.output), "stop"
		if r.maxTokens > 0 && r.output >= r.maxTokens {
			finish = "length"
		}
		return text, r.output, finish
	}
	text, finish = answer, "stop"
	tokens = int64(estimateTokens(text))
	if r.maxTokens > 0 && tokens > r.maxTokens {
		rs := []rune(text)
		text = string(rs[:min(int64(len(rs)), r.maxTokens*4)])
		tokens, finish = r.maxTokens, "length"
	}
	return text, tokens, finish
}

// generated is a text of n tokens (four characters a token), in words of
// four tokens.
func generated(n int64) string {
	const word = "abcdefghijklmno "
	var b strings.Builder
	b.Grow(int(4 * n))
	for left := int(4 * n); left > 0; left -= len(word) {
		b.WriteString(word[:min(left, len(word))])
	}
	return b.String()
}

// usageCost is what the request counts against a tokens limit that
// counts usage: its prompt and the tokens its completion generates.
func (r *apiRequest) usageCost(answer string) int64 {
	if r.ep != epChat && r.ep != epResponses {
		return r.promptTokens
	}
	_, toks, _ := completion(answer, r)
	return satAdd(r.promptTokens, satMul(toks, int64(r.n)))
}

// words splits text into stream deltas, keeping the spaces.
func words(text string) []string {
	var out []string
	for text != "" {
		i := strings.IndexByte(text[1:], ' ')
		if i < 0 {
			out = append(out, text)
			break
		}
		out = append(out, text[:i+1])
		text = text[i+1:]
	}
	return out
}

// chatBody is a non-streamed chat completion.
func chatBody(id, answer string, r *apiRequest) []byte {
	text, toks, finish := completion(answer, r)
	c := chatCompletion{
		ID: id, Object: "chat.completion", Created: time.Now().Unix(), Model: r.model,
		Usage: usage{PromptTokens: int(r.promptTokens), CompletionTokens: int(toks) * r.n},
	}
	c.Usage.TotalTokens = c.Usage.PromptTokens + c.Usage.CompletionTokens
	for i := range r.n {
		c.Choices = append(c.Choices, choice{
			Index: i, Message: message{Role: "assistant", Content: text}, FinishReason: finish,
		})
	}
	return mustJSON(c)
}

// chatEvents is a streamed chat completion, as SSE data payloads.
func chatEvents(id, answer string, r *apiRequest) []string {
	text, toks, finish := completion(answer, r)
	var u json.RawMessage
	if r.includeUsage {
		u = json.RawMessage("null")
	}
	var out []string
	for i := range r.n {
		out = append(out, string(chatChunkJSON(id, r.model, i, &delta{Role: "assistant"}, nil, u)))
		for _, w := range words(text) {
			out = append(out, string(chatChunkJSON(id, r.model, i, &delta{Content: w}, nil, u)))
		}
		out = append(out, string(chatChunkJSON(id, r.model, i, &delta{}, &finish, u)))
	}
	if r.includeUsage {
		us := usage{PromptTokens: int(r.promptTokens), CompletionTokens: int(toks) * r.n}
		us.TotalTokens = us.PromptTokens + us.CompletionTokens
		out = append(out, string(chatChunkJSON(id, r.model, 0, nil, nil, mustJSON(us))))
	}
	return append(out, "[DONE]")
}

type respContent struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
}

type respItem struct {
	Type    string        `json:"type"`
	ID      string        `json:"id"`
	Status  string        `json:"status"`
	Role    string        `json:"role"`
	Content []respContent `json:"content"`
}

type respUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

type respObject struct {
	ID        string     `json:"id"`
	Object    string     `json:"object"`
	CreatedAt int64      `json:"created_at"`
	Status    string     `json:"status"`
	Model     string     `json:"model"`
	Output    []respItem `json:"output"`
	Usage     *respUsage `json:"usage"`
}

func responseObject(id, answer string, r *apiRequest, done bool) respObject {
	text, toks, _ := completion(answer, r)
	o := respObject{
		ID: id, Object: "response", CreatedAt: time.Now().Unix(), Status: "in_progress", Model: r.model,
		Output: []respItem{},
	}
	if done {
		o.Status = "completed"
		o.Output = append(o.Output, respItem{
			Type: "message", ID: "msg_" + strings.TrimPrefix(id, "resp_"), Status: "completed", Role: "assistant",
			Content: []respContent{{Type: "output_text", Text: text, Annotations: []any{}}},
		})
		o.Usage = &respUsage{InputTokens: r.promptTokens, OutputTokens: toks, TotalTokens: r.promptTokens + toks}
	}
	return o
}

// responsesEvents is a streamed response, as "event:"/"data:" SSE frames.
func responsesEvents(id, answer string, r *apiRequest) []string {
	text, _, _ := completion(answer, r)
	itemID := "msg_" + strings.TrimPrefix(id, "resp_")
	seq := 0
	frame := func(typ string, fields map[string]any) string {
		fields["type"] = typ
		fields["sequence_number"] = seq
		seq++
		return "event: " + typ + "\ndata: " + string(mustJSON(fields)) + "\n\n"
	}
	out := []string{frame("response.created", map[string]any{"response": responseObject(id, answer, r, false)})}
	for _, w := range words(text) {
		out = append(out, frame("response.output_text.delta", map[string]any{
			"item_id": itemID, "output_index": 0, "content_index": 0, "delta": w, "logprobs": []any{},
		}))
	}
	return append(out, frame("response.completed", map[string]any{"response": responseObject(id, answer, r, true)}))
}

// embeddingsBody is an embeddings list with one small vector per input.
func embeddingsBody(r *apiRequest) []byte {
	dims := r.dimensions
	if dims == 0 {
		dims = 8
	}
	type item struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	out := struct {
		Object string `json:"object"`
		Data   []item `json:"data"`
		Model  string `json:"model"`
		Usage  struct {
			PromptTokens int64 `json:"prompt_tokens"`
			TotalTokens  int64 `json:"total_tokens"`
		} `json:"usage"`
	}{Object: "list", Model: r.model}
	out.Usage.PromptTokens, out.Usage.TotalTokens = r.promptTokens, r.promptTokens
	for i := range r.inputs {
		vec := make([]float32, dims)
		for j := range vec {
			vec[j] = float32(math.Sin(float64(i*dims+j+1))) / 2
		}
		var e any = vec
		if r.base64 {
			b := make([]byte, 4*dims)
			for j, f := range vec {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(f))
			}
			e = base64.StdEncoding.EncodeToString(b)
		}
		out.Data = append(out.Data, item{Object: "embedding", Index: i, Embedding: e})
	}
	return mustJSON(out)
}

// modelsBody lists the provider's models.
func modelsBody(models []string) []byte {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range models {
		out.Data = append(out.Data, model{ID: m, Object: "model", Created: 1700000000, OwnedBy: "steadytest"})
	}
	return mustJSON(out)
}
