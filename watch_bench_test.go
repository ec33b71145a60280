package steady

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// benchChatJSON is a non-streamed chat completion of about 4 KiB of text.
func benchChatJSON() []byte {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog, then reads a story about languages. ", 50)
	return []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"` + text + `","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":950,"total_tokens":962,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}`)
}

// benchChatStream is a streamed chat completion of 200 events, with a
// final usage chunk.
func benchChatStream() []byte {
	var b strings.Builder
	words := strings.Fields("The quick brown fox jumps over the lazy dog then reads a story about languages")
	for i := range 200 {
		fmt.Fprintf(&b, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" %s\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n", words[i%len(words)])
	}
	b.WriteString("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":200,\"total_tokens\":212}}\n\ndata: [DONE]\n\n")
	return []byte(b.String())
}

// eventReader returns one event (up to a blank line) per Read, as a
// stream arrives from the network.
type eventReader struct{ b []byte }

func (r *eventReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := len(r.b)
	if i := bytes.Index(r.b, []byte("\n\n")); i >= 0 {
		n = i + 2
	}
	n = copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// benchWatch reads body through a watched body (bare: the reader alone)
// and reports the cost per KiB. The watched body is reused, so that
// allocs/op counts what the reads allocate, not the body's one.
func benchWatch(b *testing.B, body []byte, sse, bare bool, reader func([]byte) io.Reader) {
	buf := make([]byte, 32<<10)
	w := &watchedBody{sse: sse}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r := reader(body)
		var rd io.Reader = r
		if !bare {
			*w = watchedBody{rc: io.NopCloser(r), sse: sse}
			rd = w
		}
		for {
			_, err := rd.Read(buf)
			if err != nil {
				break
			}
		}
		if !bare {
			if u, _, ok := w.scan.result(); !ok || u.Output == 0 {
				b.Fatal("no usage read")
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(float64(len(body))/1024), "ns/KiB")
}

// BenchmarkWatch measures what watching a body costs per KiB, beside
// reading it bare: a JSON body in 4 KiB reads, a stream an event a read
// (as it arrives) and in 4 KiB reads.
//
//	go test -run '^$' -bench Watch -benchmem .
func BenchmarkWatch(b *testing.B) {
	js, st := benchChatJSON(), benchChatStream()
	chunks := func(bb []byte) io.Reader { return &chunkReader{b: bb, n: 4 << 10} }
	events := func(bb []byte) io.Reader { return &eventReader{b: bb} }
	for _, bare := range []bool{true, false} {
		name := "watched"
		if bare {
			name = "bare"
		}
		b.Run("json/4KiB-reads/"+name, func(b *testing.B) { benchWatch(b, js, false, bare, chunks) })
		b.Run("stream/event-reads/"+name, func(b *testing.B) { benchWatch(b, st, true, bare, events) })
		b.Run("stream/4KiB-reads/"+name, func(b *testing.B) { benchWatch(b, st, true, bare, chunks) })
	}
}
