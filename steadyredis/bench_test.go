package steadyredis

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/steady-go/steady/store"
)

// BenchmarkReserve measures what the store adds to one request on the
// success path: a reservation and a settlement carrying a rate-limit
// reading. It reports Redis round trips per request and the p50 and p99
// latency of the pair, in microseconds.
func BenchmarkReserve(b *testing.B) {
	c := needRedis(b)
	rt := &roundTrips{}
	c.AddHook(rt)
	s := must(New(c, WithPrefix(testPrefix(b, c)), WithTimeout(time.Second)))
	defer s.Close()
	r := store.Reservation{Partition: testPart, Windows: []store.Window{
		{ID: "requests:minute", Cost: 1, Rate: 1e6, Burst: 1000},
		{ID: "tokens:minute", Cost: 500, Rate: 1e9, Burst: 1e6},
	}}
	ctx := context.Background()
	mustReserveB(b, s, r) // load the script
	lat := make([]time.Duration, 0, b.N)
	n0 := rt.count()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		g := mustReserveB(b, s, r)
		if g.Observed != nil {
			r.ObservedSeq = g.Observed.Seq
		}
		s.Settle(ctx, store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true, Actual: []int64{1, 420},
			Observed: &store.Observation{Windows: []store.ObservedWindow{
				{ID: "requests:minute", Limit: 10000, Remaining: int64(9000 - i%1000), Reset: time.Second, Issued: -1},
			}}})
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	report(b, lat, rt.count()-n0)
}

// BenchmarkReserveParallel is BenchmarkReserve from many goroutines.
func BenchmarkReserveParallel(b *testing.B) {
	c := needRedis(b)
	rt := &roundTrips{}
	c.AddHook(rt)
	s := must(New(c, WithPrefix(testPrefix(b, c)), WithTimeout(time.Second)))
	defer s.Close()
	r := store.Reservation{Partition: testPart, Windows: []store.Window{{ID: "requests:minute", Cost: 1, Rate: 1e6, Burst: 1000}}}
	mustReserveB(b, s, r)
	n0 := rt.count()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g, err := s.Reserve(context.Background(), r)
			if err != nil || !g.Shared {
				b.Errorf("Reserve = %+v, %v", g, err)
				return
			}
			s.Settle(context.Background(), store.Settlement{Partition: testPart, Windows: r.Windows, Grant: g, Sent: true})
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(rt.count()-n0)/float64(b.N), "roundtrips/op")
}

// BenchmarkPing is the loopback round trip alone, for comparison.
func BenchmarkPing(b *testing.B) {
	c := needRedis(b)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	report(b, lat, b.N)
}

func mustReserveB(b *testing.B, s *Store, r store.Reservation) store.Grant {
	g, err := s.Reserve(context.Background(), r)
	if err != nil || !g.Shared {
		b.Fatalf("Reserve = %+v, %v; want shared", g, err)
	}
	return g
}

func report(b *testing.B, lat []time.Duration, trips int) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Microsecond) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(trips)/float64(len(lat)), "roundtrips/op")
}
