package steady

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// seeded, when set, is the random source of retry backoff and of the
// breaker's open periods instead of math/rand/v2's global one, so that a
// test's results are the same on every run. Only tests set it.
var seeded atomic.Pointer[lockedRand]

// lockedRand is a seeded source safe for concurrent use.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand // guarded by mu
}

// randInt64N returns a random number in [0, n), like rand.Int64N.
func randInt64N(n int64) int64 {
	if s := seeded.Load(); s != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.r.Int64N(n)
	}
	return rand.Int64N(n)
}
