package steadytest

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// defaultModel is the model named in canned answers when the request names
// none.
const defaultModel = "steady-test-model"

// usage is OpenAI's chat completions usage block.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type message struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type choice struct {
	Index        int       `json:"index"`
	Message      message   `json:"message"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

type chatCompletion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   usage    `json:"usage"`
}

type delta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        delta     `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatChunk struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []chunkChoice   `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

// chatCompletionJSON is a chat.completion object with n identical choices.
func chatCompletionJSON(id, model, content string, n int, u usage) []byte {
	if n < 1 {
		n = 1
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	c := chatCompletion{
		ID: id, Object: "chat.completion", Created: time.Now().Unix(), Model: model, Usage: u,
	}
	for i := range n {
		c.Choices = append(c.Choices, choice{
			Index:        i,
			Message:      message{Role: "assistant", Content: content},
			FinishReason: "stop",
		})
	}
	return mustJSON(c)
}

// chatChunkJSON is a chat.completion.chunk object. A nil d means no choice
// (the final usage chunk). u is the usage field: nil leaves it out, as when
// the client did not ask for usage.
func chatChunkJSON(id, model string, index int, d *delta, finish *string, u json.RawMessage) []byte {
	c := chatChunk{
		ID: id, Object: "chat.completion.chunk", Created: time.Now().Unix(), Model: model,
		Choices: []chunkChoice{}, Usage: u,
	}
	if d != nil {
		c.Choices = append(c.Choices, chunkChoice{Index: index, Delta: *d, FinishReason: finish})
	}
	return mustJSON(c)
}

type openAIError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// openAIErrorBody is {"error": {...}} as OpenAI sends it.
func openAIErrorBody(typ, code, msg string) []byte {
	e := openAIError{Message: msg, Type: typ}
	if code != "" {
		e.Code = &code
	}
	return mustJSON(struct {
		Error openAIError `json:"error"`
	}{e})
}

// estimateTokens estimates the tokens of a text the way a cheap client
// does: about four characters a token, at least one for non-empty text.
func estimateTokens(s string) int {
	n := utf8.RuneCountInString(s)
	if n == 0 {
		return 0
	}
	return (n + 3) / 4
}
