package steady

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// scanAll feeds body to a usage scan in pieces of size n and returns what
// it read.
func scanAll(body string, n int) (TokenEstimate, bool, bool) {
	var s usageScan
	for len(body) > 0 {
		k := min(n, len(body))
		s.feed([]byte(body[:k]))
		body = body[k:]
	}
	return s.result()
}

func TestUsageScanJSON(t *testing.T) {
	long := strings.Repeat(`x \"usage\": {\"prompt_tokens\": 99} `, 200)
	cases := []struct {
		name  string
		body  string
		want  TokenEstimate
		outOK bool
		ok    bool
	}{
		{"chat", `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` + long + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":345,"total_tokens":357,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":7}},"system_fingerprint":"fp"}`, TokenEstimate{12, 345}, true, true},
		{"spaces", "{\n  \"usage\" :\n {\"prompt_tokens\": 3 , \"completion_tokens\" : 4}\n}", TokenEstimate{3, 4}, true, true},
		{"embeddings", `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,3e-5]}],"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}`, TokenEstimate{8, 0}, false, true},
		{"responses", `{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"usage"}]}],"usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":5},"output_tokens":70,"output_tokens_details":{"reasoning_tokens":30},"total_tokens":90}}`, TokenEstimate{20, 70}, true, true},
		{"anthropic", `{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":40,"output_tokens":15,"service_tier":"standard","cache_creation":{"ephemeral_5m_input_tokens":10}}}`, TokenEstimate{35, 15}, true, true},
		{"null", `{"usage":null,"choices":[]}`, TokenEstimate{}, false, false},
		{"string value", `{"content":"usage","x":{"prompt_tokens":5}}`, TokenEstimate{}, false, false},
		{"none", `{"id":"x","data":[1,2,3]}`, TokenEstimate{}, false, false},
		{"not json", `<html>usage</html>`, TokenEstimate{}, false, false},
	}
	for _, tc := range cases {
		for _, n := range []int{1, 2, 3, 7, 64, 1 << 20} {
			got, outOK, ok := scanAll(tc.body, n)
			if got != tc.want || outOK != tc.outOK || ok != tc.ok {
				t.Errorf("%s in pieces of %d: %+v outOK %v ok %v, want %+v %v %v", tc.name, n, got, outOK, ok, tc.want, tc.outOK, tc.ok)
			}
		}
	}
}

// sseBody is a stream as a watched body reads it.
func watchSSE(t *testing.T, stream string, piece int, readAll bool) (*permit, []Event) {
	t.Helper()
	var evs []Event
	p := newPacer(PacingConfig{TokensPerMinute: 100000, TokensByUsage: true}, pacerDeps{emit: func(ev Event) { evs = append(evs, ev) }})
	req, _ := http.NewRequest("POST", "https://api.example.test/v1/chat/completions", nil)
	pm, err := p.acquire(t.Context(), req, admitOpts{})
	if err != nil {
		t.Fatal(err)
	}
	pm.est = TokenEstimate{Input: 10, Output: 1000}
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}, Body: io.NopCloser(&pieces{s: stream, n: piece})}
	pm.settle(resp, nil)
	watch(resp, pm, nil, true)
	var got strings.Builder
	if readAll {
		io.Copy(&got, resp.Body)
		if got.String() != stream {
			t.Errorf("the caller read %q, want the stream unchanged", got.String())
		}
	} else {
		buf := make([]byte, len(stream)/2)
		io.ReadFull(resp.Body, buf)
	}
	resp.Body.Close()
	return pm, evs
}

// pieces reads s in pieces of n bytes.
type pieces struct {
	s string
	n int
}

func (p *pieces) Read(b []byte) (int, error) {
	if p.s == "" {
		return 0, io.EOF
	}
	k := copy(b[:min(len(b), p.n)], p.s)
	p.s = p.s[k:]
	return k, nil
}

const (
	chatStream = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi usage\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":42,\"total_tokens\":51}}\n\n" +
		"data: [DONE]\n\n"
	anthropicStream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	responsesStream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"usage\":null}}\n\n" +
		"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\",\"usage\":{\"input_tokens\":7,\"output_tokens\":33,\"total_tokens\":40}}}\n\n"
)

func TestUsageWatchStreams(t *testing.T) {
	cases := []struct {
		name   string
		stream string
		want   TokenEstimate
	}{
		{"chat", chatStream, TokenEstimate{9, 42}},
		{"anthropic", anthropicStream, TokenEstimate{25, 15}},
		{"responses", responsesStream, TokenEstimate{7, 33}},
	}
	for _, tc := range cases {
		for _, n := range []int{1, 5, 17, 4096} {
			_, evs := watchSSE(t, tc.stream, n, true)
			if len(evs) != 1 || evs[0].Kind != EventUsage || evs[0].Used != tc.want || evs[0].Reserved != (TokenEstimate{10, 1000}) {
				t.Errorf("%s in pieces of %d: events %+v, want one usage event with %+v", tc.name, n, evs, tc.want)
			}
		}
	}
}

// TestUsageClosedEarly: a stream closed before its end settles the input
// it told, and keeps the output reserved: what was generated is not known.
func TestUsageClosedEarly(t *testing.T) {
	_, evs := watchSSE(t, anthropicStream, 4096, false)
	if len(evs) != 1 || evs[0].Used != (TokenEstimate{25, 1000}) {
		t.Errorf("events %+v, want a usage event with the input told and the output reserved", evs)
	}
}

// TestUsageCorrectsLocalWindow: in a configured tokens window, a use
// settled below its estimate gives the difference back at once, and what
// comes back one period later is what was used.
func TestUsageCorrectsLocalWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{TokensPerMinute: 10000, TokensByUsage: true, Headroom: -1}, pacerDeps{})
		req, _ := http.NewRequest("POST", "https://api.example.test/v1/chat/completions", nil)
		pm, err := p.acquire(t.Context(), req, admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pt := pm.pt
		avail := func() float64 {
			pt.mu.Lock()
			defer pt.mu.Unlock()
			pt.advanceLocked(p, time.Now())
			return pt.windows[0].avail
		}
		// acquire took nothing: no body. Take a use of 4,000 by hand.
		pt.mu.Lock()
		pt.windows[0].take(time.Now(), 4000)
		pm.est = TokenEstimate{Input: 0, Output: 4000}
		pt.flying.add(pm.est)
		pt.mu.Unlock()
		pm.settle(&http.Response{StatusCode: 200, Header: http.Header{}}, nil)
		if got := avail(); got != 6000 {
			t.Fatalf("avail after the answer %v, want 6000", got)
		}
		pm.used(TokenEstimate{Output: 300}, true)
		if got := avail(); got != 9700 {
			t.Errorf("avail after usage of 300 %v, want 9700", got)
		}
		time.Sleep(61 * time.Second)
		if got := avail(); got != 10000 {
			t.Errorf("avail a period later %v, want 10000", got)
		}
	})
}

// TestWatchErrorEvent: an error event after content ends the body with a
// *StreamError, whatever the pieces the stream comes in: the bytes before
// it reach the caller exactly, the event's do not.
func TestWatchErrorEvent(t *testing.T) {
	before := "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n: comment\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" there\"}}],\"usage\":null}\n\n"
	for _, ev := range []string{
		"data: {\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n",
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n",
		"data:{\"error\": {\"type\": \"overloaded_error\", \"message\": \"busy\"}}\r\n\r\n",
	} {
		for _, n := range []int{1, 2, 5, 17, 4096} {
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
				Body: io.NopCloser(&pieces{s: before + ev + "data: {\"choices\":[]}\n\n", n: n})}
			watch(resp, nil, nil, true)
			got, err := io.ReadAll(resp.Body)
			var se *StreamError
			if string(got) != before || !errors.As(err, &se) || se.Status != 529 || se.Type != "overloaded_error" || se.Message != "busy" {
				t.Errorf("pieces of %d: read %q, %v; want the bytes before the event and a 529 StreamError", n, got, err)
			}
		}
	}
}

// TestStreamErrorCarriesUsage: a StreamError carries the usage the stream
// told before it.
func TestStreamErrorCarriesUsage(t *testing.T) {
	s := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n" +
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal\"}}\n\n"
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(strings.NewReader(s))}
	watch(resp, nil, nil, true)
	_, err := io.ReadAll(resp.Body)
	var se *StreamError
	if !errors.As(err, &se) || se.Status != 500 || se.Used != (TokenEstimate{25, 1}) {
		t.Errorf("err %v (%+v), want a 500 StreamError with the usage told", err, se)
	}
	if f := ClassifyError(err); f.Status != 500 || !f.Retryable || f.Type != "api_error" {
		t.Errorf("ClassifyError: %+v", f)
	}
}

// TestWatchOnlyWhenUsed: a body that is not a stream is wrapped only when
// its usage is used and it may be JSON; a stream always is.
func TestWatchOnlyWhenUsed(t *testing.T) {
	p := newPacer(PacingConfig{TokensPerMinute: 100000}, pacerDeps{})
	req, _ := http.NewRequest("POST", "https://api.example.test/v1/chat/completions", nil)
	cases := []struct {
		ct      string
		need    bool
		watched bool
	}{
		{"application/json", false, false},
		{"application/json", true, true},
		{"application/vnd.api+json; charset=utf-8", true, true},
		{"", true, true},
		{"text/plain", true, true},
		{"audio/mpeg", true, false},
		{"text/html", true, false},
		{"text/event-stream", false, true},
	}
	for _, tc := range cases {
		pm, err := p.acquire(t.Context(), req, admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {tc.ct}}, Body: io.NopCloser(strings.NewReader(`{"usage":{"prompt_tokens":1}}`))}
		pm.settle(resp, nil)
		watch(resp, pm, nil, tc.need)
		if _, ok := resp.Body.(*watchedBody); ok != tc.watched {
			t.Errorf("%q need %v: watched %v, want %v", tc.ct, tc.need, ok, tc.watched)
		}
		resp.Body.Close()
	}
}
