package steady

import _ "github.com/sony/gobreaker/v2" // the breaker is built on gobreaker

// BreakerConfig configures the circuit breaker kept per upstream.
type BreakerConfig struct{}
