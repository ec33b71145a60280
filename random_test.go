// The SDK's retry backoff draws its jitter from math/rand's global source,
// whose Seed is a no-op since Go 1.24 unless randseednop=0: with it,
// SeedRandom seeds that source too.
//go:debug randseednop=0

package steady

import (
	mrand "math/rand"
	"math/rand/v2"
	"testing"
)

// SeedRandom makes the jitter of retries and open periods of every
// Transport without a Config.Random come from a source seeded with seed,
// for the rest of the test binary's run, and seeds math/rand's global
// source, from which the SDK's own retries draw their jitter, so that a
// test that calls it first gives the same result on every run (as long as
// no two of its goroutines draw at one instant of fake time: their order
// is the scheduler's). TestMain seeds both before any test runs, so that
// no test draws from an unseeded source.
func SeedRandom(seed uint64) {
	seeded.Store(newJitter(rand.NewPCG(seed, 0x5eed)))
	//lint:ignore SA1019 the SDK draws from the global source; randseednop=0 (above) makes Seed seed it
	mrand.Seed(int64(seed))
}

// TestSeedRandom: a seeded source repeats its draws, and a Transport's
// own source (Config.Random) is not the shared one.
func TestSeedRandom(t *testing.T) {
	defer seeded.Store(seeded.Load())
	draw := func(j *jitter) []int64 {
		var out []int64
		for range 8 {
			out = append(out, j.int64N(1<<40))
		}
		return out
	}
	SeedRandom(7)
	a := draw(nil)
	SeedRandom(7)
	b := draw(nil)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("draw %d: %d then %d with the same seed", i, a[i], b[i])
		}
	}
	SeedRandom(8)
	if c := draw(nil); c[0] == a[0] && c[1] == a[1] {
		t.Errorf("seeds 7 and 8 drew the same: %v", c[:2])
	}
	SeedRandom(7)
	own := draw(newJitter(rand.NewPCG(7, 0x5eed)))
	if got := draw(nil); got[0] != a[0] || got[1] != a[1] {
		t.Errorf("a Transport's own source drew from the shared one: %v, want %v", got[:2], a[:2])
	}
	if own[0] != a[0] {
		t.Errorf("Config.Random seeded as SeedRandom(7) drew %d, want %d", own[0], a[0])
	}
	// The SDK's source (its backoff draws rand.Int63n).
	SeedRandom(7)
	sdk := mrand.Int63n(1 << 40)
	SeedRandom(7)
	if again := mrand.Int63n(1 << 40); again != sdk {
		t.Errorf("math/rand's global source drew %d, then %d after the same seed: the SDK's retry jitter is not seeded (randseednop)", sdk, again)
	}
	if newJitter(nil) != nil {
		t.Error("newJitter(nil) is not nil: a Transport without Config.Random would not use the shared source")
	}
}
