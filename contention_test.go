package steady_test

import (
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/steady-go/steady"
)

// BenchmarkContention sends from many goroutines at once through one
// Transport to an in-memory base, all in one partition, and reports the
// latency steady adds on the success path (the base answers at once) as
// p50-ns and p99-ns, with pacing on (headers on every response) and off.
func BenchmarkContention(b *testing.B) {
	for _, pacing := range []bool{true, false} {
		for _, g := range []int{64, 256} {
			name := "pacing-off/"
			if pacing {
				name = "pacing-on/"
			}
			b.Run(name+strconv.Itoa(g), func(b *testing.B) {
				base := newBase()
				base.header = base.header.Clone()
				base.header.Set("X-Ratelimit-Limit-Requests", "100000000")
				base.header.Set("X-Ratelimit-Remaining-Requests", "99999999")
				base.header.Set("X-Ratelimit-Reset-Requests", "1ms")
				st := steady.New(steady.Config{Base: base, Pacing: steady.PacingConfig{Disabled: !pacing}})
				per := max(b.N/g, 1)
				lat := make([][]time.Duration, g)
				reqs := make([]*http.Request, g)
				for i := range reqs {
					reqs[i] = benchChatRequest(b)
					lat[i] = make([]time.Duration, 0, per)
				}
				var start sync.WaitGroup
				start.Add(1)
				var wg sync.WaitGroup
				b.ReportAllocs()
				b.ResetTimer()
				for i := range g {
					wg.Go(func() {
						req := reqs[i]
						start.Wait()
						for range per {
							req.Body, _ = req.GetBody()
							t0 := time.Now()
							resp, err := st.RoundTrip(req)
							d := time.Since(t0)
							if err != nil || resp.StatusCode != 200 {
								b.Error(resp, err)
								return
							}
							resp.Body.Close()
							lat[i] = append(lat[i], d)
						}
					})
				}
				start.Done()
				wg.Wait()
				b.StopTimer()
				all := slices.Concat(lat...)
				slices.Sort(all)
				if len(all) == 0 {
					return
				}
				b.ReportMetric(float64(all[len(all)/2]), "p50-ns")
				b.ReportMetric(float64(all[len(all)*99/100]), "p99-ns")
			})
		}
	}
}
