package steadyredis

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/store"
)

var testPart = store.Partition{Upstream: "https://api.example.com", Key: "api.example.com/gpt-x#abc123"}

func reservation(cost int64, windows ...store.Window) store.Reservation {
	if len(windows) == 0 {
		windows = []store.Window{{ID: "requests:minute", Cost: 1, Rate: 10, Burst: 5}}
	}
	_ = cost
	return store.Reservation{Partition: testPart, Windows: windows}
}

func mustReserve(t *testing.T, s *Store, r store.Reservation) store.Grant {
	t.Helper()
	g, err := s.Reserve(context.Background(), r)
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	return g
}

// TestSharedBudget runs several stores (processes), each with its own
// client and many goroutines, against one partition, and checks that the
// fleet's admissions never exceed the shared budget in any span, while
// the budget is used to the full.
func TestSharedBudget(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	const (
		stores     = 4
		goroutines = 8
		each       = 25
		rate       = 200.0 // requests per second
		burst      = 10
		tokRate    = 20000.0
		tokBurst   = 1000
	)
	type admit struct {
		at     time.Time
		tokens int64
	}
	var mu sync.Mutex
	var admits []admit
	var rtt time.Duration // the longest reservation: the uncertainty of a go time
	var wg sync.WaitGroup
	for i := range stores {
		cl := redis.NewClient(&redis.Options{Addr: sharedAddr, ContextTimeoutEnabled: i%2 == 0})
		defer cl.Close()
		s := must(New(cl, WithPrefix(prefix), WithTimeout(time.Second)))
		defer s.Close()
		for g := range goroutines {
			wg.Go(func() {
				for k := range each {
					tokens := int64(50 + (g*each+k)%100)
					r := store.Reservation{Partition: testPart, Windows: []store.Window{
						{ID: "requests:minute", Cost: 1, Rate: rate, Burst: burst},
						{ID: "tokens:minute", Cost: tokens, Rate: tokRate, Burst: tokBurst},
					}}
					before := time.Now()
					gr, err := s.Reserve(context.Background(), r)
					after := time.Now()
					if err != nil || !gr.Shared || gr.Refused {
						t.Errorf("Reserve = %+v, %v; want shared, not refused", gr, err)
						return
					}
					// The go time on Redis's clock lies between these two.
					at := before.Add(after.Sub(before) / 2).Add(gr.Wait)
					mu.Lock()
					rtt = max(rtt, after.Sub(before))
					admits = append(admits, admit{at, tokens})
					mu.Unlock()
					s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: gr, Sent: true})
				}
			})
		}
	}
	wg.Wait()
	n := stores * goroutines * each
	if len(admits) != n {
		t.Fatalf("%d admissions, want %d", len(admits), n)
	}
	slices.SortFunc(admits, func(a, b admit) int { return a.at.Compare(b.at) })
	// In any span of d, at most burst + rate*d requests (and the same for
	// tokens) go; the slack covers the uncertainty of the go times.
	slack := rtt + time.Millisecond
	t.Logf("%d admissions, longest reservation %v", len(admits), rtt)
	for _, d := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		j, toks := 0, int64(0)
		for i := range admits {
			toks += admits[i].tokens
			for admits[i].at.Sub(admits[j].at) >= d {
				toks -= admits[j].tokens
				j++
			}
			maxReq := burst + rate*(d+slack).Seconds()
			maxTok := tokBurst + tokRate*(d+slack).Seconds()
			if got := float64(i - j + 1); got > maxReq {
				t.Fatalf("%v requests admitted within %v, budget %v", got, d, maxReq)
			}
			if float64(toks) > maxTok {
				t.Fatalf("%d tokens admitted within %v, budget %v", toks, d, maxTok)
			}
		}
	}
	// And the budget is used: the fleet's last admission comes when one
	// process alone at the full rate would send it.
	var tokens int64
	for _, a := range admits {
		tokens += a.tokens
	}
	want := max(float64(n-burst)/rate, float64(tokens-tokBurst)/tokRate)
	span := admits[n-1].at.Sub(admits[0].at).Seconds()
	if span < want-0.05 || span > want*1.1+0.1 {
		t.Errorf("admissions spread over %.3fs, want about %.3fs", span, want)
	}
}

// TestObservationNewerWins checks that a reading from the response to a
// later reservation replaces an earlier one, never the reverse, and that
// other processes receive it with their next reservation.
func TestObservationNewerWins(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	a := must(New(c, WithPrefix(prefix), WithFlushDelay(time.Hour)))
	b := must(New(c, WithPrefix(prefix), WithFlushDelay(time.Hour)))
	defer a.Close()
	defer b.Close()
	r := reservation(1, store.Window{ID: "requests:minute", Cost: 1, Rate: 1000, Burst: 100})
	g1 := mustReserve(t, a, r)
	g2 := mustReserve(t, a, r)
	if g2.Seq != g1.Seq+1 {
		t.Fatalf("seqs %d then %d, want consecutive", g1.Seq, g2.Seq)
	}
	obs := func(rem int64) *store.Observation {
		return &store.Observation{Windows: []store.ObservedWindow{{ID: "requests:minute", Limit: 500, Remaining: rem, Reset: 30 * time.Second, Period: time.Minute, Issued: -1}}}
	}
	// The later response arrives first, then the earlier one.
	a.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g2, Sent: true, Observed: obs(400)})
	a.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g1, Sent: true, Observed: obs(450)})
	mustReserve(t, a, r) // carries the settlements
	// Published separately as well: the older one must still lose.
	a.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g1, Sent: true, Observed: obs(460)})
	a.Close()

	g := mustReserve(t, b, r)
	if g.Observed == nil {
		t.Fatal("no observation shared")
	}
	o := g.Observed
	if o.Seq != g2.Seq || len(o.Windows) != 1 || o.Windows[0].Remaining != 400 || o.Windows[0].Limit != 500 || o.Windows[0].Period != time.Minute {
		t.Fatalf("observation %+v, want seq %d with remaining 400", o, g2.Seq)
	}
	if rs := o.Windows[0].Reset; rs <= 29*time.Second || rs > 30*time.Second {
		t.Errorf("reset %v, want just under 30s", rs)
	}
	r.ObservedSeq = o.Seq
	if g := mustReserve(t, b, r); g.Observed != nil {
		t.Errorf("observation %+v sent again to a process that has it", g.Observed)
	}
}

// TestObservationCorrectsBudget checks that what the server says remains,
// less what the fleet reserved since, caps the shared budget.
func TestObservationCorrectsBudget(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	s := must(New(c, WithPrefix(prefix)))
	defer s.Close()
	w := store.Window{ID: "requests:minute", Cost: 1, Rate: 10, Burst: 10}
	r := reservation(1, w)
	g := mustReserve(t, s, r)
	if g.Wait != 0 {
		t.Fatalf("first wait %v, want 0", g.Wait)
	}
	// Another client of the key used everything: nothing remains.
	s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true,
		Observed: &store.Observation{Windows: []store.ObservedWindow{{ID: w.ID, Limit: 600, Remaining: 0, Reset: 5 * time.Second, Issued: -1, Gradual: true}}}})
	g = mustReserve(t, s, r)
	// The budget is empty: this request waits for one unit at 10/s.
	if g.Wait < 90*time.Millisecond || g.Wait > 110*time.Millisecond {
		t.Errorf("wait %v after remaining 0, want about 100ms", g.Wait)
	}
}

// TestResetWindowHoldsToReading checks that a window that is whole again
// only at its reset holds the fleet to what its reading says remains until
// then, however fast its rate: what remains goes at once, and the next
// request waits for the reset, not for the rate.
func TestResetWindowHoldsToReading(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	s := must(New(c, WithPrefix(prefix), WithFlushDelay(time.Hour), WithTimeout(time.Second)))
	other := must(New(c, WithPrefix(prefix), WithTimeout(time.Second)))
	defer s.Close()
	defer other.Close()
	w := store.Window{ID: "requests:minute", Cost: 1, Rate: 10, Burst: -600}
	r := reservation(1, w)
	g := mustReserve(t, s, r)
	// The response says 3 remain until the reset, 2 s away.
	s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true,
		Observed: &store.Observation{Windows: []store.ObservedWindow{{ID: w.ID, Limit: 600, Remaining: 3, Reset: 2 * time.Second, Issued: -1}}}})
	for i := range 3 {
		if g := mustReserve(t, s, r); g.Wait > 10*time.Millisecond {
			t.Errorf("request %d of the 3 that remain waits %v, want none", i+1, g.Wait)
		}
	}
	// Nothing remains: another process's request asks again at the
	// reset; with a MaxWait shorter than that, it is refused.
	r.MaxWait = time.Second
	g = mustReserve(t, other, r)
	if !g.Refused || g.Wait < 1900*time.Millisecond || g.Wait > 2100*time.Millisecond {
		t.Errorf("grant %+v with nothing left before the reset 2s away, want refused with a wait of about 2s", g)
	}
}

// TestCooldownPausesFleet checks that one process's 429 pauses the other.
func TestCooldownPausesFleet(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	a := must(New(c, WithPrefix(prefix)))
	b := must(New(c, WithPrefix(prefix)))
	defer a.Close()
	defer b.Close()
	r := reservation(1)
	g := mustReserve(t, a, r)
	a.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, Cooldown: 2 * time.Second})
	gb := mustReserve(t, b, r)
	if gb.Wait < 1900*time.Millisecond || gb.Wait > 2*time.Second {
		t.Errorf("other process waits %v after a 2s cooldown, want about 2s", gb.Wait)
	}
	// A cooldown longer than the caller's cap refuses and reserves nothing.
	r.MaxWait = time.Second
	gr := mustReserve(t, b, r)
	if !gr.Refused {
		t.Errorf("grant %+v with a 1s cap during a 2s cooldown, want refused", gr)
	}
	r.MaxWait = 0
	if g2 := mustReserve(t, b, r); g2.Seq != gb.Seq+1 {
		t.Errorf("seq %d after a refusal, want %d: a refusal reserved", g2.Seq, gb.Seq+1)
	}
}

// TestGiveBackAndReconcile checks that an unsent request's reservation is
// returned and that an actual cost larger than the estimate is charged.
func TestGiveBackAndReconcile(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	s := must(New(c, WithPrefix(prefix), WithFlushDelay(time.Hour)))
	defer s.Close()
	w := store.Window{ID: "tokens:minute", Cost: 1000, Rate: 1000, Burst: 1000}
	r := reservation(1, w)
	g := mustReserve(t, s, r) // the burst is used
	s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: false})
	if g2 := mustReserve(t, s, r); g2.Wait > 10*time.Millisecond {
		t.Fatalf("wait %v after the only reservation was given back, want none", g2.Wait)
	} else {
		// Sent, and it cost 3000 where 1000 were reserved.
		s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g2, Sent: true, Actual: []int64{3000}})
	}
	// 3000 spent from a full bucket of 1000: the next 1000 wait until
	// 3000 have flowed back at 1000/s.
	g3 := mustReserve(t, s, r)
	if g3.Wait < 2900*time.Millisecond || g3.Wait > 3010*time.Millisecond {
		t.Errorf("wait %v after an actual cost of 3000, want about 3s", g3.Wait)
	}
}

// TestFleetBreaker checks that one process opening the circuit opens it
// for the fleet, that one probe goes when it is due, and that only the
// probe's success closes it.
func TestFleetBreaker(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	a := must(New(c, WithPrefix(prefix)))
	b := must(New(c, WithPrefix(prefix), WithProbeTimeout(time.Minute)))
	defer a.Close()
	defer b.Close()
	r := reservation(1)
	other := r
	other.Partition.Key = "api.example.com/other-model#abc123" // same upstream
	g := mustReserve(t, a, r)
	a.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, BreakerOpen: 10 * time.Second})
	gb := mustReserve(t, b, other)
	if gb.Breaker != store.BreakerOpen || gb.Wait < 9*time.Second || gb.Wait > 10*time.Second || gb.Seq != 0 {
		t.Fatalf("other process's grant %+v, want open for about 10s and nothing reserved", gb)
	}
	// A late success of an ordinary request does not close it.
	a.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, BreakerClosed: true})
	if gb := mustReserve(t, b, r); gb.Breaker != store.BreakerOpen {
		t.Fatalf("grant %+v after a non-probe success, want still open", gb)
	}
	// Open for a microsecond: the next reservation is the fleet's probe,
	// the one after finds the circuit open while the probe is out.
	a.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, BreakerOpen: time.Microsecond})
	c.HSet(context.Background(), b.keys(testPart)[2], "u", "0") // its time is up
	probe := mustReserve(t, b, r)
	if probe.Breaker != store.BreakerHalfOpen || probe.Seq == 0 {
		t.Fatalf("grant %+v when the open time is up, want the probe", probe)
	}
	if g := mustReserve(t, a, other); g.Breaker != store.BreakerOpen || g.Wait < 59*time.Second {
		t.Fatalf("grant %+v while the probe is out, want open until the probe times out", g)
	}
	b.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: probe, Sent: true, BreakerClosed: true})
	if g := mustReserve(t, a, other); g.Breaker != store.BreakerClosed {
		t.Fatalf("grant %+v after the probe succeeded, want closed", g)
	}
}

// TestKeys checks that keys hold no label or credential, share a hash
// slot, carry the prefix and all have a TTL.
func TestKeys(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	s := must(New(c, WithPrefix(prefix)))
	defer s.Close()
	r := reservation(1)
	g := mustReserve(t, s, r)
	s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, Cooldown: time.Second, BreakerOpen: time.Second})
	keys, err := c.Keys(context.Background(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("keys %q, want 3", keys)
	}
	slot := ""
	for _, k := range keys {
		tag := k[strings.Index(k, "{"):strings.Index(k, "}")]
		if slot == "" {
			slot = tag
		} else if tag != slot {
			t.Errorf("key %q outside hash tag %s}", k, slot)
		}
		for _, secret := range []string{"abc123", "api.example.com", "gpt-x"} {
			if strings.Contains(k, secret) {
				t.Errorf("key %q holds %q", k, secret)
			}
		}
		if ttl := c.PTTL(context.Background(), k).Val(); ttl <= 0 {
			t.Errorf("key %q has TTL %v", k, ttl)
		}
	}
}

// TestFleetSize checks that the heartbeats count the processes reserving
// in a partition.
func TestFleetSize(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	r := reservation(1)
	var g store.Grant
	for i := range 3 {
		// The count is what is tested, not the timeout: a second keeps a
		// loaded machine's slow answer from being taken for a fallback.
		s := must(New(c, WithPrefix(prefix), WithTimeout(time.Second)))
		defer s.Close()
		g = mustReserve(t, s, r)
		if g.Fleet != i+1 {
			t.Errorf("fleet %d after %d processes", g.Fleet, i+1)
		}
	}
}

// TestSettleAfterCancel checks that a 429 is shared even when the request's
// context has ended.
func TestSettleAfterCancel(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	a := must(New(c, WithPrefix(prefix)))
	b := must(New(c, WithPrefix(prefix)))
	defer a.Close()
	defer b.Close()
	r := reservation(1)
	ctx, cancel := context.WithCancel(context.Background())
	g, err := a.Reserve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := a.Reserve(ctx, r); err == nil {
		t.Error("Reserve with an ended context succeeded")
	}
	a.Settle(ctx, store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, Cooldown: time.Second})
	if gb := mustReserve(t, b, r); gb.Wait < 900*time.Millisecond {
		t.Errorf("wait %v after a 1s cooldown settled with an ended context", gb.Wait)
	}
	if !a.Shared() {
		t.Error("an ended context counted as Redis failing")
	}
}

// TestObservationAfterOthers checks that reservations made after the
// observed request are taken off what the server said remains.
func TestObservationAfterOthers(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	a := must(New(c, WithPrefix(prefix), WithFlushDelay(time.Hour)))
	b := must(New(c, WithPrefix(prefix)))
	defer a.Close()
	defer b.Close()
	// A slow rate (1/s), so that a loaded machine's pause between the
	// calls below (real time) does not pay the wait off.
	w := store.Window{ID: "requests:minute", Cost: 1, Rate: 1, Burst: 20}
	r := reservation(1, w)
	g := mustReserve(t, a, r)
	for range 4 {
		mustReserve(t, b, r) // sent by another process after g
	}
	// The response to g says 5 remain: the 4 sent since leave 1.
	a.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true,
		Observed: &store.Observation{Windows: []store.ObservedWindow{{ID: w.ID, Limit: 600, Remaining: 5, Reset: 30 * time.Second, Issued: -1, Gradual: true}}}})
	if g := mustReserve(t, a, r); g.Wait > 10*time.Millisecond {
		t.Errorf("wait %v with one left, want none", g.Wait)
	}
	if g := mustReserve(t, a, r); g.Wait < 500*time.Millisecond || g.Wait > 1010*time.Millisecond {
		t.Errorf("wait %v with none left, want about 1s at 1/s (at least 0.5 s after any pause)", g.Wait)
	}
}

// TestExtremes checks that rates, costs and hints far out of range give a
// long wait, not an error or a fall back.
func TestExtremes(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	s := must(New(c, WithPrefix(prefix)))
	defer s.Close()
	r := reservation(1, store.Window{ID: "tokens:day", Cost: 1 << 40, Rate: 1.0 / 86400, Burst: 1})
	for range 2 {
		g := mustReserve(t, s, r)
		if !g.Shared || g.Wait < 0 {
			t.Fatalf("grant %+v, want shared with a long wait", g)
		}
	}
	g := mustReserve(t, s, r)
	s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true,
		Cooldown: 1 << 62, BreakerOpen: 1 << 62, Actual: []int64{1 << 50},
		Observed: &store.Observation{Windows: []store.ObservedWindow{{ID: "tokens:day", Limit: 1 << 60, Remaining: 0, Reset: 1 << 62}}}})
	if g := mustReserve(t, s, r); !g.Shared || g.Breaker != store.BreakerOpen || g.Wait < 24*time.Hour {
		t.Errorf("grant %+v after extreme settlement, want shared, open, a long wait", g)
	}
	if !s.Shared() {
		t.Error("store fell back on extreme values")
	}
}
