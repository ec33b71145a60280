package steadytest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Dialect is how a [Provider] announces its limits in headers and shapes
// its error bodies.
type Dialect int

const (
	// DialectOpenAI sends x-ratelimit-{limit,remaining,reset}-{requests,tokens}
	// with resets as Go-style durations until the quota is fully
	// replenished ("1s", "6m0s", "20ms"), and {"error": {message, type,
	// param, code}} bodies.
	DialectOpenAI Dialect = iota
	// DialectHerokuSeed speaks Heroku Managed Inference as its error
	// reference page ("Error Response Format", the document this project
	// was seeded with; hence the name) describes it:
	// X-RateLimit-{Limit,Remaining,Reset}-{Requests,Tokens} with resets as
	// Unix timestamps (seconds), Retry-After on 429, and flat
	// {"code": 429, "message", "type": "rate_limit_error"} bodies. Heroku's
	// rate-limits page shows the same headers otherwise: see
	// DialectHerokuDocs. Which of the two Heroku sends is not settled, so
	// steady reads both.
	DialectHerokuSeed
	// DialectHerokuDocs speaks Heroku as its rate-limits page shows it: the
	// same header names with duration resets ("51s"), and nested
	// {"error": {"code": 429, "message", "type"}} bodies.
	DialectHerokuDocs
	// DialectAnthropic sends anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}
	// with RFC 3339 resets, request-id instead of x-request-id,
	// {"type": "error", "error": {type, message}, "request_id"} bodies, and
	// 529 for overload.
	DialectAnthropic
	// DialectIETF sends the IETF draft's structured fields:
	// RateLimit-Policy: "requests";q=60;w=60, "tokens";q=...;w=60;qu="tokens" and
	// RateLimit: "requests";r=59;t=60, "tokens";r=...;t=..., with OpenAI
	// error bodies.
	DialectIETF
	// DialectNone sends no rate-limit headers (only Retry-After on 429), with
	// OpenAI error bodies.
	DialectNone
)

var dialectNames = [...]string{"openai", "heroku-seed", "heroku-docs", "anthropic", "ietf", "none"}

// String returns the dialect's name: "openai",
// "heroku-seed", "heroku-docs", "anthropic", "ietf" or "none".
func (d Dialect) String() string {
	if d >= 0 && int(d) < len(dialectNames) {
		return dialectNames[d]
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// Dialects returns every dialect, in declaration order: a test runs the
// same case against each.
func Dialects() []Dialect {
	ds := make([]Dialect, len(dialectNames))
	for i := range ds {
		ds[i] = Dialect(i)
	}
	return ds
}

// failure is what went wrong, for an error body.
type failure int

const (
	failRequests   failure = iota + 1 // requests limit
	failTokens                        // tokens limit
	failTooLarge                      // a request larger than the tokens limit
	failQuota                         // out of credit
	failServer                        // 5xx
	failOverloaded                    // 529
	failBadRequest                    // 400
	failNotFound                      // 404
	failMethod                        // 405
)

// types returns the OpenAI-style type and code, and the error type of the
// Heroku and Anthropic vocabularies.
func (f failure) types() (openaiType, openaiCode, herokuType, anthropicType string) {
	switch f {
	case failRequests:
		return "requests", "rate_limit_exceeded", "rate_limit_error", "rate_limit_error"
	case failTokens, failTooLarge:
		return "tokens", "rate_limit_exceeded", "rate_limit_error", "rate_limit_error"
	case failQuota:
		return "insufficient_quota", "insufficient_quota", "insufficient_quota", "rate_limit_error"
	case failOverloaded:
		return "server_error", "overloaded", "server_error", "overloaded_error"
	case failBadRequest:
		return "invalid_request_error", "", "invalid_request_error", "invalid_request_error"
	case failNotFound:
		return "invalid_request_error", "unknown_url", "invalid_request_error", "not_found_error"
	case failMethod:
		return "invalid_request_error", "method_not_allowed", "invalid_request_error", "invalid_request_error"
	}
	return "server_error", "", "server_error", "api_error"
}

// errorBody is the dialect's error body for a failure.
func (d Dialect) errorBody(status int, f failure, msg, reqID string) []byte {
	oType, oCode, hType, aType := f.types()
	switch d {
	case DialectHerokuSeed:
		return mustJSON(struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Type    string `json:"type"`
		}{status, msg, hType})
	case DialectHerokuDocs:
		type inner struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Type    string `json:"type"`
		}
		return mustJSON(struct {
			Error inner `json:"error"`
		}{inner{status, msg, hType}})
	case DialectAnthropic:
		type details struct {
			ErrorCode string `json:"error_code"`
		}
		type inner struct {
			Type    string   `json:"type"`
			Message string   `json:"message"`
			Details *details `json:"details,omitempty"`
		}
		in := inner{Type: aType, Message: msg}
		if f == failQuota {
			in.Details = &details{ErrorCode: "enforced_spend_limit_reached"}
		}
		return mustJSON(struct {
			Type      string `json:"type"`
			Error     inner  `json:"error"`
			RequestID string `json:"request_id"`
		}{"error", in, reqID})
	}
	return openAIErrorBody(oType, oCode, msg)
}

// requestIDHeader is the header that carries the request id.
func (d Dialect) requestIDHeader() string {
	if d == DialectAnthropic {
		return "Request-Id"
	}
	return "X-Request-Id"
}

// setHeaders writes the dialect's rate-limit headers for the quotas in dec,
// as seen at now. truncate truncates whole-second resets rather than
// rounding them up.
func (d Dialect) setHeaders(h http.Header, now time.Time, dec *decision, truncate bool) {
	whole := ceilUnix
	if truncate {
		whole = func(t time.Time) int64 { return t.Unix() }
	}
	type q struct {
		name string
		quota
	}
	qs := make([]q, 0, 2)
	if dec.req.limit > 0 {
		qs = append(qs, q{"requests", dec.req})
	}
	if dec.tok.limit > 0 {
		qs = append(qs, q{"tokens", dec.tok})
	}
	switch d {
	case DialectOpenAI, DialectHerokuDocs, DialectHerokuSeed:
		for _, q := range qs {
			suffix := "-" + q.name
			reset := durationString(q.reset)
			if d != DialectOpenAI {
				suffix = "-" + strings.ToUpper(q.name[:1]) + q.name[1:]
			}
			if d == DialectHerokuSeed {
				reset = strconv.FormatInt(whole(now.Add(q.reset)), 10)
			}
			// Set keeps header keys canonical, so Header.Get finds them in
			// memory; on the wire, names are case-insensitive anyway.
			h.Set("X-RateLimit-Limit"+suffix, strconv.FormatInt(q.limit, 10))
			h.Set("X-RateLimit-Remaining"+suffix, strconv.FormatInt(q.remaining, 10))
			h.Set("X-RateLimit-Reset"+suffix, reset)
		}
	case DialectAnthropic:
		for _, q := range qs {
			p := "Anthropic-Ratelimit-" + strings.ToUpper(q.name[:1]) + q.name[1:] + "-"
			h.Set(p+"Limit", strconv.FormatInt(q.limit, 10))
			h.Set(p+"Remaining", strconv.FormatInt(q.remaining, 10))
			h.Set(p+"Reset", time.Unix(whole(now.Add(q.reset)), 0).UTC().Format(time.RFC3339))
		}
	case DialectIETF:
		if len(qs) == 0 {
			return
		}
		var policy, state []string
		w := ceilSeconds(dec.length)
		for _, q := range qs {
			item := fmt.Sprintf("%q;q=%d;w=%d", q.name, q.limit, w)
			if q.name == "tokens" {
				item += `;qu="tokens"` // the draft's default unit is requests
			}
			policy = append(policy, item)
			state = append(state, fmt.Sprintf("%q;r=%d;t=%d", q.name, q.remaining, ceilSeconds(q.reset)))
		}
		h.Set("RateLimit-Policy", strings.Join(policy, ", "))
		h.Set("RateLimit", strings.Join(state, ", "))
	}
}

// durationString formats d as OpenAI does, rounded up to the millisecond:
// "1s", "6m0s", "20ms", "0s".
func durationString(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return ((d + time.Millisecond - 1) / time.Millisecond * time.Millisecond).String()
}

// ceilUnix is t in Unix seconds, rounded up.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// hostileValues are rate-limit header values no parser should trust.
var hostileValues = []string{
	"NaN", "-1", "1e400", "-Inf", "+Inf", "9223372036854775808", "", "abc",
	"-5s", "99999999999999999999h", "0x1F", "1,2", "2025-13-45T99:99:99Z",
	"\"requests\";q=-1;w=0", "18446744073709551616", "1.5.5", "; ;", "NaN;r=NaN;t=NaN",
}

// hostileHeaderNames are every rate-limit and retry header the dialects use.
var hostileHeaderNames = []string{
	"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
	"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
	"anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset",
	"anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset",
	"RateLimit", "RateLimit-Policy", "Retry-After", "Retry-After-Ms", "X-Ms-Retry-After-Ms",
	"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "Date",
}

// setHostile replaces every rate-limit header with a malformed, huge,
// negative or NaN value, varied by n.
func setHostile(h http.Header, n int64) {
	for i, name := range hostileHeaderNames {
		v := hostileValues[(int(n%int64(len(hostileValues)))+i)%len(hostileValues)]
		if (int(n)+i)%7 == 0 {
			v = strings.Repeat("9", 4096) // huge
		}
		h.Set(name, v)
	}
}

// streamError is the frame of an overloaded error event inside a stream,
// in the dialect's shape.
func (d Dialect) streamError(reqID string) string {
	if d == DialectAnthropic {
		return `event: error` + "\n" + `data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded (simulated, in the stream)"},"request_id":"` + reqID + `"}` + "\n\n"
	}
	return `data: {"error":{"message":"Overloaded (simulated, in the stream)","type":"overloaded_error","code":"overloaded"}}` + "\n\n"
}
