package steady

import (
	"math/rand/v2"
	"testing"
)

// SeedRandom makes the jitter of retries and open periods of every
// Transport without a Config.Random come from a source seeded with seed,
// for the rest of the test binary's run, so that a test that calls it
// first gives the same result on every run. TestMain seeds it before any
// test runs, so that no test draws from an unseeded source.
func SeedRandom(seed uint64) {
	seeded.Store(newJitter(rand.NewPCG(seed, 0x5eed)))
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
	if newJitter(nil) != nil {
		t.Error("newJitter(nil) is not nil: a Transport without Config.Random would not use the shared source")
	}
}
