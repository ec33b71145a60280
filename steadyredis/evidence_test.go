package steadyredis

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/store"
)

// These tests show that no single input stalls the fleet or spreads past
// where it happens: a prefix that cannot work is refused, a key of the
// wrong type takes only its partition out of the fleet, a script error
// writes nothing, no TTL shortens what a key holds, and a schedule pushed
// ahead by a limit read too low moves back with the next true reading.

// TestPrefixRefused: a prefix with braces (a hash tag that would split the
// keys of one upstream over Cluster slots: CROSSSLOT for ever), a control
// character or an absurd length is refused by New with a clear error.
func TestPrefixRefused(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: sharedAddr}) // not dialled
	defer c.Close()
	for _, p := range []string{"app:{steady}:", "a{b", "a}b", "a\nb", strings.Repeat("p", MaxPrefixLen+1)} {
		s, err := New(c, WithPrefix(p))
		if err == nil || s != nil {
			t.Errorf("New with prefix %q: %v, %v; want refused", p, s, err)
			continue
		}
		if !strings.Contains(err.Error(), "prefix") {
			t.Errorf("prefix %q: error %q does not say what is wrong", p, err)
		}
	}
	if _, err := New(c, WithPrefix("{x}")); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("error %v for a hash-tag prefix, want it to name CROSSSLOT", err)
	}
	if _, err := New(nil); err == nil {
		t.Error("New(nil) made a store")
	}
	if s, err := New(c, WithPrefix("ok:prefix-1_2.3/")); err != nil || s == nil {
		t.Errorf("a plain prefix refused: %v", err)
	}
}

// TestWrongTypeKey plants a string where a partition's budget hash
// belongs: that partition alone paces locally (and says so, once), every
// other partition stays shared, and once the key is gone the partition
// rejoins after the retry interval.
func TestWrongTypeKey(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	var ch changes
	s := must(New(c, WithPrefix(prefix), WithNotify(ch.add), withClock(clk.now), WithTimeout(time.Second)))
	defer s.Close()
	ctx := context.Background()
	bad := store.Partition{Upstream: testPart.Upstream, Key: "api.example.com/poisoned#00"}
	other := store.Partition{Upstream: "https://other.example.com", Key: "other.example.com/m#00"}
	w := []store.Window{{ID: "requests:minute", Cost: 1, Rate: 10, Burst: 5}}
	key := s.keys(bad)[0]
	if err := c.Set(ctx, key, "not a hash", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		gb := mustReserve(t, s, store.Reservation{Partition: bad, Windows: w})
		if gb.Shared {
			t.Fatalf("reservation %d in the poisoned partition: %+v, want local", i, gb)
		}
		s.Settle(ctx, store.Settlement{Partition: bad, Windows: w, Grant: gb, Sent: true, Cooldown: time.Second})
		for _, p := range []store.Partition{testPart, other} {
			if g := mustReserve(t, s, store.Reservation{Partition: p, Windows: w}); !g.Shared {
				t.Fatalf("reservation %d in a healthy partition %v: %+v, want shared", i, p, g)
			}
		}
	}
	if !s.Shared() {
		t.Error("the whole store fell back for one partition's key")
	}
	if v, _ := c.Get(ctx, key).Result(); v != "not a hash" {
		t.Errorf("the planted key now holds %q: the store wrote to it", v)
	}
	c.Del(ctx, key)
	clk.advance(2 * DefaultRetryInterval)
	if g := mustReserve(t, s, store.Reservation{Partition: bad, Windows: w}); !g.Shared {
		t.Errorf("after the key is gone and the retry interval: %+v, want shared", g)
	}
	ch.mu.Lock()
	got := append([]Change(nil), ch.got...)
	ch.mu.Unlock()
	if len(got) != 2 || got[0].Shared || got[0].Key != key || got[0].Err == nil || !strings.Contains(got[0].Err.Error(), "wrongtype") ||
		!got[1].Shared || got[1].Key != key {
		t.Errorf("changes %+v, want the partition's fall back (naming its key) then its rejoining", got)
	}
}

// TestNothingHalfWritten: a script run that fails (a heartbeat key of the
// wrong type, a settlement that is not steadyredis's) leaves the budget
// exactly as it was, though its settlement came first.
func TestNothingHalfWritten(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	s := must(New(c, WithPrefix(prefix), WithTimeout(time.Second)))
	defer s.Close()
	ctx := context.Background()
	r := reservation(1)
	g := mustReserve(t, s, r)
	keys := s.keys(testPart)
	before, err := c.HGetAll(ctx, keys[0]).Result()
	if err != nil || len(before) == 0 {
		t.Fatalf("budget %v, %v", before, err)
	}
	settle := encodeSettle(pending{units: map[string]int64{"requests:minute": 7}}, time.Minute, 0, false)
	c.Del(ctx, keys[1])
	c.Set(ctx, keys[1], "x", time.Minute) // the heartbeats' key, of the wrong type
	_, err = reserveScript.Run(ctx, c, keys, s.args(r, settle)...).Result()
	if err == nil || !partitionError(err) {
		t.Fatalf("script with a wrong-type heartbeat key: %v, want a partition error", err)
	}
	c.Del(ctx, keys[1])
	for _, bad := range []string{`{"u":[["requests:minute","x"]]}`, `{"o":{"s":9,"w":[["requests:minute",null,1,1,1]]}}`, `{"c":"soon"}`, `[1,`} {
		_, err := reserveScript.Run(ctx, c, keys, s.args(r, bad)...).Result()
		if err == nil || !partitionError(err) {
			t.Errorf("settlement %s: %v, want refused", bad, err)
		}
	}
	after, _ := c.HGetAll(ctx, keys[0]).Result()
	if len(after) != len(before) {
		t.Fatalf("budget %v after failed runs, was %v", after, before)
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("field %s is %q after failed runs, was %q", k, after[k], v)
		}
	}
	s.Settle(ctx, store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true})
}

// TestTTLNeverShortens: a cooldown of an hour keeps its key for the hour
// and the key TTL, through later reservations and settlements that would
// each have set the TTL back to the key TTL alone.
func TestTTLNeverShortens(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	s := must(New(c, WithPrefix(prefix), WithKeyTTL(time.Minute)))
	defer s.Close()
	ctx := context.Background()
	r := reservation(1)
	g := mustReserve(t, s, r)
	g2 := mustReserve(t, s, r)
	s.Settle(ctx, store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, Cooldown: time.Hour})
	// A reading that arrives after the cooldown, sent on its own.
	s.Settle(ctx, store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g2, Sent: true,
		Observed: &store.Observation{Windows: []store.ObservedWindow{{ID: "requests:minute", Limit: 600, Remaining: 590, Reset: time.Second, Issued: -1}}}})
	s.flush(s.part(testPart, time.Now()))
	if ttl := c.PTTL(ctx, s.keys(testPart)[0]).Val(); ttl < time.Hour {
		t.Errorf("budget TTL %v after an hour's cooldown and later writes, want at least an hour", ttl)
	}
	if g := mustReserve(t, s, r); g.Wait < 59*time.Minute {
		t.Errorf("wait %v, want the hour's cooldown kept", g.Wait)
	}
}

// TestScheduleMovesBack: one process read a limit of 1 a minute and
// reserved by it; the next reservation at the true rate owes what the
// fleet spent, in units, not the minute the false rate made of it.
func TestScheduleMovesBack(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	a := must(New(c, WithPrefix(prefix)))
	b := must(New(c, WithPrefix(prefix)))
	defer a.Close()
	defer b.Close()
	forged := reservation(1, store.Window{ID: "tokens:minute", Cost: 1, Rate: 1.0 / 60, Burst: 1})
	ga := mustReserve(t, a, forged)
	if ga.Wait > time.Second {
		t.Fatalf("forged first wait %v", ga.Wait)
	}
	// The forged process's next request waits its own minute...
	if g := mustReserve(t, a, forged); g.Wait < 50*time.Second {
		t.Errorf("forged second wait %v, want about a minute by its own reading", g.Wait)
	}
	// ...and the others, at the true rate, owe two units at 1000 a second.
	truthful := reservation(1, store.Window{ID: "tokens:minute", Cost: 1, Rate: 1000, Burst: 1})
	if g := mustReserve(t, b, truthful); g.Wait > 10*time.Millisecond {
		t.Errorf("truthful wait %v after a forged limit, want at most a few ms", g.Wait)
	}
}

// TestEveryKeyHasTTL: after reservations, settlements with a reading, a
// cooldown, a breaker opening and failures, every key the store wrote
// has a TTL.
func TestEveryKeyHasTTL(t *testing.T) {
	c := needRedis(t)
	prefix := testPrefix(t, c)
	s := must(New(c, WithPrefix(prefix)))
	defer s.Close()
	ctx := context.Background()
	r := reservation(1)
	for i := range 20 {
		g := mustReserve(t, s, r)
		st := store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, Failed: i%3 == 0,
			Observed: &store.Observation{Windows: []store.ObservedWindow{{ID: "requests:minute", Limit: 600, Remaining: 500, Reset: time.Second, Issued: -1}}}}
		if i == 5 {
			st.Cooldown = time.Second
		}
		if i == 10 {
			st.BreakerOpen = time.Millisecond
		}
		s.Settle(ctx, st)
	}
	s.flush(s.part(testPart, time.Now()))
	keys, _ := c.Keys(ctx, prefix+"*").Result()
	if len(keys) < 2 {
		t.Fatalf("keys %q", keys)
	}
	for _, k := range keys {
		if ttl := c.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has TTL %v", k, ttl)
		}
	}
}

// TestSecretKeys: with a secret, key names are an HMAC: the same in every
// process given the secret, and unlike those of a store without it (which
// anyone can recompute from a guessed credential).
func TestSecretKeys(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: sharedAddr})
	defer c.Close()
	plain := must(New(c))
	a := must(New(c, WithSecret([]byte("fleet secret"))))
	b := must(New(c, WithSecret([]byte("fleet secret"))))
	other := must(New(c, WithSecret([]byte("another"))))
	ka, kb, kp, ko := a.keys(testPart), b.keys(testPart), plain.keys(testPart), other.keys(testPart)
	for i := range ka {
		if ka[i] != kb[i] {
			t.Errorf("key %d: %s and %s for one secret", i, ka[i], kb[i])
		}
		if ka[i] == kp[i] || ka[i] == ko[i] {
			t.Errorf("key %d: %s is the same without the secret or with another", i, ka[i])
		}
		if len(ka[i]) != len(kp[i]) {
			t.Errorf("key %d: %s not of fixed length", i, ka[i])
		}
	}
}
