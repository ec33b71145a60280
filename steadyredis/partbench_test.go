package steadyredis

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/store"
)

// BenchmarkNewPartition measures what a partition the store has never
// seen costs, with 100 and with 100,000 partitions already known (as
// 100,000 distinct models would make): in the process (the store's
// partition table, all partitions in use, so that nothing can be
// dropped: the worst case) and in the script (a reservation and its
// settlement in a partition new to Redis, with as many partitions stored
// beside it). The script's runs also report the Redis memory one
// partition holds (its budget hash and heartbeats, after a reservation
// and a settlement with a reading of two windows) and check that every
// key has a TTL.
//
//	cd steadyredis && go test -run XXX -bench NewPartition -benchmem
func BenchmarkNewPartition(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run("process/"+strconv.Itoa(n), func(b *testing.B) {
			c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
			defer c.Close()
			s := must(New(c))
			now := time.Now()
			for i := range n {
				s.part(benchPart(i), now)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := range b.N {
				s.part(benchPart(n+i), now)
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
		b.Run("script/"+strconv.Itoa(n), func(b *testing.B) {
			c := needRedis(b)
			prefix := testPrefix(b, c)
			s := must(New(c, WithPrefix(prefix), WithTimeout(time.Second), WithFlushDelay(time.Hour)))
			defer s.Close()
			fill(b, c, s, n)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				benchReserve(b, s, benchPart(n+i), ctx)
			}
			b.StopTimer()
			keys := s.keys(benchPart(n))
			var bytes int64
			for _, k := range keys[:2] {
				bytes += c.MemoryUsage(ctx, k).Val()
			}
			b.ReportMetric(float64(bytes), "redis-bytes/partition")
			if n >= 100_000 {
				noKeyWithoutTTL(b, c, prefix)
			}
		})
	}
}

func benchPart(i int) store.Partition {
	return store.Partition{Upstream: "https://api.example.com", Key: "api.example.com/model-" + strconv.Itoa(i) + "#0123456789abcdef"}
}

var benchWindows = []store.Window{
	{ID: "requests:", Cost: 1, Rate: 10000.0 / 60, Burst: 100},
	{ID: "tokens:", Cost: 500, Rate: 2e6 / 60, Burst: 20000},
}

// benchReserve reserves in p and settles with a reading, sent with the
// reservation's flush.
func benchReserve(b *testing.B, s *Store, p store.Partition, ctx context.Context) {
	g, err := s.Reserve(ctx, store.Reservation{Partition: p, Windows: benchWindows})
	if err != nil || !g.Shared {
		b.Fatalf("Reserve = %+v, %v; want shared", g, err)
	}
	s.Settle(ctx, store.Settlement{Partition: p, Windows: benchWindows, Grant: g, Sent: true, Actual: []int64{-1, 420},
		Observed: &store.Observation{Windows: []store.ObservedWindow{
			{ID: "requests:", Limit: 10000, Remaining: 9999, Reset: 6 * time.Millisecond, Issued: -1},
			{ID: "tokens:", Limit: 2000000, Remaining: 1999000, Reset: 30 * time.Millisecond, Issued: -1},
		}}})
	s.flush(s.part(p, time.Now()))
}

// fill stores n partitions in Redis as benchReserve leaves them, through
// the script, pipelined.
func fill(b *testing.B, c *redis.Client, s *Store, n int) {
	ctx := context.Background()
	if err := reserveScript.Load(ctx, c).Err(); err != nil {
		b.Fatal(err)
	}
	settle := encodeSettle(pending{units: map[string]int64{"tokens:": -80}, obs: &store.Observation{Seq: 1, Windows: []store.ObservedWindow{
		{ID: "requests:", Limit: 10000, Remaining: 9999, Reset: 6 * time.Millisecond, Issued: 1},
		{ID: "tokens:", Limit: 2000000, Remaining: 1999000, Reset: 30 * time.Millisecond, Issued: 500},
	}}}, 0, 0, false)
	const batch = 1000
	for i := 0; i < n; i += batch {
		pipe := c.Pipeline()
		for j := i; j < min(i+batch, n); j++ {
			r := store.Reservation{Partition: benchPart(j), Windows: benchWindows}
			reserveScript.EvalSha(ctx, pipe, s.keys(r.Partition), s.args(r, "")...)
			reserveScript.EvalSha(ctx, pipe, s.keys(r.Partition), s.settleArgs(settle)...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// noKeyWithoutTTL fails b if a key under prefix has no TTL.
func noKeyWithoutTTL(b *testing.B, c *redis.Client, prefix string) {
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+"*", 10000).Iterator()
	n := 0
	var keys []string
	check := func() {
		pipe := c.Pipeline()
		cmds := make([]*redis.DurationCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.PTTL(ctx, k)
		}
		pipe.Exec(ctx)
		for i, cmd := range cmds {
			if cmd.Val() <= 0 {
				b.Errorf("key %s has TTL %v", keys[i], cmd.Val())
			}
		}
		keys = keys[:0]
	}
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		n++
		if len(keys) == 5000 {
			check()
		}
	}
	check()
	if n == 0 {
		b.Error("no keys stored")
	}
}

// cpuTime is the CPU time this process has used: on a machine shared
// with other work, a steadier measure than the wall clock of ns/op.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
