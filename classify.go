package steady

import (
	"net/http"
	"time"
)

// Failure describes a failed call: the status, what the provider's error
// body says, and whether it is worth retrying and why.
type Failure struct {
	Status    int    // HTTP status; 0 for a transport error
	Type      string // provider's error type, e.g. "rate_limit_error"
	Code      string // provider's error code, e.g. "insufficient_quota"
	Message   string
	RequestID string
	Retryable bool
	Reason    string // why it is or is not retryable, e.g. "429 rate limit"
	// RetryAfter is the server's retry hint, valid when HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
}

// ClassifyResponse describes resp. It reads at most a bounded prefix of the
// body and leaves resp.Body readable from the start.
func ClassifyResponse(resp *http.Response) Failure {
	return Failure{Status: resp.StatusCode}
}

// ClassifyError describes err: an *openai.Error, or an error from a
// transport (connection refused, reset, EOF, TLS, cancellation).
func ClassifyError(err error) Failure {
	return Failure{}
}
