package steady

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/steady-go/steady/internal/ascii"
	"github.com/steady-go/steady/ratelimit"
	"github.com/tidwall/gjson"
)

// Failure describes a failed call: the status, what the provider's error
// body says, and whether it is worth retrying and why.
//
// Retryable says whether the status, the body and the provider's
// x-should-retry header allow another attempt at the provider. A caller
// still compares RetryAfter with its own cap: a 429 announcing a wait of a
// day is retryable in principle but not worth waiting for.
//
// GaveUp says, separately, that steady has already given up on this
// failure, and why: its retries ran out, the retry hint was above the cap,
// the deadline or the retry budget did not allow another try, the circuit
// was open. A failure that came out of steady can be both Retryable and
// GaveUp: worth trying again later, not now. Code that re-queues work
// should drop what is not Retryable (a bad request, an account out of
// credit), and re-queue what is, after RetryAfter when HasRetryAfter,
// without retrying at once what steady GaveUp on: steady has just done
// that. An open circuit is such a failure: Retryable, GaveUp "circuit
// open".
type Failure struct {
	Status    int    // HTTP status; 0 for a transport error
	Type      string // provider's error type, e.g. "rate_limit_error"
	Code      string // provider's error code, e.g. "insufficient_quota"
	Message   string // provider's message or a printable excerpt of the body; at most 512 bytes
	RequestID string // the upstream's request id (x-request-id, request-id, ...); at most 128 bytes
	Retryable bool   // whether another attempt is worth making
	Reason    string // why it is or is not retryable, e.g. "429 rate limit"
	// RetryAfter is the server's retry hint, valid when HasRetryAfter. It
	// comes from the headers (retry-after-ms, x-ms-retry-after-ms,
	// Retry-After) or, when they give none, from the body: the rate-limit
	// headers OpenRouter copies into error.metadata.headers, Gemini's
	// RetryInfo retryDelay, or a message such as Azure's "Please retry
	// after 6 seconds".
	RetryAfter time.Duration
	// HasRetryAfter says whether the server gave a retry hint; a hint of
	// zero means "retry at once".
	HasRetryAfter bool
	// GaveUp is why steady gave up on this failure, e.g. "retries
	// exhausted", read from the X-Steady-Give-Up header steady sets on the
	// response it hands back (or from the error it returns); empty when the
	// failure did not come out of steady's give-up. At most 128 bytes.
	GaveUp string
}

// giveUpHeader is the header steady sets, beside "X-Should-Retry: false",
// on a failed response it hands back after deciding not to retry; its
// value is the reason.
const giveUpHeader = "X-Steady-Give-Up"

// giveUpValue is reason made fit for a header value: printable, one line,
// bounded.
func giveUpValue(reason string) string {
	if v := printable(reason, maxRequestID); v != "" {
		return v
	}
	return "gave up"
}

// giveUpError is the error steady returns when it gives up on a failure
// that has no response (a transport error): it reads as the error itself
// and tells [ClassifyError] that steady gave up, and why.
type giveUpError struct {
	reason string
	err    error
}

func (e *giveUpError) Error() string { return e.err.Error() }
func (e *giveUpError) Unwrap() error { return e.err }

// gaveUp returns err marked as given up for reason.
func gaveUp(err error, reason string) error {
	if err == nil {
		return nil
	}
	return &giveUpError{reason: giveUpValue(reason), err: err}
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
	if f.GaveUp != "" {
		b.WriteString(", steady gave up (")
		b.WriteString(f.GaveUp)
		b.WriteByte(')')
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
// most the first 64 KiB of the body, for at most 3 seconds (a body that
// drips is classified from what arrived by then), and puts back a body
// that yields the original bytes in full (what was read, then the rest)
// and whose Close closes the original body. The body of a success is never
// read, so streams stay untouched. A nil resp gives a Failure with Reason
// "no response".
//
// A connection is reused only once its body has been read to the end: an
// error body that is not read past its first 64 KiB (or its first 3
// seconds) costs its connection when it is closed.
func ClassifyResponse(resp *http.Response) Failure {
	if resp == nil {
		return Failure{Reason: "no response"}
	}
	var body []byte
	if resp.StatusCode >= 400 && resp.Body != nil && resp.Body != http.NoBody {
		body = readBodyForClassify(resp)
	}
	return classify(resp.StatusCode, resp.Header, body, time.Now(), nil)
}

// classify is ClassifyResponse of the current attempt's failed response
// (status 400 or more), whose headers send read into c.hdr.
func (c *call) classify(resp *http.Response) Failure {
	var body []byte
	if resp.Body != nil && resp.Body != http.NoBody {
		body = readBodyForClassify(resp)
	}
	return classifyRead(resp.StatusCode, &c.hdr, body, time.Now(), nil)
}

// ClassifyBody describes a response from its status, headers and (a prefix
// of) its body. It reads every error shape of the providers steady knows:
// Heroku's flat {"code","message","type"} and nested {"error":{...}},
// OpenAI's {"error":{"message","type","param","code"}}, Azure's string
// codes, Anthropic's {"type":"error","error":{...},"request_id"}, Gemini's
// array of errors, OpenRouter's error.metadata, and HTML or empty bodies.
//
// Statuses 408, 409, 429, 500, 502, 503, 504, 529 and other 5xx but 501,
// 505 and 511 are retryable; other 4xx are not. An x-should-retry header of
// "true" or "false" overrides these status rules. Whatever the status and
// the header, a 402, a billing error, insufficient_quota (as type or code)
// or Anthropic's enforced_spend_limit_reached is never retryable. A status
// below 400 gives Retryable false and Reason "ok"; its body is not read.
func ClassifyBody(status int, h http.Header, body []byte) Failure {
	return classify(status, h, body, time.Now(), nil)
}

// ClassifyError describes err: an *openai.Error (its status, fields,
// response headers and body), or an error from a transport. The caller's
// cancellation and deadline, certificate and TLS failures and unknown hosts
// are not retryable. [ErrCircuitOpen] is the provider's transient state:
// Retryable (later, not now) with GaveUp "circuit open", whatever context
// error it also matches. Connection refused, reset or aborted,
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
				body = readBodyForClassify(r)
			}
		}
		f := classify(apiErr.StatusCode, h, body, time.Now(), apiErr)
		if f.GaveUp == "" {
			f.GaveUp = errGaveUp(err)
		}
		return f
	}
	var se *StreamError
	if errors.As(err, &se) && se != nil {
		// An error event in a stream (stream.go): the status it stands
		// for, read as that status's response would be.
		f := classify(se.Status, nil, se.body, time.Now(), nil)
		f.GaveUp = errGaveUp(err)
		return f
	}
	f := Failure{Message: errorMessage(err), GaveUp: errGaveUp(err)}
	f.Retryable, f.Reason = classifyTransportError(err)
	if f.GaveUp == "" && errors.Is(err, ErrCircuitOpen) {
		f.GaveUp = "circuit open" // steady sent nothing: it gave up at once
	}
	return f
}

// errGaveUp is the reason steady gave up on err, or "".
func errGaveUp(err error) string {
	var g *giveUpError
	if errors.As(err, &g) && g != nil {
		return g.reason
	}
	return ""
}

// classifyTransportError decides on an error that came without a response.
func classifyTransportError(err error) (bool, string) {
	if errors.Is(err, ErrCircuitOpen) {
		return true, "circuit open"
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
	excerpt                                   bool // message is an excerpt of the body, not the provider's message
}

// classify builds the Failure of a response. sdk, when set, fills what the
// body does not say.
func classify(status int, h http.Header, body []byte, now time.Time, sdk *openai.Error) Failure {
	if status < 400 {
		return Failure{Status: status, Reason: "ok"}
	}
	var hr respHeaders
	hr.read(h, true)
	return classifyRead(status, &hr, body, now, sdk)
}

// classifyRead is classify of a response whose headers hr holds, read
// with others.
func classifyRead(status int, hr *respHeaders, body []byte, now time.Time, sdk *openai.Error) Failure {
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
		if ef.message == "" || (ef.excerpt && sdk.Message != "") {
			ef.message = sdk.Message
		}
	}
	f.Type = printable(ef.typ, maxRequestID)
	f.Code = printable(ef.code, maxRequestID)
	f.Message = printable(ef.message, maxMessage)

	shouldRetry, giveUp := hr.shouldRetry, hr.giveUp
	// The headers' request id first; the body's comes last.
	if f.RequestID = hr.requestID(); f.RequestID == "" {
		f.RequestID = printable(ef.requestID, maxRequestID)
	}

	f.RetryAfter, f.HasRetryAfter = hr.rl.RetryAfter(now)
	if !f.HasRetryAfter {
		if ef.hasHint {
			f.RetryAfter, f.HasRetryAfter = ef.hint, true
		} else if d, ok := messageHint(f.Message); ok {
			f.RetryAfter, f.HasRetryAfter = d, true
		}
	}

	// The status rule, which x-should-retry overrides both ways; then what
	// no header overrides: an account out of credit stays out of credit.
	f.Retryable, f.Reason = statusRule(status)
	if giveUp != "" {
		// steady gave up: the "X-Should-Retry: false" beside it is its
		// own, telling the SDK not to retry. The provider's verdict, when
		// it said not to retry, is the reason steady gave.
		f.GaveUp = giveUpValue(giveUp)
		shouldRetry = ""
		if f.GaveUp == "x-should-retry: false" {
			shouldRetry = "false"
		}
	}
	switch strings.ToLower(ascii.TrimOWS(shouldRetry)) {
	case "true":
		f.Retryable, f.Reason = true, "x-should-retry: true"
	case "false":
		f.Retryable, f.Reason = false, "x-should-retry: false"
	}
	switch {
	case status == http.StatusPaymentRequired:
		f.Retryable, f.Reason = false, "402 payment required"
	case isKind(ef.typ, "billing_error") || isKind(ef.code, "billing_error"):
		f.Retryable, f.Reason = false, "billing error"
	case isKind(ef.typ, "insufficient_quota") || isKind(ef.code, "insufficient_quota"):
		f.Retryable, f.Reason = false, "insufficient quota"
	case isKind(ef.detailCode, "enforced_spend_limit_reached") || isKind(ef.code, "enforced_spend_limit_reached"):
		f.Retryable, f.Reason = false, "spend limit reached"
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

// errorObject holds the members of an error object steady reads, so that
// a member of an unexpected type spoils nothing else.
type errorObject struct {
	typ, code, message, status, details, metadata, err, requestID gjson.Result
}

// readErrorObject reads the members of obj. Member names match
// case-insensitively and the last of duplicates wins, as with
// encoding/json.
func readErrorObject(obj gjson.Result) (e errorObject) {
	obj.ForEach(func(k, v gjson.Result) bool {
		switch key := k.String(); {
		case keyIs(key, "type"):
			e.typ = v
		case keyIs(key, "code"):
			e.code = v
		case keyIs(key, "message"):
			e.message = v
		case keyIs(key, "status"):
			e.status = v
		case keyIs(key, "details"):
			e.details = v
		case keyIs(key, "metadata"):
			e.metadata = v
		case keyIs(key, "error"):
			e.err = v
		case keyIs(key, "request_id"):
			e.requestID = v
		}
		return true
	})
	return e
}

// parseErrorBody reads what an error body says, whatever its shape.
func parseErrorBody(body []byte, now time.Time) errFields {
	var ef errFields
	b := trimSpaceBytes(body)
	if len(b) == 0 {
		return ef
	}
	if !gjson.ValidBytes(b) {
		ef.message, ef.excerpt = excerpt(body), true
		return ef
	}
	doc := gjson.ParseBytes(b)
	if doc.IsArray() {
		// Gemini's OpenAI-compatible endpoint: an array of error objects.
		doc = doc.Get("0")
	}
	if !doc.IsObject() {
		ef.message, ef.excerpt = excerpt(body), true
		return ef
	}
	top := readErrorObject(doc)
	obj := top
	var inner errorObject
	switch {
	case top.err.IsObject():
		inner = readErrorObject(top.err)
		obj = inner
	case top.err.Type == gjson.String:
		ef.message = top.err.Str
	}
	ef.typ = jsonText(obj.typ)
	ef.code = jsonText(obj.code)
	if m := jsonText(obj.message); m != "" {
		ef.message = m
	}
	if ef.typ == "" {
		ef.typ = jsonText(obj.status) // Gemini: "RESOURCE_EXHAUSTED"
	}
	ef.requestID = jsonText(top.requestID)
	if ef.requestID == "" {
		ef.requestID = jsonText(inner.requestID)
	}
	ef.detailCode, ef.hint, ef.hasHint = readDetails(obj.details)
	if !ef.hasHint {
		ef.hint, ef.hasHint = metadataHint(obj.metadata, now)
	}
	if ef.typ == "" && ef.code == "" && ef.message == "" {
		ef.message, ef.excerpt = excerpt(body), true // JSON of a shape steady does not know
	}
	return ef
}

// readDetails reads Anthropic's details.error_code and Gemini's RetryInfo
// retryDelay, from an object or an array of objects.
func readDetails(details gjson.Result) (code string, hint time.Duration, ok bool) {
	one := func(_, obj gjson.Result) bool {
		obj.ForEach(func(k, v gjson.Result) bool {
			switch key := k.String(); {
			case code == "" && keyIs(key, "error_code"):
				code = jsonText(v)
			case !ok && keyIs(key, "retrydelay"):
				if s := jsonText(v); s != "" {
					hint, ok = ascii.ParseGoDuration(s)
				}
			}
			return true
		})
		return true
	}
	switch {
	case details.IsObject():
		one(gjson.Result{}, details)
	case details.IsArray():
		details.ForEach(one)
	}
	return code, hint, ok
}

// metadataHint reads the rate-limit headers OpenRouter copies into
// error.metadata.headers: a retry hint, else the time until an exhausted
// window resets.
func metadataHint(metadata gjson.Result, now time.Time) (time.Duration, bool) {
	var h http.Header
	metadata.ForEach(func(k, v gjson.Result) bool {
		if !keyIs(k.String(), "headers") {
			return true
		}
		v.ForEach(func(name, val gjson.Result) bool {
			if h == nil {
				h = make(http.Header)
			}
			if s := jsonText(val); s != "" && len(h) < 32 {
				h[name.String()] = []string{s}
			}
			return true
		})
		return true
	})
	if len(h) == 0 {
		return 0, false
	}
	rl := ratelimit.Parse(h, now)
	if rl.HasRetryAfter {
		return rl.RetryAfter, true
	}
	var wait time.Duration
	found := false
	for _, w := range rl.Windows {
		if w.Remaining == 0 && !w.Reset.IsZero() {
			if d := ascii.ClampHint(w.Reset.Sub(now)); !found || d > wait {
				wait, found = d, true
			}
		}
	}
	return wait, found
}

// keyIs reports whether a member name equals name (lower case), ignoring
// ASCII case.
func keyIs(key, name string) bool {
	return len(key) == len(name) && ascii.EqualFold(key, name)
}

// messageHint reads a wait from a message: Azure's "retry after 6
// seconds" or OpenAI's "try again in 6.5s".
func messageHint(msg string) (time.Duration, bool) {
	if i := indexFold(msg, "retry after "); i >= 0 {
		rest := msg[i+len("retry after "):]
		num := ascii.LeadingNumber(rest)
		if f, ok := ascii.ParseDecimal(num); ok {
			if d, ok := hintIn(f, ascii.TrimOWS(rest[len(num):])); ok {
				return d, true
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
		if d, ok := ascii.ParseGoDuration(tok); ok {
			return d, true
		}
		if f, ok := ascii.ParseDecimal(tok); ok {
			if d, ok := hintIn(f, ascii.TrimOWS(rest[j:])); ok {
				return d, true
			}
		}
	}
	return 0, false
}

// hintIn reads f in the unit that unit begins with: milliseconds, seconds
// or minutes.
func hintIn(f float64, unit string) (time.Duration, bool) {
	switch {
	case ascii.HasPrefixFold(unit, "ms"), ascii.HasPrefixFold(unit, "millisecond"):
		return ascii.SecondsDuration(f / 1000), true
	case ascii.HasPrefixFold(unit, "s"):
		return ascii.SecondsDuration(f), true
	case ascii.HasPrefixFold(unit, "minute"):
		return ascii.SecondsDuration(f * 60), true
	}
	return 0, false
}

// indexFold is strings.Index ignoring ASCII case; sub is lower case.
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if ascii.HasPrefixFold(s[i:], sub) {
			return i
		}
	}
	return -1
}

// jsonText reads a JSON string or number as text; other values read as "".
func jsonText(v gjson.Result) string {
	switch v.Type {
	case gjson.String:
		return v.Str
	case gjson.Number:
		return v.Raw
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

// errorBodyWait bounds the time spent reading an error body for
// classification: a body that drips stops being read after it, and the
// caller gets the response with what was read.
const errorBodyWait = 3 * time.Second

// readErrorBody reads the start of an error body for classification: up to
// limit bytes, stopping early at its end, an error, contentLength bytes or
// after wait. It returns what it read and a body to put back in its place,
// which yields those bytes and then the rest of rc, unread (a read still
// under way at the wait's end included), or the error that ended the
// reading; closing it closes rc.
//
// Each read runs in its own goroutine so that a body that stalls cannot
// hold the caller past wait; a read still under way then completes into
// the body put back.
func readErrorBody(rc io.ReadCloser, contentLength int64, limit int, wait time.Duration) ([]byte, *errorBody) {
	size := 512
	if contentLength > 0 {
		size = int(min(contentLength, int64(limit)))
	}
	buf := make([]byte, 0, size)
	eb := &errorBody{rc: rc}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	results := make(chan readResult, 1)
	empty := 0
	for {
		if len(buf) == limit || (contentLength > 0 && int64(len(buf)) >= contentLength) {
			eb.prefix = buf
			return buf, eb
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
			if cap(buf) > limit {
				buf = buf[:len(buf):limit]
			}
		}
		p := buf[len(buf):cap(buf)]
		go func() {
			n, err := rc.Read(p)
			results <- readResult{p: p[:max(0, min(n, len(p)))], err: err}
		}()
		select {
		case r := <-results:
			buf = buf[:len(buf)+len(r.p)]
			if r.err != nil {
				eb.prefix, eb.err, eb.ended = buf, r.err, true
				return buf, eb
			}
			if len(r.p) == 0 {
				if empty++; empty >= 100 {
					eb.prefix, eb.err, eb.ended = buf, io.ErrNoProgress, true
					return buf, eb
				}
			}
		case <-timer.C:
			eb.prefix, eb.pending, eb.slow = buf, results, true
			return buf, eb
		}
	}
}

// readBodyForClassify reads the start of resp's body with readErrorBody
// and puts back the body that yields it all. A body classified before and
// not read since is not read again: what was read then is used.
func readBodyForClassify(resp *http.Response) []byte {
	if eb, ok := resp.Body.(*errorBody); ok && eb.off == 0 && eb.rest == nil {
		return eb.prefix
	}
	body, eb := readErrorBody(resp.Body, resp.ContentLength, maxErrorBody, errorBodyWait)
	resp.Body = eb
	return body
}

type readResult struct {
	p   []byte
	err error
}

// errorBody is the body put back after classification: the bytes read,
// then a read that was under way, then the rest of rc (or the error that
// ended the reading).
type errorBody struct {
	prefix  []byte
	off     int
	err     error           // error met while reading prefix
	ended   bool            // reading ended with err: rc is not read again
	slow    bool            // reading stopped at the wait: rc was still being read
	pending chan readResult // the read under way at the wait; nil once received
	rest    []byte          // its bytes not yet returned
	rc      io.ReadCloser
}

func (b *errorBody) Read(p []byte) (int, error) {
	if b.off < len(b.prefix) {
		n := copy(p, b.prefix[b.off:])
		b.off += n
		return n, nil
	}
	if b.pending != nil {
		r := <-b.pending
		b.pending = nil
		b.rest = r.p
		if r.err != nil {
			b.err, b.ended = r.err, true
		}
	}
	if len(b.rest) > 0 {
		n := copy(p, b.rest)
		b.rest = b.rest[n:]
		return n, nil
	}
	if b.ended {
		return 0, b.err
	}
	return b.rc.Read(p)
}

// Close closes the original body. A read under way ends with it.
func (b *errorBody) Close() error { return b.rc.Close() }

// read returns the bytes read for classification, and the error that
// ended the reading (nil when the limit or the wait ended it).
func (b *errorBody) read() ([]byte, error) {
	if b.ended && b.err != io.EOF {
		return b.prefix, b.err
	}
	return b.prefix, nil
}

// keepErrorBody returns the start of an error body, up to limit bytes read
// within errorBodyWait (the bytes classification read, when it did), and
// the error that ended the reading; it then drains and closes the body.
func keepErrorBody(rc io.ReadCloser, limit int) ([]byte, error) {
	eb, ok := rc.(*errorBody)
	if !ok {
		_, eb = readErrorBody(rc, -1, limit, errorBodyWait)
	}
	b, err := eb.read()
	drainClose(eb, int64(limit))
	return b, err
}

// drainClose reads what is left of a discarded error body, up to limit
// bytes and for at most errorBodyWait, so that its connection can be
// reused, and closes it. A body that was read to its end, failed, or
// dripped during classification is closed at once; one that does not
// finish within the wait is closed while it is read, which ends the read
// and costs the connection.
func drainClose(rc io.ReadCloser, limit int64) {
	if eb, ok := rc.(*errorBody); ok {
		if eb.ended || eb.slow {
			rc.Close()
			return
		}
		eb.off = len(eb.prefix) // in memory already: drain what follows
	}
	done := make(chan struct{})
	go func() {
		io.CopyN(io.Discard, rc, limit)
		close(done)
	}()
	timer := time.NewTimer(errorBodyWait)
	select {
	case <-done:
	case <-timer.C:
	}
	timer.Stop()
	rc.Close()
}
