package steady

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/openai/openai-go/v3/option"
)

// ErrCircuitOpen is returned, wrapped, for a request refused because its
// upstream's circuit breaker is open.
var ErrCircuitOpen = errors.New("steady: circuit open")

// Config configures a [Transport]. The zero value gives production
// defaults.
type Config struct {
	// Base sends each attempt. Nil means a tuned clone of
	// http.DefaultTransport with a response-header timeout.
	Base http.RoundTripper

	// Retry says what is retried and how long steady waits between tries.
	Retry RetryConfig

	// Breaker configures the circuit breaker kept per upstream.
	Breaker BreakerConfig

	// Pacing configures proactive throttling under the announced limits.
	Pacing PacingConfig

	// OnEvent, if set, is called for every retry, wait and breaker state
	// change. It is never called with a lock held, and may be called from
	// several goroutines at once.
	OnEvent func(Event)

	// Logger, if set, receives the same events as OnEvent, at Debug level
	// for waits and Info or Warn for retries, give-ups and breaker changes.
	Logger *slog.Logger
}

// Transport is an [http.RoundTripper] that paces, retries and guards
// requests to LLM APIs. It is safe for concurrent use and starts no
// goroutines.
type Transport struct {
	cfg   Config
	pacer *pacer
}

var (
	_ http.RoundTripper = (*Transport)(nil)
	_ option.Middleware = (*Transport)(nil).Middleware
)

// New returns a Transport configured by cfg.
func New(cfg Config) *Transport {
	if cfg.Base == nil {
		cfg.Base = http.DefaultTransport
	}
	t := &Transport{cfg: cfg}
	t.pacer = newPacer(cfg.Pacing, t.emit, func(string) BreakerState { return BreakerClosed })
	return t
}

// emit delivers ev to OnEvent and Logger. It must never be called with a
// lock held.
func (t *Transport) emit(ev Event) {
	if t.cfg.OnEvent != nil {
		t.cfg.OnEvent(ev)
	}
}

// RoundTrip implements [http.RoundTripper].
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.cfg.Base.RoundTrip(req)
}

// Middleware has the signature of option.Middleware:
// openai.NewClient(option.WithMiddleware(t.Middleware)).
func (t *Transport) Middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	return next(req)
}
