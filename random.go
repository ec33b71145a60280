package steady

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// seeded, when set, is the random source of retry backoff and of the
// breaker's open periods for every Transport without a Config.Random, in
// place of math/rand/v2's global one. Only this package's tests set it
// (SeedRandom), so that no test of theirs draws from an unseeded source.
var seeded atomic.Pointer[jitter]

// jitter is a random source safe for concurrent use: Config.Random under a
// lock. A nil *jitter draws from seeded, else from math/rand/v2's global
// source.
type jitter struct {
	mu sync.Mutex
	r  *rand.Rand // guarded by mu
}

// newJitter returns src under a lock, or nil when src is nil.
func newJitter(src rand.Source) *jitter {
	if src == nil {
		return nil
	}
	return &jitter{r: rand.New(src)}
}

// int64N returns a random number in [0, n), like rand.Int64N.
func (j *jitter) int64N(n int64) int64 {
	if j == nil {
		if j = seeded.Load(); j == nil {
			return rand.Int64N(n)
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.r.Int64N(n)
}
