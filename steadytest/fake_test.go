package steadytest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady/steadytest"
)

const base = "https://api.example.test/v1"

func post(t *testing.T, rt http.RoundTripper, ctx context.Context, path, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return rt.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

func TestFakeAnswersInOrder(t *testing.T) {
	f := steadytest.NewFake(
		steadytest.RateLimited(time.Millisecond),
		steadytest.ServerError(503),
	)
	f.Add(steadytest.JSON(200, `{"ok":true}`, "X-Request-Id", "req_3"))
	want := []int{429, 503, 200}
	for i, w := range want {
		resp, err := post(t, f, context.Background(), "/chat/completions", fmt.Sprintf(`{"i":%d}`, i))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.StatusCode != w {
			t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, w)
		}
		readAll(t, resp)
	}
	if got := f.Calls(); got != 3 {
		t.Errorf("Calls() = %d, want 3", got)
	}
	reqs := f.Requests()
	if len(reqs) != 3 {
		t.Fatalf("Requests() has %d, want 3", len(reqs))
	}
	for i, r := range reqs {
		if want := fmt.Sprintf(`{"i":%d}`, i); string(r.Body) != want {
			t.Errorf("request %d body %q, want %q", i, r.Body, want)
		}
		if r.Method != "POST" || r.URL.Path != "/v1/chat/completions" {
			t.Errorf("request %d recorded as %s %s", i, r.Method, r.URL.Path)
		}
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request %d header not recorded: %v", i, r.Header)
		}
		if r.URL.Host != "api.example.test" {
			t.Errorf("request %d URL %v", i, r.URL)
		}
	}
}

func TestFakeResponseFields(t *testing.T) {
	f := steadytest.NewFake(steadytest.Response{Body: "hello"}, steadytest.Response{Status: 204})
	req, _ := http.NewRequest(http.MethodGet, base+"/models", nil)
	resp, err := f.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Status != "200 OK" {
		t.Errorf("zero Status gave %d %q", resp.StatusCode, resp.Status)
	}
	if resp.Request != req {
		t.Error("Response.Request is not the request")
	}
	if resp.Header == nil {
		t.Error("Response.Header is nil")
	}
	if resp.ContentLength != 5 {
		t.Errorf("ContentLength = %d, want 5", resp.ContentLength)
	}
	if got := readAll(t, resp); got != "hello" {
		t.Errorf("body %q", got)
	}
	resp, err = f.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 204 || resp.ContentLength != 0 {
		t.Errorf("got %d with length %d", resp.StatusCode, resp.ContentLength)
	}
	if f.Requests()[0].Body != nil {
		t.Error("a request without a body recorded a body")
	}
}

func TestFakeReusedResponseHeadersAreIndependent(t *testing.T) {
	r := steadytest.JSON(200, `{}`, "X-A", "1")
	f := steadytest.NewFake(r, r)
	resp1, _ := post(t, f, context.Background(), "/x", "")
	resp1.Header.Set("X-A", "changed")
	resp2, _ := post(t, f, context.Background(), "/x", "")
	if got := resp2.Header.Get("X-A"); got != "1" {
		t.Errorf("second response's header = %q, want 1", got)
	}
}

func TestFakeMatchers(t *testing.T) {
	f := steadytest.NewFake(steadytest.JSON(200, `"seq1"`), steadytest.JSON(200, `"seq2"`))
	f.On(matchPath("/embeddings"), steadytest.JSON(200, `"emb"`))
	streamed := func(r *steadytest.Request) bool {
		return r.Method == "POST" && strings.Contains(string(r.Body), `"stream":true`)
	}
	f.On(streamed, steadytest.JSON(200, `"stream1"`), steadytest.JSON(200, `"stream2"`))

	cases := []struct{ path, body, want string }{
		{"/chat/completions", `{"stream":true}`, `"stream1"`},
		{"/embeddings", `{}`, `"emb"`},
		{"/embeddings", `{}`, `"seq1"`}, // the matcher's answers are used up
		{"/chat/completions", `{}`, `"seq2"`},
		{"/chat/completions", `{"stream":true}`, `"stream2"`},
	}
	for i, c := range cases {
		resp, err := post(t, f, context.Background(), c.path, c.body)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if got := readAll(t, resp); got != c.want {
			t.Errorf("case %d (%s %s): got %s, want %s", i, c.path, c.body, got, c.want)
		}
	}
	if _, err := post(t, f, context.Background(), "/chat/completions", `{"stream":true}`); !errors.Is(err, steadytest.ErrNoResponse) {
		t.Errorf("after everything is used: err = %v, want ErrNoResponse", err)
	}
}

// matchPath matches a request whose URL path ends with p.
func matchPath(p string) func(*steadytest.Request) bool {
	return func(r *steadytest.Request) bool { return strings.HasSuffix(r.URL.Path, p) }
}

// recordingTB captures Errorf calls.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestFakeExhaustedScript(t *testing.T) {
	tb := &recordingTB{TB: t}
	f := steadytest.NewFakeT(tb, steadytest.Response{}, steadytest.Response{}, steadytest.Response{})
	for range 3 {
		resp, err := post(t, f, context.Background(), "/chat/completions", "{}")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := post(t, f, context.Background(), "/chat/completions", "{}")
	if resp != nil {
		t.Errorf("got a response %v with the script used up", resp.Status)
	}
	const want = "steadytest: no scripted response for POST /v1/chat/completions (request 4)"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
	if !errors.Is(err, steadytest.ErrNoResponse) {
		t.Errorf("err does not match ErrNoResponse")
	}
	if len(tb.errs) != 1 || tb.errs[0] != want {
		t.Errorf("reported %q, want one %q", tb.errs, want)
	}
	if f.Calls() != 4 || len(f.Requests()) != 4 {
		t.Errorf("the unanswered request was not recorded: Calls %d", f.Calls())
	}

	// Through an http.Client, the same error comes back wrapped.
	tb.errs = nil
	c := &http.Client{Transport: f}
	_, err = c.Get(base + "/models")
	if !errors.Is(err, steadytest.ErrNoResponse) || !strings.Contains(err.Error(), "GET /v1/models (request 5)") {
		t.Errorf("client err = %v", err)
	}
}

func TestFakeFallback(t *testing.T) {
	ok := steadytest.ChatCompletion("hi")
	f := steadytest.NewFake(steadytest.ServerError(500))
	f.Fallback = &ok
	steadytest.KeepRequests(f, 2)
	statuses := []int{}
	for i := range 5 {
		resp, err := post(t, f, context.Background(), "/chat/completions", fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		statuses = append(statuses, resp.StatusCode)
	}
	if fmt.Sprint(statuses) != "[500 200 200 200 200]" {
		t.Errorf("statuses %v", statuses)
	}
	reqs := f.Requests()
	if len(reqs) != 2 || string(reqs[0].Body) != "3" || string(reqs[1].Body) != "4" {
		t.Errorf("KeepRequests=2 kept %d requests", len(reqs))
	}
	if f.Calls() != 5 {
		t.Errorf("Calls() = %d, want 5", f.Calls())
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestFakeClosesRequestBody(t *testing.T) {
	f := steadytest.NewFake(steadytest.Response{}, steadytest.Response{})
	for _, ctxDone := range []bool{false, true} {
		body := &closeRecorder{Reader: strings.NewReader("payload")}
		req, _ := http.NewRequest("POST", base+"/responses", body)
		if ctxDone {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			req = req.WithContext(ctx)
		}
		resp, err := f.RoundTrip(req)
		if ctxDone {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled context: err = %v", err)
			}
		} else if err != nil {
			t.Fatal(err)
		} else {
			resp.Body.Close()
		}
		if !body.closed {
			t.Errorf("ctxDone=%v: request body not closed", ctxDone)
		}
	}
	if f.Calls() != 1 {
		t.Errorf("a request with an ended context was counted: Calls %d", f.Calls())
	}
}

func TestFakeErr(t *testing.T) {
	f := steadytest.NewFake(steadytest.ConnReset(), steadytest.Response{Err: io.ErrUnexpectedEOF})
	_, err := post(t, f, context.Background(), "/chat/completions", "{}")
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("err = %v, want ECONNRESET", err)
	}
	_, err = (&http.Client{Transport: f}).Post(base+"/chat/completions", "application/json", strings.NewReader("{}"))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want ErrUnexpectedEOF", err)
	}
}

func TestFakeDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := steadytest.NewFake(steadytest.Response{}.WithDelay(3*time.Second), steadytest.ConnReset().WithDelay(time.Second))
		start := time.Now()
		resp, err := post(t, f, context.Background(), "/chat/completions", "{}")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("headers after %v, want 3s", got)
		}
		if rec := f.Requests()[0]; !rec.Time.Equal(start) {
			t.Errorf("request recorded at %v, want its arrival %v", rec.Time, start)
		}
		start = time.Now()
		_, err = post(t, f, context.Background(), "/chat/completions", "{}")
		if !errors.Is(err, syscall.ECONNRESET) || time.Since(start) != time.Second {
			t.Errorf("delayed error: %v after %v", err, time.Since(start))
		}
	})
}

func TestFakeDelayRespectsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := steadytest.NewFake(steadytest.Response{}.WithDelay(time.Hour), steadytest.Response{}.WithDelay(time.Hour))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := post(t, f, ctx, "/chat/completions", "{}")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want DeadlineExceeded", err)
		}
		if got := time.Since(start); got != 2*time.Second {
			t.Errorf("returned after %v, want 2s", got)
		}

		ctx2, cancel2 := context.WithCancel(context.Background())
		go func() {
			time.Sleep(500 * time.Millisecond)
			cancel2()
		}()
		start = time.Now()
		_, err = post(t, f, ctx2, "/chat/completions", "{}")
		if !errors.Is(err, context.Canceled) || time.Since(start) != 500*time.Millisecond {
			t.Errorf("cancel: %v after %v", err, time.Since(start))
		}
	})
}

func TestFakeStreamChunksArriveOverTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := steadytest.SSE("a", "b", "c", "[DONE]").ChunkEvery(100 * time.Millisecond)
		r.Body = ": comment\n\n"
		f := steadytest.NewFake(r.WithDelay(50 * time.Millisecond))
		start := time.Now()
		resp, err := post(t, f, context.Background(), "/chat/completions", `{"stream":true}`)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ContentLength != -1 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("stream response: length %d, type %q", resp.ContentLength, resp.Header.Get("Content-Type"))
		}
		if got := time.Since(start); got != 50*time.Millisecond {
			t.Errorf("headers after %v, want 50ms", got)
		}
		sc := bufio.NewScanner(resp.Body)
		var got []string
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				continue
			}
			got = append(got, fmt.Sprintf("%s@%v", line, time.Since(start)))
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		want := []string{": comment@50ms", "data: a@150ms", "data: b@250ms", "data: c@350ms", "data: [DONE]@450ms"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("stream\n got %v\nwant %v", got, want)
		}
	})
}

func TestFakeStreamCloseStopsWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := steadytest.NewFake(steadytest.SSE("a", "b", "c").ChunkEvery(time.Hour))
		resp, err := post(t, f, context.Background(), "/chat/completions", "{}")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		buf := make([]byte, 64)
		n, err := resp.Body.Read(buf)
		if err != nil || string(buf[:n]) != "data: a\n\n" {
			t.Fatalf("first read %q, %v", buf[:n], err)
		}
		if time.Since(start) != time.Hour {
			t.Errorf("first chunk after %v", time.Since(start))
		}
		if n := streamWriters(); n != 1 {
			t.Fatalf("%d stream writers while the stream is open, want 1", n)
		}
		resp.Body.Close()
		synctest.Wait()
		if n := streamWriters(); n != 0 {
			t.Errorf("%d stream writers after Close: the writer still runs", n)
		}
	})
}

// streamWriters counts the goroutines that feed streamed bodies. Only
// those are counted: runtime.NumGoroutine also sees goroutines of the test
// runtime and of earlier tests, which come and go on their own schedule.
func streamWriters() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "steadytest.stream.func") {
			n++
		}
	}
	return n
}

func TestFakeStreamEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := steadytest.NewFake(
			steadytest.SSE("a", "b").ChunkEvery(time.Second),
			steadytest.Response{Body: "x", Chunks: []steadytest.Chunk{{Data: "y"}, {Data: "z"}}},
		)
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		resp, err := post(t, f, ctx, "/chat/completions", "{}")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "data: a\n\n" || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %q, %v; want the first chunk, then DeadlineExceeded", b, err)
		}

		// A writer blocked on a reader that does not read ends with the
		// context too.
		ctx2, cancel2 := context.WithCancel(context.Background())
		resp, err = post(t, f, ctx2, "/chat/completions", "{}")
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		cancel2()
		synctest.Wait()
		b, err = io.ReadAll(resp.Body)
		if len(b) != 0 || !errors.Is(err, context.Canceled) {
			t.Errorf("after cancel: %q, %v", b, err)
		}
		resp.Body.Close()
	})
}

func TestFakeStreamChunkError(t *testing.T) {
	f := steadytest.NewFake(steadytest.Response{Chunks: []steadytest.Chunk{
		{Data: "data: a\n\n"}, {Data: "data: b", Err: steadytest.ConnReset().Err},
	}})
	resp, err := post(t, f, context.Background(), "/chat/completions", "{}")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if string(b) != "data: a\n\ndata: b" || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("got %q, %v", b, err)
	}
}

func TestFakeConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 64
		f := steadytest.NewFake()
		for i := range n {
			f.Add(steadytest.JSON(200, fmt.Sprint(i)).WithDelay(time.Duration(i) * time.Millisecond))
		}
		f.On(matchPath("/embeddings"), steadytest.Response{Status: 201})
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[string]bool{}
		for i := range n + 1 {
			wg.Go(func() {
				path := "/chat/completions"
				if i == n {
					path = "/embeddings"
				}
				resp, err := post(t, f, context.Background(), path, fmt.Sprint(i))
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				seen[fmt.Sprintf("%d %s", resp.StatusCode, b)] = true
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(seen) != n+1 {
			t.Errorf("%d distinct answers, want %d", len(seen), n+1)
		}
		if !seen["201 "] {
			t.Error("the matcher's answer was not given")
		}
		ns := map[string]bool{}
		for _, r := range f.Requests() {
			ns[string(r.Body)] = true
		}
		if len(ns) != n+1 || f.Calls() != n+1 {
			t.Errorf("recorded %d distinct requests, Calls %d", len(ns), f.Calls())
		}
	})
}

func TestResponseHelpers(t *testing.T) {
	// header is the header r is answered with.
	header := func(r steadytest.Response) http.Header {
		resp, err := steadytest.NewFake(r).RoundTrip(httptest.NewRequest("GET", "/", nil))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header
	}
	r := steadytest.RateLimited(1500 * time.Millisecond)
	if h := header(r); r.Status != 429 || h.Get("Retry-After") != "2" || h.Get("Retry-After-Ms") != "1500" {
		t.Errorf("RateLimited: %d %v", r.Status, h)
	}
	if !strings.Contains(r.Body, `"code":"rate_limit_exceeded"`) {
		t.Errorf("RateLimited body %s", r.Body)
	}
	if q := steadytest.InsufficientQuota(); q.Status != 429 || !strings.Contains(q.Body, `"type":"insufficient_quota"`) {
		t.Errorf("InsufficientQuota: %d %s", q.Status, q.Body)
	}
	if s := steadytest.ServerError(0); s.Status != 500 || !strings.Contains(s.Body, `"code":null`) {
		t.Errorf("ServerError(0): %d %s", s.Status, s.Body)
	}
	h := steadytest.JSON(200, "{}", "Content-Type", "application/problem+json")
	if header(h).Get("Content-Type") != "application/problem+json" {
		t.Errorf("JSON did not let the pairs override Content-Type")
	}
	defer func() {
		if recover() == nil {
			t.Error("WithHeader with an odd number of strings did not panic")
		}
	}()
	//lint:ignore SA5012 the odd count is what the test is about
	steadytest.Response{}.WithHeader("only-a-key")
}

func TestFakeOnFunc(t *testing.T) {
	f := steadytest.NewFake(steadytest.JSON(200, `"seq"`))
	// A matcher may call the Fake's methods: matchers run without its lock.
	f.On(func(r *steadytest.Request) bool { return f.Calls() == 2 }, steadytest.JSON(200, `"second"`))
	f.OnFunc(matchPath("/echo"), func(r *steadytest.Request) steadytest.Response {
		return steadytest.JSON(200, string(r.Body))
	})
	f.On(nil, steadytest.JSON(200, `"any"`))

	var got []string
	for _, c := range []struct{ path, body string }{
		{"/x", "1"}, {"/echo", "2"}, {"/echo", "3"}, {"/x", "4"}, {"/x", "5"},
	} {
		resp, err := post(t, f, context.Background(), c.path, c.body)
		if err != nil {
			got = append(got, "error")
			continue
		}
		got = append(got, readAll(t, resp))
	}
	// 1: nil matcher; 2: the Calls()==2 matcher beats OnFunc; 3: echo;
	// 4: the sequence; 5: nothing left.
	want := []string{`"any"`, `"second"`, `3`, `"seq"`, `error`}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestFakeStreamThroughSDK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := steadytest.NewFakeT(t, steadytest.ChatCompletionStream("Hel", "lo").ChunkEvery(50*time.Millisecond))
		c := openai.NewClient(option.WithHTTPClient(&http.Client{Transport: f}), option.WithBaseURL(base),
			option.WithAPIKey("test"), option.WithMaxRetries(0))
		start := time.Now()
		s := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		var got []string
		for s.Next() {
			ch := s.Current()
			got = append(got, fmt.Sprintf("%q@%v", ch.Choices[0].Delta.Content, time.Since(start)))
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		want := []string{`""@50ms`, `"Hel"@100ms`, `"lo"@150ms`, `""@200ms`}
		if !slices.Equal(got, want) {
			t.Errorf("chunks %v, want %v", got, want)
		}
		var body struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		if err := json.Unmarshal(f.Requests()[0].Body, &body); err != nil || body.Model != "m" || !body.Stream {
			t.Errorf("decoded %+v, %v", body, err)
		}
	})
}

func TestFakeKeepRequests(t *testing.T) {
	for _, c := range []struct {
		keep int
		want []string // the bodies of the requests kept
	}{{0, []string{"1", "2", "3", "4", "5"}}, {2, []string{"4", "5"}}, {-1, nil}} {
		f := &steadytest.Fake{Fallback: &steadytest.Response{}}
		steadytest.KeepRequests(f, c.keep)
		for i := range 5 {
			resp, err := post(t, f, context.Background(), "/chat/completions", fmt.Sprint(i+1))
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
		}
		var got []string
		for _, r := range f.Requests() {
			got = append(got, string(r.Body))
		}
		if !slices.Equal(got, c.want) || f.Calls() != 5 {
			t.Errorf("KeepRequests %d: kept %v, calls %d; want %v, 5", c.keep, got, f.Calls(), c.want)
		}
	}
}
