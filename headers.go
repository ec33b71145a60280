package steady

import (
	"net/http"

	"github.com/steady-go/steady/internal/ascii"
	"github.com/steady-go/steady/ratelimit"
)

// respHeaders is one read of a response's headers, in one pass, shared by
// pacing (the rate-limit windows and retry hint), classification (the
// request id, x-should-retry, steady's own give-up header, the retry hint)
// and events (the request id).
type respHeaders struct {
	rl ratelimit.Scan
	// others: the names below were looked for (read with others true);
	// a read without them knows only rl.
	others bool
	// ids: x-request-id, request-id, apim-request-id (Azure) and
	// x-ms-client-request-id, in that order of preference.
	ids                 [4]string
	shouldRetry, giveUp string
}

// read reads h into r, forgetting what r read before. With others, the
// headers pacing does not read (the request id, x-should-retry and
// steady's give-up header) are read in the same pass; a success that is
// not observed needs none of them.
func (r *respHeaders) read(h http.Header, others bool) {
	r.others, r.ids, r.shouldRetry, r.giveUp = others, [4]string{}, "", ""
	if !others {
		r.rl.Read(h, nil)
		return
	}
	r.rl.Read(h, func(k string, vv []string) {
		switch {
		case ascii.EqualFold(k, "x-request-id"):
			ascii.Keep(&r.ids[0], vv[0])
		case ascii.EqualFold(k, "request-id"):
			ascii.Keep(&r.ids[1], vv[0])
		case ascii.EqualFold(k, "apim-request-id"):
			ascii.Keep(&r.ids[2], vv[0])
		case ascii.EqualFold(k, "x-ms-client-request-id"):
			ascii.Keep(&r.ids[3], vv[0])
		case ascii.EqualFold(k, "x-should-retry"):
			ascii.Keep(&r.shouldRetry, vv[0])
		case ascii.EqualFold(k, "x-steady-give-up"):
			ascii.Keep(&r.giveUp, vv[0])
		}
	})
}

// requestID returns the upstream's request id, bounded and printable, or
// "": x-request-id, request-id, apim-request-id (Azure) or
// x-ms-client-request-id, in that order of preference, in any case. r was
// read with others.
func (r *respHeaders) requestID() string {
	for _, id := range r.ids {
		if id = printable(id, maxRequestID); id != "" {
			return id
		}
	}
	return ""
}
