package steady

import (
	"net/http"
	"time"
)

// Unit is what a rate-limit window counts.
type Unit uint8

const (
	// UnitRequests counts requests.
	UnitRequests Unit = iota + 1
	// UnitTokens counts tokens, input and output together.
	UnitTokens
	// UnitInputTokens counts prompt tokens.
	UnitInputTokens
	// UnitOutputTokens counts completion tokens.
	UnitOutputTokens
)

// Window is one rate-limit window announced by a response: what it counts,
// its limit, what remains, and when it resets.
type Window struct {
	Unit Unit
	// Name tells windows of one unit apart: "minute", "day", or an IETF
	// policy name. Empty when the dialect names none.
	Name string
	// Limit is the window's quota; -1 when not announced.
	Limit int64
	// Remaining is what is left of the quota; -1 when not announced.
	Remaining int64
	// Reset is when the quota is fully replenished; zero when unknown.
	Reset time.Time
	// Period is the window's length when the dialect states it; zero when
	// unknown.
	Period time.Duration
}

// RateLimits is the normalized reading of a response's rate-limit headers,
// whatever dialect the provider speaks.
type RateLimits struct {
	Windows []Window
	// RetryAfter is the server's retry hint (retry-after-ms,
	// x-ms-retry-after-ms or Retry-After), valid when HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
}

// ParseRateLimits reads every rate-limit dialect in h. Relative times are
// made absolute against the response's Date header when present, else
// against now. Values it cannot read are ignored.
func ParseRateLimits(h http.Header, now time.Time) RateLimits {
	return RateLimits{}
}

// ParseRetryAfter reads the server's retry hint from h: retry-after-ms,
// x-ms-retry-after-ms, then Retry-After as seconds, a float, or an
// HTTP-date. ok is false when there is no readable hint.
func ParseRetryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	return 0, false
}
