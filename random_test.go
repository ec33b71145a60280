package steady

import (
	"math/rand/v2"
	"testing"
)

// SeedRandom makes the jitter of retries and open periods come from a
// source seeded with seed, for the rest of the test binary's run, so that
// a test that calls it first gives the same result on every run.
func SeedRandom(seed uint64) {
	seeded.Store(&lockedRand{r: rand.New(rand.NewPCG(seed, 0x5eed))})
}

// TestSeedRandom: a seeded source repeats its draws; the global one
// comes back afterwards.
func TestSeedRandom(t *testing.T) {
	defer seeded.Store(nil)
	draw := func() []int64 {
		var out []int64
		for range 8 {
			out = append(out, randInt64N(1<<40))
		}
		return out
	}
	SeedRandom(7)
	a := draw()
	SeedRandom(7)
	b := draw()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("draw %d: %d then %d with the same seed", i, a[i], b[i])
		}
	}
	SeedRandom(8)
	if c := draw(); c[0] == a[0] && c[1] == a[1] {
		t.Errorf("seeds 7 and 8 drew the same: %v", c[:2])
	}
}
