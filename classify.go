package steady

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
)

// Failure describes a failed call: the status, what the provider's error
// body says, and whether it is worth retrying and why.
//
// Retryable says whether the status, the body and the x-should-retry header
// allow another attempt. A caller still compares RetryAfter with its own cap:
// a 429 announcing a wait of a day is retryable in principle but not worth
// waiting for.
type Failure struct {
	Status    int    // HTTP status; 0 for a transport error
	Type      string // provider's error type, e.g. "rate_limit_error"
	Code      string // provider's error code, e.g. "insufficient_quota"
	Message   string // provider's message or a printable excerpt of the body; at most 512 bytes
	RequestID string
	Retryable bool
	Reason    string // why it is or is not retryable, e.g. "429 rate limit"
	// RetryAfter is the server's retry hint, valid when HasRetryAfter. It
	// comes from the headers (retry-after-ms, x-ms-retry-after-ms,
	// Retry-After) or, when they give none, from the body: the rate-limit
	// headers OpenRouter copies into error.metadata.headers, Gemini's
	// RetryInfo retryDelay, or a message such as Azure's "Please retry
	// after 6 seconds".
	RetryAfter    time.Duration
	HasRetryAfter bool
}

// Bounds of what classification reads and keeps.
const (
	// maxErrorBody is how much of an error body ClassifyResponse reads.
	maxErrorBody = 64 << 10
	// maxMessage bounds Failure.Message.
	maxMessage = 512
	// maxRequestID bounds Failure.RequestID.
	maxRequestID = 128
)

// String returns a one-line description of f, such as
// `429 Too Many Requests: retryable (429 rate limit), retry after 6s;
// type=requests code=rate_limit_exceeded request_id=req_1: Rate limit reached`.
func (f Failure) String() string {
	var b strings.Builder
	switch {
	case f.Status > 0:
		b.WriteString(strconv.Itoa(f.Status))
		if t := http.StatusText(f.Status); t != "" {
			b.WriteByte(' ')
			b.WriteString(t)
		}
	default:
		b.WriteString("transport error")
	}
	if f.Retryable {
		b.WriteString(": retryable (")
	} else {
		b.WriteString(": not retryable (")
	}
	b.WriteString(f.Reason)
	b.WriteByte(')')
	if f.HasRetryAfter {
		b.WriteString(", retry after ")
		b.WriteString(f.RetryAfter.String())
	}
	sep := "; "
	for _, kv := range [3][2]string{{"type=", f.Type}, {"code=", f.Code}, {"request_id=", f.RequestID}} {
		if kv[1] != "" {
			b.WriteString(sep)
			b.WriteString(kv[0])
			b.WriteString(kv[1])
			sep = " "
		}
	}
	if f.Message != "" {
		b.WriteString(": ")
		b.WriteString(f.Message)
	}
	return b.String()
}

// ClassifyResponse describes resp. For a status of 400 or more it reads at
// most the first 64 KiB of the body and puts back a body that yields the
// original bytes in full (what was read, then the rest) and closes the
// original body. The body of a success is never read, so streams stay
// untouched. A nil resp gives a Failure with Reason "no response".
func ClassifyResponse(resp *http.Response) Failure {
	if resp == nil {
		return Failure{Reason: "no response"}
	}
	var body []byte
	if resp.StatusCode >= 400 && resp.Body != nil && resp.Body != http.NoBody {
		var err error
		body, err = readPrefix(resp.Body, resp.ContentLength, maxErrorBody)
		resp.Body = &replayBody{prefix: body, err: err, rc: resp.Body}
	}
	return classify(resp.StatusCode, resp.Header, body, time.Now(), nil)
}

// ClassifyBody describes a response from its status, headers and (a prefix
// of) its body. It reads every error shape of the providers steady knows:
// Heroku's flat {"code","message","type"} and nested {"error":{...}},
// OpenAI's {"error":{"message","type","param","code"}}, Azure's string
// codes, Anthropic's {"type":"error","error":{...},"request_id"}, Gemini's
// array of errors, OpenRouter's error.metadata, and HTML or empty bodies.
//
// Statuses 408, 409, 429, 500, 502, 503, 504, 529 and other 5xx but 501,
// 505 and 511 are retryable; 4xx others are not, nor is any 402, billing
// error, insufficient_quota or Anthropic spend limit, whatever its status.
// An x-should-retry header of "true" or "false" overrides these rules. A
// status below 400 gives Retryable false and Reason "ok".
func ClassifyBody(status int, h http.Header, body []byte) Failure {
	return classify(status, h, body, time.Now(), nil)
}

// ClassifyError describes err: an *openai.Error (its status, fields,
// response headers and body), or an error from a transport. The caller's
// cancellation and deadline, certificate and TLS failures, unknown hosts and
// [ErrCircuitOpen] are not retryable; connection refused, reset or aborted,
// broken pipes, unreachable networks, dial timeouts and a connection closed
// early (io.EOF, io.ErrUnexpectedEOF) are. Other errors are not retryable,
// with Reason "transport error". A nil err gives Reason "ok".
//
// A caller that holds the request's context should check it first: a dial
// that failed because the caller's deadline passed looks like a dial
// timeout.
func ClassifyError(err error) Failure {
	if err == nil {
		return Failure{Reason: "ok"}
	}
	var apiErr *openai.Error
	if errors.As(err, &apiErr) && apiErr != nil {
		var h http.Header
		var body []byte
		if r := apiErr.Response; r != nil {
			h = r.Header
			if r.Body != nil && r.Body != http.NoBody {
				var rerr error
				body, rerr = readPrefix(r.Body, r.ContentLength, maxErrorBody)
				r.Body = &replayBody{prefix: body, err: rerr, rc: r.Body}
			}
		}
		return classify(apiErr.StatusCode, h, body, time.Now(), apiErr)
	}
	f := Failure{Message: errorMessage(err)}
	f.Retryable, f.Reason = classifyTransportError(err)
	return f
}

// classifyTransportError decides on an error that came without a response.
func classifyTransportError(err error) (bool, string) {
	if errors.Is(err, ErrCircuitOpen) {
		return false, "circuit open"
	}
	if errors.Is(err, context.Canceled) {
		return false, "canceled"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" && opErr.Timeout() {
		return true, "connection failure: dial timeout"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return false, "deadline exceeded"
	}
	var (
		certInvalid  x509.CertificateInvalidError
		unknownAuth  x509.UnknownAuthorityError
		hostname     x509.HostnameError
		verification *tls.CertificateVerificationError
		recordHeader tls.RecordHeaderError
		alert        tls.AlertError
	)
	if errors.As(err, &certInvalid) || errors.As(err, &unknownAuth) || errors.As(err, &hostname) ||
		errors.As(err, &verification) {
		return false, "tls certificate error"
	}
	if errors.As(err, &recordHeader) || errors.As(err, &alert) {
		return false, "tls error"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsNotFound {
			return false, "unknown host"
		}
		return true, "connection failure: dns"
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return true, "connection failure: refused"
	case errors.Is(err, syscall.ECONNRESET):
		return true, "connection failure: reset"
	case errors.Is(err, syscall.ECONNABORTED):
		return true, "connection failure: aborted"
	case errors.Is(err, syscall.EPIPE):
		return true, "connection failure: broken pipe"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return true, "connection failure: unreachable"
	case errors.Is(err, syscall.ETIMEDOUT):
		return true, "connection failure: timed out"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true, "connection failure: closed early"
	}
	return false, "transport error"
}

// errorMessage is err's text without the request URL a *url.Error carries
// (its query may hold a key), made printable and bounded.
func errorMessage(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) && uerr.Err != nil {
		return printable(uerr.Op+": "+uerr.Err.Error(), maxMessage)
	}
	return printable(err.Error(), maxMessage)
}

// errFields is what an error body says.
type errFields struct {
	typ, code, message, requestID, detailCode string
	hint                                      time.Duration
	hasHint                                   bool
}

// classify builds the Failure of a response. sdk, when set, fills what the
// body does not say.
func classify(status int, h http.Header, body []byte, now time.Time, sdk *openai.Error) Failure {
	f := Failure{Status: status}
	if status < 400 {
		f.Reason = "ok"
		return f
	}
	ef := parseErrorBody(body, now)
	if sdk != nil {
		if ef.typ == "" {
			ef.typ = sdk.Type
		}
		if ef.code == "" {
			ef.code = sdk.Code
		}
		if ef.message == "" {
			ef.message = sdk.Message
		}
	}
	f.Type = printable(ef.typ, maxRequestID)
	f.Code = printable(ef.code, maxRequestID)
	f.Message = printable(ef.message, maxMessage)

	var shouldRetry string
	for k, vv := range h {
		if len(vv) == 0 {
			continue
		}
		switch {
		case equalFold(k, "x-should-retry"):
			shouldRetry = vv[0]
		case f.RequestID == "" && (equalFold(k, "x-request-id") || equalFold(k, "request-id") ||
			equalFold(k, "apim-request-id") || equalFold(k, "x-ms-client-request-id")):
			f.RequestID = printable(vv[0], maxRequestID)
		}
	}
	if f.RequestID == "" {
		f.RequestID = printable(ef.requestID, maxRequestID)
	}

	f.RetryAfter, f.HasRetryAfter = ParseRetryAfter(h, now)
	if !f.HasRetryAfter {
		if ef.hasHint {
			f.RetryAfter, f.HasRetryAfter = ef.hint, true
		} else if d, ok := messageHint(f.Message); ok {
			f.RetryAfter, f.HasRetryAfter = d, true
		}
	}

	f.Retryable, f.Reason = statusRule(status)
	switch {
	case status == http.StatusPaymentRequired:
	case isKind(ef.typ, "billing_error") || isKind(ef.code, "billing_error"):
		f.Retryable, f.Reason = false, "billing error"
	case isKind(ef.typ, "insufficient_quota") || isKind(ef.code, "insufficient_quota"):
		f.Retryable, f.Reason = false, "insufficient quota"
	case isKind(ef.detailCode, "enforced_spend_limit_reached") || isKind(ef.code, "enforced_spend_limit_reached"):
		f.Retryable, f.Reason = false, "spend limit reached"
	}
	switch strings.ToLower(trimOWS(shouldRetry)) {
	case "true":
		f.Retryable, f.Reason = true, "x-should-retry: true"
	case "false":
		f.Retryable, f.Reason = false, "x-should-retry: false"
	}
	return f
}

// isKind reports whether an error type or code equals kind, ignoring case.
func isKind(v, kind string) bool {
	return len(v) == len(kind) && strings.EqualFold(v, kind)
}

// statusRule is the retry rule for a status of 400 or more.
func statusRule(status int) (bool, string) {
	switch status {
	case http.StatusRequestTimeout:
		return true, "408 request timeout"
	case http.StatusConflict:
		return true, "409 conflict"
	case http.StatusTooManyRequests:
		return true, "429 rate limit"
	case http.StatusInternalServerError:
		return true, "500 server error"
	case http.StatusBadGateway:
		return true, "502 bad gateway"
	case http.StatusServiceUnavailable:
		return true, "503 service unavailable"
	case http.StatusGatewayTimeout:
		return true, "504 gateway timeout"
	case 529:
		return true, "529 overloaded"
	case http.StatusBadRequest:
		return false, "400 bad request"
	case http.StatusUnauthorized:
		return false, "401 unauthorized"
	case http.StatusPaymentRequired:
		return false, "402 payment required"
	case http.StatusForbidden:
		return false, "403 forbidden"
	case http.StatusNotFound:
		return false, "404 not found"
	case http.StatusUnprocessableEntity:
		return false, "422 unprocessable"
	case http.StatusNotImplemented:
		return false, "501 not implemented"
	case http.StatusHTTPVersionNotSupported:
		return false, "505 http version not supported"
	case http.StatusNetworkAuthenticationRequired:
		return false, "511 network authentication required"
	}
	switch {
	case status >= 500 && status < 600:
		return true, strconv.Itoa(status) + " server error"
	case status >= 400 && status < 500:
		return false, strconv.Itoa(status) + " client error"
	}
	return false, strconv.Itoa(status) + " unexpected status"
}

// jsonError holds the members of an error object steady reads; each is
// kept raw so that a member of an unexpected type spoils nothing else.
type jsonError struct {
	Type      json.RawMessage `json:"type"`
	Code      json.RawMessage `json:"code"`
	Message   json.RawMessage `json:"message"`
	Status    json.RawMessage `json:"status"`
	Details   json.RawMessage `json:"details"`
	Metadata  json.RawMessage `json:"metadata"`
	Error     json.RawMessage `json:"error"`
	RequestID json.RawMessage `json:"request_id"`
}

// parseErrorBody reads what an error body says, whatever its shape.
func parseErrorBody(body []byte, now time.Time) errFields {
	var ef errFields
	b := trimSpaceBytes(body)
	if len(b) == 0 {
		return ef
	}
	if b[0] == '[' {
		// Gemini's OpenAI-compatible endpoint: an array of error objects.
		var arr []json.RawMessage
		if json.Unmarshal(b, &arr) == nil && len(arr) > 0 {
			b = trimSpaceBytes(arr[0])
		}
	}
	var top jsonError
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &top) != nil {
		ef.message = excerpt(body)
		return ef
	}
	obj := &top
	var inner jsonError
	if e := trimSpaceBytes(top.Error); len(e) > 0 {
		switch e[0] {
		case '{':
			if json.Unmarshal(e, &inner) == nil {
				obj = &inner
			}
		case '"':
			ef.message = jsonText(e)
		}
	}
	ef.typ = jsonText(obj.Type)
	ef.code = jsonText(obj.Code)
	if m := jsonText(obj.Message); m != "" {
		ef.message = m
	}
	if ef.typ == "" {
		ef.typ = jsonText(obj.Status) // Gemini: "RESOURCE_EXHAUSTED"
	}
	ef.requestID = jsonText(top.RequestID)
	if ef.requestID == "" {
		ef.requestID = jsonText(inner.RequestID)
	}
	ef.detailCode, ef.hint, ef.hasHint = readDetails(obj.Details)
	if !ef.hasHint {
		ef.hint, ef.hasHint = metadataHint(obj.Metadata, now)
	}
	if ef.typ == "" && ef.code == "" && ef.message == "" {
		ef.message = excerpt(body) // JSON of a shape steady does not know
	}
	return ef
}

// readDetails reads Anthropic's details.error_code and Gemini's RetryInfo
// retryDelay.
func readDetails(raw json.RawMessage) (code string, hint time.Duration, ok bool) {
	raw = trimSpaceBytes(raw)
	if len(raw) == 0 {
		return "", 0, false
	}
	type detail struct {
		ErrorCode  json.RawMessage `json:"error_code"`
		RetryDelay json.RawMessage `json:"retryDelay"`
	}
	var list []detail
	switch raw[0] {
	case '{':
		var d detail
		if json.Unmarshal(raw, &d) != nil {
			return "", 0, false
		}
		list = []detail{d}
	case '[':
		if json.Unmarshal(raw, &list) != nil {
			return "", 0, false
		}
	}
	for _, d := range list {
		if code == "" {
			code = jsonText(d.ErrorCode)
		}
		if !ok {
			if v := jsonText(d.RetryDelay); v != "" {
				hint, ok = parseGoDuration(v)
			}
		}
	}
	return code, hint, ok
}

// metadataHint reads the rate-limit headers OpenRouter copies into
// error.metadata.headers: a retry hint, else the time until an exhausted
// window resets.
func metadataHint(raw json.RawMessage, now time.Time) (time.Duration, bool) {
	var md struct {
		Headers map[string]json.RawMessage `json:"headers"`
	}
	if len(trimSpaceBytes(raw)) == 0 || json.Unmarshal(raw, &md) != nil || len(md.Headers) == 0 {
		return 0, false
	}
	h := make(http.Header, len(md.Headers))
	n := 0
	for k, v := range md.Headers {
		if n++; n > 32 {
			break
		}
		if s := jsonText(v); s != "" {
			h[k] = []string{s}
		}
	}
	rl := ParseRateLimits(h, now)
	if rl.HasRetryAfter {
		return rl.RetryAfter, true
	}
	var wait time.Duration
	found := false
	for _, w := range rl.Windows {
		if w.Remaining == 0 && !w.Reset.IsZero() {
			if d := clampHint(w.Reset.Sub(now)); !found || d > wait {
				wait, found = d, true
			}
		}
	}
	return wait, found
}

// messageHint reads a wait from a message: Azure's "retry after 6
// seconds" or OpenAI's "try again in 6.5s".
func messageHint(msg string) (time.Duration, bool) {
	if i := indexFold(msg, "retry after "); i >= 0 {
		rest := msg[i+len("retry after "):]
		num := leadingNumber(rest)
		if f, ok := parseDecimal(num); ok {
			unit := trimOWS(rest[len(num):])
			switch {
			case hasPrefixFold(unit, "ms"), hasPrefixFold(unit, "millisecond"):
				return secondsDuration(f / 1000), true
			case hasPrefixFold(unit, "s"):
				return secondsDuration(f), true
			case hasPrefixFold(unit, "minute"):
				return secondsDuration(f * 60), true
			}
		}
	}
	if i := indexFold(msg, "try again in "); i >= 0 {
		rest := msg[i+len("try again in "):]
		j := 0
		for j < len(rest) && rest[j] != ' ' && rest[j] != ',' && rest[j] != ';' && rest[j] != ')' {
			j++
		}
		tok := strings.TrimRight(rest[:j], ".")
		if d, ok := parseGoDuration(tok); ok {
			return d, true
		}
		if f, ok := parseDecimal(tok); ok {
			unit := trimOWS(rest[j:])
			switch {
			case hasPrefixFold(unit, "ms"), hasPrefixFold(unit, "millisecond"):
				return secondsDuration(f / 1000), true
			case hasPrefixFold(unit, "s"):
				return secondsDuration(f), true
			case hasPrefixFold(unit, "minute"):
				return secondsDuration(f * 60), true
			}
		}
	}
	return 0, false
}

// indexFold is strings.Index ignoring ASCII case; sub is lower case.
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if hasPrefixFold(s[i:], sub) {
			return i
		}
	}
	return -1
}

// jsonText reads a JSON string or number as text; other values read as "".
func jsonText(raw json.RawMessage) string {
	raw = trimSpaceBytes(raw)
	if len(raw) == 0 {
		return ""
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case c == '-' || c >= '0' && c <= '9':
		return string(raw)
	}
	return ""
}

func trimSpaceBytes(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}

// excerpt is a short printable text for a body that is not a JSON error:
// an HTML page's title (or its text without tags), or the text itself.
func excerpt(body []byte) string {
	s := string(trimSpaceBytes(body))
	if s == "" || s[0] != '<' {
		return printable(s, maxMessage)
	}
	if i := indexFold(s, "<title>"); i >= 0 {
		rest := s[i+len("<title>"):]
		if j := indexFold(rest, "</title>"); j >= 0 {
			if t := printable(rest[:j], maxMessage); t != "" {
				return t
			}
		}
	}
	var b strings.Builder
	in := false
	for i := 0; i < len(s) && b.Len() < 4*maxMessage; i++ {
		switch c := s[i]; {
		case c == '<':
			in = true
			b.WriteByte(' ')
		case c == '>':
			in = false
		case !in:
			b.WriteByte(c)
		}
	}
	return printable(b.String(), maxMessage)
}

// printable makes s one line of valid, printable UTF-8: control characters
// and runs of white space become one space, invalid bytes are dropped, and
// the result is cut at a rune boundary to at most limit bytes, "…" marking a
// cut.
func printable(s string, limit int) string {
	clean := len(s) <= limit
	for i := 0; clean && i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c >= 0x80 || (c == ' ' && (i == 0 || i == len(s)-1 || s[i+1] == ' ')) {
			clean = false
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), limit+4))
	space := false
	for i, r := range s {
		if b.Len() > limit {
			break
		}
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				continue // an invalid byte
			}
		}
		if r < 0x20 || r == 0x7f || r == ' ' || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > limit {
		cut := limit - len("…")
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:max(cut, 0)] + "…"
	}
	return out
}

// readPrefix reads up to limit bytes of r, stopping early at EOF, an error
// or contentLength bytes. err is nil when the limit or contentLength was
// reached, io.EOF at the body's end, or the read error.
func readPrefix(r io.Reader, contentLength int64, limit int) ([]byte, error) {
	size := 512
	if contentLength > 0 {
		size = int(min(contentLength, int64(limit)))
	}
	buf := make([]byte, 0, size)
	empty := 0
	for {
		if len(buf) == limit || (contentLength > 0 && int64(len(buf)) >= contentLength) {
			return buf, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
			if cap(buf) > limit {
				buf = buf[:len(buf):limit]
			}
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			return buf, err
		}
		if n == 0 {
			if empty++; empty >= 100 {
				return buf, io.ErrNoProgress
			}
		}
	}
}

// replayBody yields prefix, then the rest of rc (or the error that ended
// the prefix), and closes rc.
type replayBody struct {
	prefix []byte
	off    int
	err    error // error met while reading prefix; nil to read on from rc
	rc     io.ReadCloser
}

func (b *replayBody) Read(p []byte) (int, error) {
	if b.off < len(b.prefix) {
		n := copy(p, b.prefix[b.off:])
		b.off += n
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.rc.Read(p)
}

func (b *replayBody) Close() error { return b.rc.Close() }
