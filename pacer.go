package steady

import (
	"context"
	"net/http"

	_ "golang.org/x/time/rate" // pacing is built on x/time/rate
)

// PacingConfig configures proactive throttling.
type PacingConfig struct{}

// pacer keeps the limits of every partition and makes requests wait for
// their turn. The transport calls acquire before each attempt and settle on
// the permit after it.
type pacer struct{}

// newPacer returns a pacer. emit delivers events (never call it under a
// lock); breakerState reports an upstream's breaker state for snapshots.
func newPacer(cfg PacingConfig, emit func(Event), breakerState func(upstream string) BreakerState) *pacer {
	return &pacer{}
}

// acquire waits until req may be sent. A nil permit is valid.
func (p *pacer) acquire(ctx context.Context, req *http.Request) (*permit, error) {
	return nil, nil
}

// permit is one attempt's reservation in its partition.
type permit struct{}

// settle reconciles the reservation with what the attempt's response (or
// error) says: the rate-limit headers, usage, a 429 cooldown. nil-safe.
func (pm *permit) settle(resp *http.Response, err error) {}

// PartitionSnapshot is the state of one pacing partition at one moment.
type PartitionSnapshot struct {
	Key string // label: upstream host, model and a credential fingerprint
}

// Snapshot returns the state of every pacing partition.
func (t *Transport) Snapshot() []PartitionSnapshot {
	return nil
}
