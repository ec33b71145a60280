package steady_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/internal/headertest"
)

func TestClassifyBodyShapes(t *testing.T) {
	tests := []struct {
		name   string
		status int
		h      http.Header
		body   string
		want   steady.Failure
	}{
		{"heroku flat", 429, hdr("Retry-After: 12", "X-Request-Id: hk-1"),
			`{"code": 429, "message": "Rate limit exceeded, retry later.", "type": "rate_limit_error"}`,
			steady.Failure{Status: 429, Type: "rate_limit_error", Code: "429", Message: "Rate limit exceeded, retry later.",
				RequestID: "hk-1", Retryable: true, Reason: "429 rate limit", RetryAfter: 12 * time.Second, HasRetryAfter: true}},
		{"heroku nested int code", 400, nil,
			`{"error": {"code": 400, "message": "model is required", "type": "invalid_request_error"}}`,
			steady.Failure{Status: 400, Type: "invalid_request_error", Code: "400", Message: "model is required", Reason: "400 bad request"}},
		{"heroku nested string code", 503, nil,
			`{"error": {"code": "503", "message": "upstream unavailable", "type": "server_error"}}`,
			steady.Failure{Status: 503, Type: "server_error", Code: "503", Message: "upstream unavailable", Retryable: true, Reason: "503 service unavailable"}},
		{"openai rate limit", 429, hdr("x-request-id: req_abc", "retry-after-ms: 1500"),
			`{"error": {"message": "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.", "type": "tokens", "param": null, "code": "rate_limit_exceeded"}}`,
			steady.Failure{Status: 429, Type: "tokens", Code: "rate_limit_exceeded",
				Message:   "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.",
				RequestID: "req_abc", Retryable: true, Reason: "429 rate limit", RetryAfter: 1500 * time.Millisecond, HasRetryAfter: true}},
		{"openai try again in the message", 429, nil,
			`{"error": {"message": "Please try again in 6.5s.", "type": "requests", "code": "rate_limit_exceeded"}}`,
			steady.Failure{Status: 429, Type: "requests", Code: "rate_limit_exceeded", Message: "Please try again in 6.5s.",
				Retryable: true, Reason: "429 rate limit", RetryAfter: 6500 * time.Millisecond, HasRetryAfter: true}},
		{"openai insufficient quota", 429, hdr("x-request-id: req_q"),
			`{"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}`,
			steady.Failure{Status: 429, Type: "insufficient_quota", Code: "insufficient_quota",
				Message:   "You exceeded your current quota, please check your plan and billing details.",
				RequestID: "req_q", Reason: "insufficient quota"}},
		{"openai quota as code only", 429, nil,
			`{"error": {"message": "quota", "type": "requests", "code": "insufficient_quota"}}`,
			steady.Failure{Status: 429, Type: "requests", Code: "insufficient_quota", Message: "quota", Reason: "insufficient quota"}},
		{"openai server error", 500, nil,
			`{"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}}`,
			steady.Failure{Status: 500, Type: "server_error", Message: "The server had an error while processing your request.", Retryable: true, Reason: "500 server error"}},
		{"azure", 429, hdr("apim-request-id: 7d1c", "x-ms-client-request-id: cli-2"),
			`{"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}`,
			steady.Failure{Status: 429, Code: "429",
				Message:   "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
				RequestID: "7d1c", Retryable: true, Reason: "429 rate limit", RetryAfter: 6 * time.Second, HasRetryAfter: true}},
		{"azure header beats message", 429, hdr("retry-after: 2"),
			`{"error": {"code": "429", "message": "Please retry after 86400 seconds."}}`,
			steady.Failure{Status: 429, Code: "429", Message: "Please retry after 86400 seconds.",
				Retryable: true, Reason: "429 rate limit", RetryAfter: 2 * time.Second, HasRetryAfter: true}},
		{"azure daily quota", 429, nil,
			`{"error": {"code": "429", "message": "Please retry after 86400 seconds."}}`,
			steady.Failure{Status: 429, Code: "429", Message: "Please retry after 86400 seconds.",
				Retryable: true, Reason: "429 rate limit", RetryAfter: 24 * time.Hour, HasRetryAfter: true}},
		{"anthropic rate limit", 429, hdr("request-id: req_011", "retry-after: 30"),
			`{"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}, "request_id": "req_body"}`,
			steady.Failure{Status: 429, Type: "rate_limit_error", Message: "Number of request tokens has exceeded your per-minute rate limit",
				RequestID: "req_011", Retryable: true, Reason: "429 rate limit", RetryAfter: 30 * time.Second, HasRetryAfter: true}},
		{"anthropic request id from body", 529, nil,
			`{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_body"}`,
			steady.Failure{Status: 529, Type: "overloaded_error", Message: "Overloaded", RequestID: "req_body", Retryable: true, Reason: "529 overloaded"}},
		{"anthropic spend limit", 429, nil,
			`{"type": "error", "error": {"type": "rate_limit_error", "message": "spend limit reached", "details": {"error_code": "enforced_spend_limit_reached"}}, "request_id": "req_s"}`,
			steady.Failure{Status: 429, Type: "rate_limit_error", Message: "spend limit reached", RequestID: "req_s", Reason: "spend limit reached"}},
		{"anthropic billing", 400, nil,
			`{"type": "error", "error": {"type": "billing_error", "message": "Your credit balance is too low."}}`,
			steady.Failure{Status: 400, Type: "billing_error", Message: "Your credit balance is too low.", Reason: "billing error"}},
		{"anthropic api error", 500, nil,
			`{"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}`,
			steady.Failure{Status: 500, Type: "api_error", Message: "Internal server error", Retryable: true, Reason: "500 server error"}},
		{"anthropic permission", 403, nil,
			`{"type": "error", "error": {"type": "permission_error", "message": "no access"}}`,
			steady.Failure{Status: 403, Type: "permission_error", Message: "no access", Reason: "403 forbidden"}},
		{"payment required", 402, nil,
			`{"type": "error", "error": {"type": "billing_error", "message": "pay up"}}`,
			steady.Failure{Status: 402, Type: "billing_error", Message: "pay up", Reason: "402 payment required"}},
		{"gemini array", 429, nil,
			`[{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}]}}]`,
			steady.Failure{Status: 429, Type: "RESOURCE_EXHAUSTED", Code: "429", Message: "Resource has been exhausted (e.g. check quota).",
				Retryable: true, Reason: "429 rate limit", RetryAfter: 38 * time.Second, HasRetryAfter: true}},
		{"openrouter metadata headers", 429, nil,
			`{"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min.", "metadata": {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "` +
				strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10) + `"}}}}`,
			steady.Failure{Status: 429, Code: "429", Message: "Rate limit exceeded: free-models-per-min.",
				Retryable: true, Reason: "429 rate limit", RetryAfter: time.Hour, HasRetryAfter: true}},
		{"openrouter metadata retry-after", 503, nil,
			`{"error": {"code": 503, "message": "No instances available", "metadata": {"headers": {"Retry-After": 7}, "provider_name": "x"}}}`,
			steady.Failure{Status: 503, Code: "503", Message: "No instances available",
				Retryable: true, Reason: "503 service unavailable", RetryAfter: 7 * time.Second, HasRetryAfter: true}},
		{"html gateway", 502, nil,
			"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
			steady.Failure{Status: 502, Message: "502 Bad Gateway", Retryable: true, Reason: "502 bad gateway"}},
		{"html without title", 504, nil,
			"<html><body><h1>Gateway\tTimeout</h1>\n<p>upstream   timed out</p></body></html>",
			steady.Failure{Status: 504, Message: "Gateway Timeout upstream timed out", Retryable: true, Reason: "504 gateway timeout"}},
		{"plain text", 503, nil, "  upstream connect error or disconnect/reset before headers\n",
			steady.Failure{Status: 503, Message: "upstream connect error or disconnect/reset before headers", Retryable: true, Reason: "503 service unavailable"}},
		{"empty", 503, nil, "", steady.Failure{Status: 503, Retryable: true, Reason: "503 service unavailable"}},
		{"unknown json", 404, nil, `{"detail":"Not Found"}`, steady.Failure{Status: 404, Message: `{"detail":"Not Found"}`, Reason: "404 not found"}},
		{"error as a string", 401, nil, `{"error": "invalid api key"}`, steady.Failure{Status: 401, Message: "invalid api key", Reason: "401 unauthorized"}},
		{"truncated json", 500, nil, `{"error": {"message": "cut`, steady.Failure{Status: 500, Message: `{"error": {"message": "cut`, Retryable: true, Reason: "500 server error"}},
		{"wrong member types", 429, nil, `{"error": {"message": ["x"], "type": {"a":1}, "code": true}}`,
			steady.Failure{Status: 429, Message: `{"error": {"message": ["x"], "type": {"a":1}, "code": true}}`, Retryable: true, Reason: "429 rate limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := steady.ClassifyBody(tt.status, tt.h, []byte(tt.body))
			if tt.name == "openrouter metadata headers" {
				// Computed against the wall clock: allow for the test's own run time.
				if got.RetryAfter > time.Hour || got.RetryAfter < time.Hour-time.Minute {
					t.Errorf("RetryAfter %v", got.RetryAfter)
				}
				got.RetryAfter = time.Hour
			}
			if got != tt.want {
				t.Errorf("\n got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestClassifyStatusRules(t *testing.T) {
	retry := []int{408, 409, 429, 500, 502, 503, 504, 529, 507, 520, 599}
	never := []int{400, 401, 402, 403, 404, 422, 405, 413, 418, 451, 501, 505, 511, 600, 999}
	for _, st := range retry {
		if f := steady.ClassifyBody(st, nil, nil); !f.Retryable || f.Reason == "" {
			t.Errorf("%d: %+v, want retryable", st, f)
		}
	}
	for _, st := range never {
		if f := steady.ClassifyBody(st, nil, nil); f.Retryable || f.Reason == "" {
			t.Errorf("%d: %+v, want not retryable", st, f)
		}
	}
	for _, st := range []int{0, 100, 200, 204, 301, 304, 399} {
		f := steady.ClassifyBody(st, hdr("x-should-retry: true"), []byte(`{"error":{"type":"insufficient_quota"}}`))
		if f.Retryable || f.Reason != "ok" || f.Type != "" {
			t.Errorf("%d: %+v, want ok", st, f)
		}
	}
}

func TestClassifyShouldRetryOverride(t *testing.T) {
	quota := []byte(`{"error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "no"}}`)
	tests := []struct {
		status int
		h      http.Header
		body   []byte
		want   bool
	}{
		{400, hdr("x-should-retry: true"), nil, true},
		{401, hdr("X-Should-Retry: true"), nil, true},
		{429, hdr("x-should-retry: true"), quota, false},
		{402, hdr("x-should-retry: true"), nil, false},
		{429, hdr("x-should-retry: false"), nil, false},
		{503, hdr("x-should-retry: false"), nil, false},
		{429, hdr("X-SHOULD-RETRY: FALSE"), nil, false},
		{500, hdr("x-should-retry:  false "), nil, false},
		{500, hdr("x-should-retry: maybe"), nil, true},
		{400, hdr("x-should-retry: 1"), nil, false},
	}
	for _, tt := range tests {
		f := steady.ClassifyBody(tt.status, tt.h, tt.body)
		if f.Retryable != tt.want {
			t.Errorf("%d %v: %+v, want retryable=%v", tt.status, tt.h, f, tt.want)
		}
	}
}

func TestClassifyBounds(t *testing.T) {
	long := strings.Repeat("é", 2000)
	for _, body := range []string{
		`{"error": {"message": "` + long + `"}}`,
		long,
		"\x00\x01\xff\xfe bad \x1b[31m bytes \u2028 " + long,
		"<html><title>" + long + "</title></html>",
		strings.Repeat("<", 100000),
		strings.Repeat("[", 64<<10),
		`{"error": ` + strings.Repeat(`{"error": `, 20000) + `"deep"` + strings.Repeat("}", 20001),
	} {
		f := steady.ClassifyBody(500, hdr("x-request-id: "+strings.Repeat("i\n", 500)), []byte(body))
		if len(f.Message) > 512 || !utf8.ValidString(f.Message) || strings.ContainsFunc(f.Message, isControl) {
			t.Errorf("message %d bytes, valid=%v: %q", len(f.Message), utf8.ValidString(f.Message), f.Message[:min(len(f.Message), 40)])
		}
		if len(f.RequestID) > 128 || strings.ContainsFunc(f.RequestID, isControl) {
			t.Errorf("request id %q", f.RequestID)
		}
	}
	f := steady.ClassifyBody(500, nil, []byte("a\x00b\nc"))
	if f.Message != "a b c" {
		t.Errorf("message %q", f.Message)
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 }

// trackedBody is a response body that records its Close.
type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

func TestClassifyResponseRestoresBody(t *testing.T) {
	openAI := `{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}`
	big := `{"error": {"message": "big", "type": "server_error"}, "pad": "` + strings.Repeat("x", 200<<10) + `"}`
	for _, tt := range []struct {
		name   string
		body   string
		length int64
	}{
		{"small", openAI, int64(len(openAI))},
		{"small, length unknown", openAI, -1},
		{"exactly 64 KiB", strings.Repeat("y", 64<<10), 64 << 10},
		{"larger than 64 KiB", big, int64(len(big))},
		{"larger than 64 KiB, length unknown", big, -1},
		{"empty", "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// iotest-like reader handing out odd-sized chunks.
			tb := &trackedBody{Reader: &chunky{data: []byte(tt.body)}}
			resp := &http.Response{StatusCode: 429, Header: hdr("x-request-id: r1"), Body: tb, ContentLength: tt.length}
			f := steady.ClassifyResponse(resp)
			if f.Status != 429 || !f.Retryable || f.RequestID != "r1" {
				t.Errorf("failure %+v", f)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil || string(got) != tt.body {
				t.Fatalf("body after classify: %d bytes, err %v; want %d bytes", len(got), err, len(tt.body))
			}
			if tb.closed {
				t.Fatal("closed before the caller closed it")
			}
			if err := resp.Body.Close(); err != nil || !tb.closed {
				t.Fatalf("Close: %v, original closed %v", err, tb.closed)
			}
		})
	}
}

// chunky yields its data in chunks of 1 to 7000 bytes.
type chunky struct {
	data []byte
	n    int
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	c.n++
	size := min(len(p), len(c.data), 1+c.n*997%7000)
	copy(p, c.data[:size])
	c.data = c.data[size:]
	return size, nil
}

func TestClassifyResponseReadError(t *testing.T) {
	boom := errors.New("connection lost")
	r := io.MultiReader(strings.NewReader("partial"), &errReader{boom})
	resp := &http.Response{StatusCode: 503, Body: io.NopCloser(r), ContentLength: -1}
	f := steady.ClassifyResponse(resp)
	if f.Message != "partial" || !f.Retryable {
		t.Errorf("failure %+v", f)
	}
	got, err := io.ReadAll(resp.Body)
	if string(got) != "partial" || !errors.Is(err, boom) {
		t.Errorf("replay: %q, %v", got, err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

func TestClassifyResponseSuccessUntouched(t *testing.T) {
	body := &trackedBody{Reader: &errReader{errors.New("must not be read")}}
	resp := &http.Response{StatusCode: 200, Body: body, Header: hdr("x-request-id: ok1")}
	f := steady.ClassifyResponse(resp)
	if f.Retryable || f.Reason != "ok" || resp.Body != io.ReadCloser(body) {
		t.Errorf("2xx: %+v, body replaced: %v", f, resp.Body != io.ReadCloser(body))
	}
	if f := steady.ClassifyResponse(nil); f.Retryable || f.Reason == "" {
		t.Errorf("nil response: %+v", f)
	}
	if f := steady.ClassifyResponse(&http.Response{StatusCode: 502}); !f.Retryable {
		t.Errorf("nil body: %+v", f)
	}
	if f := steady.ClassifyResponse(&http.Response{StatusCode: 502, Body: http.NoBody}); !f.Retryable {
		t.Errorf("NoBody: %+v", f)
	}
}

// sdkError makes the real SDK build an *openai.Error from a scripted
// response.
func sdkError(t *testing.T, status int, h http.Header, body string) error {
	t.Helper()
	client := openai.NewClient(
		option.WithAPIKey("sk-test"),
		option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if h == nil {
				h = http.Header{}
			}
			h.Set("Content-Type", "application/json")
			return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)),
				ContentLength: int64(len(body)), Request: req}, nil
		})}),
	)
	_, err := client.Models.Get(context.Background(), "gpt-4o")
	if err == nil {
		t.Fatal("no error")
	}
	return err
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestClassifyErrorSDK(t *testing.T) {
	t.Run("insufficient quota", func(t *testing.T) {
		err := sdkError(t, 429, hdr("X-Request-Id: req_1"),
			`{"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "code": "insufficient_quota"}}`)
		f := steady.ClassifyError(err)
		want := steady.Failure{Status: 429, Type: "insufficient_quota", Code: "insufficient_quota",
			Message: "You exceeded your current quota.", RequestID: "req_1", Reason: "insufficient quota"}
		if f != want {
			t.Errorf("\n got %#v\nwant %#v", f, want)
		}
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatal("not an *openai.Error")
		}
		if b, _ := io.ReadAll(apiErr.Response.Body); !bytes.Contains(b, []byte("exceeded your current quota")) {
			t.Errorf("SDK response body after classify: %q", b)
		}
	})
	t.Run("anthropic shape through the SDK", func(t *testing.T) {
		err := sdkError(t, 529, hdr("Request-Id: req_2", "Retry-After: 3"),
			`{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_b"}`)
		f := steady.ClassifyError(fmt.Errorf("call: %w", err))
		if f.Status != 529 || !f.Retryable || f.Type != "overloaded_error" || f.RequestID != "req_2" || f.RetryAfter != 3*time.Second {
			t.Errorf("%+v", f)
		}
	})
	t.Run("should-retry false", func(t *testing.T) {
		f := steady.ClassifyError(sdkError(t, 503, hdr("X-Should-Retry: false"), ""))
		if f.Status != 503 || f.Retryable || f.Reason != "x-should-retry: false" {
			t.Errorf("%+v", f)
		}
	})
	t.Run("without response", func(t *testing.T) {
		f := steady.ClassifyError(&openai.Error{StatusCode: 429, Type: "tokens", Code: "rate_limit_exceeded", Message: "slow"})
		if f.Status != 429 || !f.Retryable || f.Code != "rate_limit_exceeded" || f.Message != "slow" {
			t.Errorf("%+v", f)
		}
		f = steady.ClassifyError(&openai.Error{StatusCode: 429, Code: "insufficient_quota"})
		if f.Retryable {
			t.Errorf("%+v", f)
		}
	})
}

func TestClassifyTransportErrors(t *testing.T) {
	opErr := func(op string, err error) error {
		return &url.Error{Op: "Post", URL: "https://api.example.com/v1/chat?key=secret", Err: &net.OpError{Op: op, Net: "tcp", Err: err}}
	}
	sys := func(errno syscall.Errno) error { return os.NewSyscallError("connect", errno) }
	dialTimeout := &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}
	tests := []struct {
		name  string
		err   error
		retry bool
	}{
		{"refused", opErr("dial", sys(syscall.ECONNREFUSED)), true},
		{"reset", opErr("read", sys(syscall.ECONNRESET)), true},
		{"aborted", opErr("read", sys(syscall.ECONNABORTED)), true},
		{"broken pipe", opErr("write", sys(syscall.EPIPE)), true},
		{"unreachable", opErr("dial", sys(syscall.EHOSTUNREACH)), true},
		{"eof", &url.Error{Op: "Post", URL: "u", Err: io.EOF}, true},
		{"unexpected eof", fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), true},
		{"dial timeout", dialTimeout, true},
		{"dns temporary", &net.DNSError{Err: "server misbehaving", Name: "x", IsTemporary: true}, true},
		{"dns not found", &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, false},
		{"canceled", &url.Error{Op: "Post", URL: "u", Err: context.Canceled}, false},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"read timeout", &net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, false},
		{"unknown authority", &url.Error{Op: "Post", URL: "u", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, false},
		{"hostname", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "x"}, false},
		{"expired", x509.CertificateInvalidError{Reason: x509.Expired}, false},
		{"not tls", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, false},
		{"circuit open", fmt.Errorf("steady: api.example.com: %w", steady.ErrCircuitOpen), true},
		{"circuit open, deadline before the probe", fmt.Errorf("%w: x: %w", steady.ErrCircuitOpen, context.DeadlineExceeded), true},
		{"other", errors.New("something else"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := steady.ClassifyError(tt.err)
			if f.Retryable != tt.retry || f.Reason == "" || f.Status != 0 {
				t.Errorf("%+v, want retryable=%v", f, tt.retry)
			}
			if strings.Contains(f.Message, "secret") {
				t.Errorf("message leaks the URL: %q", f.Message)
			}
		})
	}
	if f := steady.ClassifyError(fmt.Errorf("x: %w", steady.ErrCircuitOpen)); f.Reason != "circuit open" || !f.Retryable || f.GaveUp != "circuit open" {
		t.Errorf("circuit open: %+v", f)
	}
	if f := steady.ClassifyError(nil); f.Retryable || f.Reason != "ok" {
		t.Errorf("nil: %+v", f)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestFailureString(t *testing.T) {
	f := steady.Failure{Status: 429, Type: "tokens", Code: "rate_limit_exceeded", Message: "Rate limit reached",
		RequestID: "req_1", Retryable: true, Reason: "429 rate limit", RetryAfter: 6 * time.Second, HasRetryAfter: true}
	want := "429 Too Many Requests: retryable (429 rate limit), retry after 6s; type=tokens code=rate_limit_exceeded request_id=req_1: Rate limit reached"
	if got := f.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	f = steady.ClassifyError(io.EOF)
	if got, want := f.String(), "transport error: retryable (connection failure: closed early): EOF"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func ExampleClassifyResponse() {
	body := `{"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}`
	resp := &http.Response{
		StatusCode: http.StatusTooManyRequests,
		Header:     http.Header{"X-Request-Id": {"req_123"}},
		Body:       io.NopCloser(strings.NewReader(body)),
	}
	f := steady.ClassifyResponse(resp)
	fmt.Println(f.Retryable, f.Reason)
	fmt.Println(f)

	// The body is still there for whoever reads the response next.
	rest, _ := io.ReadAll(resp.Body)
	fmt.Println(len(rest) == len(body))
	// Output:
	// false insufficient quota
	// 429 Too Many Requests: not retryable (insufficient quota); type=insufficient_quota code=insufficient_quota request_id=req_123: You exceeded your current quota.
	// true
}

func BenchmarkClassifyResponse(b *testing.B) {
	body := []byte(`{"error": {"message": "Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}`)
	h := headertest.OpenAI()
	h.Set("Retry-After-Ms", "120")
	b.ReportAllocs()
	for b.Loop() {
		resp := &http.Response{StatusCode: 429, Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
		if f := steady.ClassifyResponse(resp); !f.Retryable {
			b.Fatal(f)
		}
	}
}

// TestClassifyResponseThenSDK classifies inside a transport, as steady
// does, and checks that the SDK still reads the whole error body.
func TestClassifyResponseThenSDK(t *testing.T) {
	pad := strings.Repeat("p", 100<<10)
	body := `{"pad": "` + pad + `", "error": {"message": "late message", "type": "server_error", "code": "overloaded"}}`
	var seen steady.Failure
	client := openai.NewClient(
		option.WithAPIKey("sk-test"),
		option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp := &http.Response{StatusCode: 503, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(body)), ContentLength: -1, Request: req}
			seen = steady.ClassifyResponse(resp)
			return resp, nil
		})}),
	)
	_, err := client.Models.Get(context.Background(), "gpt-4o")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v", err)
	}
	// Past the 64 KiB prefix, the SDK still finds the error object.
	if apiErr.Message != "late message" || apiErr.Code != "overloaded" {
		t.Errorf("SDK read %q / %q", apiErr.Message, apiErr.Code)
	}
	// The prefix alone is not a whole JSON document: classification fell
	// back to an excerpt, and the status rule still applies.
	if !seen.Retryable || seen.Status != 503 || len(seen.Message) > 512 {
		t.Errorf("classified %+v", seen)
	}
	// Classifying the SDK's error reads the whole body it kept.
	if f := steady.ClassifyError(err); f.Message != "late message" || f.Code != "overloaded" || f.Type != "server_error" {
		t.Errorf("ClassifyError %+v", f)
	}
}
