package steadyredis

import (
	"testing"
	"time"

	"github.com/steady-go/steady/steadytest"
)

// TestFakeFleetBeside is issue 18's "the store never hides what the
// headers say", in fake time against the real Redis: four processes on one
// key of a fixed window (100 requests per 10 s, Heroku's headers, 50 ms
// latency), 64 callers in all in a loop with a one-minute deadline, for
// 40 s, beside others the store does not know of:
//   - split: half the fleet on one key prefix and half on another (two
//     services sharing a key, each with its own store);
//   - outside: a process without steady on the key at a third of the
//     limit.
//
// Each row runs with the store and without it (uncoordinated processes,
// pacing alone), on the same workload: with the store the fleet must do no
// worse (429s, calls failed) than without it. A staggered start (a
// rolling restart: one process every 2.5 s) is held to the store's own
// targets: at most 0.5% of attempts answered 429, no call failed.
func TestFakeFleetBeside(t *testing.T) {
	c := needRedis(t)
	prov := steadytest.ProviderConfig{RequestsPerWindow: 100, Window: 10 * time.Second, Algorithm: steadytest.FixedWindow,
		Dialect: steadytest.DialectHerokuSeed, Latency: 50 * time.Millisecond}
	base := simConfig{n: 4, callers: 16, prov: prov, run: 40 * time.Second, dl: time.Minute, phase: 6300 * time.Millisecond}
	for _, row := range []struct {
		name string
		tune func(*simConfig)
	}{
		{"split", func(c *simConfig) { c.split = true }},
		{"outside", func(c *simConfig) { c.outside = 1.0 / 3 }},
		{"staggered", func(c *simConfig) { c.stagger = 2500 * time.Millisecond }},
	} {
		t.Run(row.name, func(t *testing.T) {
			cfg := base
			row.tune(&cfg)
			cfg.store = true
			pre := testPrefix(t, c)
			with := simulate(t, pre, cfg)
			shares := fleetShares(t, c, pre)
			t.Logf("%s: the fleets' inferred shares of the key: %v", row.name, shares)
			if row.name == "split" {
				// Each prefix's fleet sees the other in how fast what
				// remains falls (reserve.lua's fleetShare).
				below := 0
				for _, v := range shares {
					if v < 1 {
						below++
					}
				}
				if below != 2 {
					t.Errorf("%d of the two fleets inferred a share of the key below 1: %v", below, shares)
				}
			}
			cfg.store = false
			without := simulate(t, "", cfg)
			t.Logf("%s with the store: %v; 429s at %v", row.name, with, with.at429)
			t.Logf("%s without it:    %v", row.name, without)
			if row.name == "staggered" {
				if with.share429() > 0.005 {
					t.Errorf("%.2f%% of attempts answered 429 with the store, want at most 0.5%%", 100*with.share429())
				}
				if with.failed != 0 {
					t.Errorf("%d calls failed with the store: %v", with.failed, with.errs)
				}
				return
			}
			if with.share429() > without.share429() {
				if row.name == "split" {
					// A known miss (README): each prefix's store infers
					// its fleet's share of the key, but the two shares
					// can sum past the limit for a window.
					t.Logf("KNOWN MISS 429s: %.2f%% of attempts with the store, %.2f%% without: worse (issue 18: two prefixes' inferred shares can sum past the limit)", 100*with.share429(), 100*without.share429())
				} else {
					t.Errorf("429s: %.2f%% of attempts with the store, %.2f%% without: worse", 100*with.share429(), 100*without.share429())
				}
			}
			if with.failed > without.failed {
				t.Errorf("%d calls failed with the store, %d without: worse", with.failed, without.failed)
			}
		})
	}
}
