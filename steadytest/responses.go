package steadytest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"
)

// JSON returns a response with the given status, a JSON body and the
// headers given as key, value pairs. It sets Content-Type to
// application/json unless the pairs set it.
func JSON(status int, body string, headerKV ...string) Response {
	r := Response{Status: status, Body: body, header: http.Header{}}
	r.header.Set("Content-Type", "application/json")
	return r.WithHeader(headerKV...)
}

// SSE returns a 200 response streaming each of data as one server-sent
// event ("data: ...\n\n"), all at once. Use [Response.ChunkEvery] to space
// them out. SSE adds no "[DONE]" event: pass it as the last data if the
// client expects one.
func SSE(data ...string) Response {
	r := Response{Status: http.StatusOK, header: http.Header{}}
	r.header.Set("Content-Type", "text/event-stream")
	r.header.Set("Cache-Control", "no-cache")
	for _, d := range data {
		r.Chunks = append(r.Chunks, Chunk{Data: "data: " + d + "\n\n"})
	}
	return r
}

// WithHeader returns a copy of r with the headers given as key, value
// pairs set (replacing earlier values of the same keys). It panics if the
// pairs are odd in number.
func (r Response) WithHeader(headerKV ...string) Response {
	if len(headerKV)%2 != 0 {
		panic("steadytest: WithHeader needs key, value pairs; got an odd number of strings")
	}
	h := r.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	for i := 0; i < len(headerKV); i += 2 {
		h.Set(headerKV[i], headerKV[i+1])
	}
	r.header = h
	return r
}

// WithDelay returns a copy of r whose headers arrive after d.
func (r Response) WithDelay(d time.Duration) Response {
	r.delay = d
	return r
}

// ChunkEvery returns a copy of r in which every chunk arrives d after the
// previous one (the first d after the headers).
func (r Response) ChunkEvery(d time.Duration) Response {
	chunks := make([]Chunk, len(r.Chunks))
	copy(chunks, r.Chunks)
	for i := range chunks {
		chunks[i].Delay = d
	}
	r.Chunks = chunks
	return r
}

// OpenAIError returns a response with status and an OpenAI-shaped error
// body: {"error": {"message", "type", "param", "code"}}. An empty code is
// sent as null.
func OpenAIError(status int, typ, code, message string) Response {
	return JSON(status, string(openAIErrorBody(typ, code, message)))
}

// RateLimited returns an OpenAI-style 429 ("rate_limit_exceeded") asking
// the client to retry after d, in both retry-after-ms and retry-after
// (whole seconds, rounded up). Keep d small in tests through the real SDK,
// which sleeps in real time outside a synctest bubble.
func RateLimited(d time.Duration) Response {
	r := OpenAIError(http.StatusTooManyRequests, "requests", "rate_limit_exceeded",
		"Rate limit reached for requests. Please try again in "+d.String()+".")
	return r.WithHeader(
		"Retry-After-Ms", strconv.FormatInt(max(d.Milliseconds(), 0), 10),
		"Retry-After", strconv.FormatInt(ceilSeconds(d), 10),
	)
}

// InsufficientQuota returns OpenAI's 429 for an account out of credit,
// which must not be retried.
func InsufficientQuota() Response {
	return OpenAIError(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota",
		"You exceeded your current quota, please check your plan and billing details.")
}

// ServerError returns a response with status (500 if zero) and an
// OpenAI-shaped server_error body.
func ServerError(status int) Response {
	if status == 0 {
		status = http.StatusInternalServerError
	}
	return OpenAIError(status, "server_error", "", "The server had an error while processing your request.")
}

// ConnReset returns a response that fails the request with the error a
// real transport returns when the peer resets the connection: a
// *net.OpError for which errors.Is(err, syscall.ECONNRESET) holds (its Err
// field).
func ConnReset() Response {
	return Response{Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
}

// ChatCompletion returns a 200 response carrying a chat completion whose
// single choice says content, with a small usage block.
func ChatCompletion(content string) Response {
	body := chatCompletionJSON("chatcmpl-steadytest", defaultModel, content, 1, usage{
		PromptTokens: 8, CompletionTokens: estimateTokens(content),
	})
	return JSON(http.StatusOK, string(body))
}

// ChatCompletionStream returns a 200 server-sent-event stream of chat
// completion chunks, one per part, ending with "[DONE]".
func ChatCompletionStream(parts ...string) Response {
	data := make([]string, 0, len(parts)+2)
	data = append(data, string(chatChunkJSON("chatcmpl-steadytest", defaultModel, 0, &delta{Role: "assistant"}, nil, nil)))
	for _, p := range parts {
		data = append(data, string(chatChunkJSON("chatcmpl-steadytest", defaultModel, 0, &delta{Content: p}, nil, nil)))
	}
	stop := "stop"
	data = append(data, string(chatChunkJSON("chatcmpl-steadytest", defaultModel, 0, &delta{}, &stop, nil)))
	data = append(data, "[DONE]")
	return SSE(data...)
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// mustJSON marshals v, which is always a value of this package's own wire
// types.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("steadytest: marshal %T: %v", v, err))
	}
	return b
}
