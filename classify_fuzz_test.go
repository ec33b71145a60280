package steady

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/steady-go/steady/internal/headertest"
)

// fuzzNow and fuzzHeader are the fuzz targets' clock and header reader,
// shared with ratelimit's (headertest).
var (
	fuzzNow    = headertest.Now
	fuzzHeader = headertest.Fuzz
)

func FuzzClassifyBody(f *testing.F) {
	for _, s := range []struct {
		status int
		h      string
		body   string
	}{
		{429, "Retry-After: 12", `{"code": 429, "message": "Rate limit exceeded", "type": "rate_limit_error"}`},
		{400, "", `{"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}}`},
		{400, "", `{"error": {"code": "400", "message": "bad", "type": "invalid_request_error"}}`},
		{429, "x-request-id: req_1", `{"error": {"message": "quota", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}`},
		{429, "apim-request-id: a", `{"error": {"code": "429", "message": "Please retry after 6 seconds."}}`},
		{429, "request-id: r", `{"type": "error", "error": {"type": "rate_limit_error", "message": "slow", "details": {"error_code": "enforced_spend_limit_reached"}}, "request_id": "req_1"}`},
		{529, "", `{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`},
		{402, "", `{"type": "error", "error": {"type": "billing_error", "message": "pay"}}`},
		{429, "", `[{"error": {"code": 429, "message": "exhausted", "status": "RESOURCE_EXHAUSTED", "details": [{"retryDelay": "38s"}]}}]`},
		{429, "", `{"error": {"code": 429, "message": "x", "metadata": {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1768348800000"}}}}`},
		{502, "", "<html><head><title>502 Bad Gateway</title></head></html>"},
		{503, "x-should-retry: false", ""},
		{500, "", "\x00\xff{\"error\":"},
		{429, "", `{"error": {"message": "Please try again in 1m30.5s."}}`},
	} {
		f.Add(s.status, s.h, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, headers string, body []byte) {
		h := fuzzHeader(headers)
		fl := ClassifyBody(status, h, body)
		if fl.Status != status || fl.Reason == "" {
			t.Fatalf("%+v", fl)
		}
		if status < 400 && (fl.Retryable || fl.Reason != "ok") {
			t.Fatalf("%d: %+v", status, fl)
		}
		for _, s := range []string{fl.Message, fl.Type, fl.Code, fl.RequestID} {
			if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("not printable: %q", s)
			}
		}
		if len(fl.Message) > maxMessage || len(fl.RequestID) > maxRequestID || len(fl.Type) > maxRequestID || len(fl.Code) > maxRequestID {
			t.Fatalf("too long: %+v", fl)
		}
		if fl.RetryAfter < 0 || fl.RetryAfter > maxHint {
			t.Fatalf("retry after %v", fl.RetryAfter)
		}
		_ = fl.String()
	})
}

// refErrorFields reads type, code and message the way encoding/json does,
// for comparison with parseErrorBody's own JSON reader.
func refErrorFields(body []byte) (typ, code, msg string, ok bool) {
	type obj struct {
		Type, Code, Message, Status, Error json.RawMessage
	}
	text := func(raw json.RawMessage) string {
		raw = trimSpaceBytes(raw)
		if len(raw) == 0 {
			return ""
		}
		if raw[0] == '"' {
			var s string
			json.Unmarshal(raw, &s)
			return s
		}
		if raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' {
			return string(raw)
		}
		return ""
	}
	var top obj
	if json.Unmarshal(body, &top) != nil {
		return "", "", "", false
	}
	o := &top
	var inner obj
	if e := trimSpaceBytes(top.Error); len(e) > 0 && e[0] == '{' && json.Unmarshal(e, &inner) == nil {
		o = &inner
	} else if len(e) > 0 && e[0] == '"' {
		msg = text(e)
	}
	typ, code = text(o.Type), text(o.Code)
	if m := text(o.Message); m != "" {
		msg = m
	}
	if typ == "" {
		typ = text(o.Status)
	}
	return typ, code, msg, true
}

func FuzzErrorBodyJSON(f *testing.F) {
	for _, s := range []string{
		`{"error": {"message": "m", "type": "t", "param": null, "code": "c"}}`,
		`{"code": 429, "message": "x", "type": "rate_limit_error"}`,
		`{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "r"}`,
		`{"error": "plain", "code": 1.5e3}`,
		`{"ERROR": {"Message": "a\"b\u00e9", "type": [1, {"x": []}], "code": -0}}`,
		`{"error": {"message": "a", "message": "b"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, c := range body {
			if c >= 0x80 {
				return // encoding/json folds some non-ASCII names; compare ASCII only
			}
		}
		if bytes.Contains(body, []byte(`\\u`)) {
			return // nor escaped ones (\u017f folds to s)
		}
		b := trimSpaceBytes(body)
		if len(b) == 0 || b[0] != '{' {
			return
		}
		typ, code, msg, ok := refErrorFields(b)
		if got := gjson.ValidBytes(b); got != ok {
			t.Fatalf("valid: gjson %v, encoding/json %v", got, ok)
		}
		if !ok {
			return
		}
		ef := parseErrorBody(body, fuzzNow)
		if msg == "" && typ == "" && code == "" {
			return // an unknown shape: the message is an excerpt
		}
		if ef.typ != typ || ef.code != code || ef.message != msg {
			t.Fatalf("got %q %q %q, encoding/json %q %q %q", ef.typ, ef.code, ef.message, typ, code, msg)
		}
	})
}
