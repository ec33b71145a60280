package steady_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// TestUpstreamsUnequalKeys: two keys of unequal quotas (37 and 23
// requests per 10 s; 90 and 30 a minute), 451 calls launched at once.
// The split follows the quotas, not the arrival: the batch finishes
// within 1.05 times the combined quota's minimum, none fails, at most 1%
// of attempts meet a 429. With a deadline every call can meet (the
// minimum and a seventh), none fails either: a call planned past its
// deadline on one key moves to the other. With a deadline shorter than
// the batch, the keys serve all they can before it (each window's quota,
// both keys, up to the deadline less the second left for the answer),
// and the calls they cannot serve fail at once, by the first answers,
// rather than waiting for their deadline.
//
// Every call arrives before either key has answered, when nothing tells
// their quotas apart: they are split evenly, and a call waiting for one
// key moves to the other when it would go sooner there.
func TestUpstreamsUnequalKeys(t *testing.T) {
	const calls = 451
	for _, form := range routeForms {
		for _, row := range []struct {
			name     string
			a, b     int // each key's requests per window
			window   time.Duration
			deadline time.Duration // 0: none
		}{
			{"37+23-per-10s", 37, 23, 10 * time.Second, 0},
			{"90+30-per-1m", 90, 30, time.Minute, 0},
			{"37+23-per-10s/deadline-80s", 37, 23, 10 * time.Second, 80 * time.Second},
			{"90+30-per-1m/deadline-3m30s", 90, 30, time.Minute, 3*time.Minute + 30*time.Second},
			{"37+23-per-10s/deadline-35s", 37, 23, 10 * time.Second, 35 * time.Second},
		} {
			t.Run(row.name+"/"+form, func(t *testing.T) {
				steady.SeedRandom(22)
				synctest.Test(t, func(t *testing.T) {
					var net upstreamNet
					provider := func(n int) *account {
						return newAccount(steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: n, Window: row.window, Latency: routeLat}))
					}
					a := net.add("api.openai.com", "Bearer sk-a", provider(row.a))
					b := net.add("api.openai.com", "Bearer sk-b", provider(row.b))
					var events eventLog
					client, st := routedClient(form, steady.Config{Upstreams: twoKeys(), OnEvent: events.add}, &net)
					ctxFor := noDeadline
					if row.deadline > 0 {
						ctxFor = func(int) (context.Context, context.CancelFunc) {
							return context.WithTimeout(context.Background(), row.deadline)
						}
					}
					start := time.Now()
					res := runBatch(client, calls, ctxFor)
					// Sliding windows: together the keys admit a+b at once
					// and a+b again a window later, so the last call is
					// admitted ceil(calls/(a+b)) - 1 windows in and
					// answered a latency later.
					windows := (calls + row.a + row.b - 1) / (row.a + row.b)
					quotaMin := time.Duration(windows-1)*row.window + routeLat
					// Before a deadline, the windows that open by it less
					// the time left for the answer (routing sends nothing
					// later) each serve a+b.
					servable := calls
					if row.deadline > 0 {
						servable = min(calls, int((row.deadline-min(time.Second, row.deadline/4))/row.window+1)*(row.a+row.b))
					}
					makespan := res.last.Sub(start)
					ratio := float64(makespan) / float64(quotaMin)
					attempts := a.attempts + b.attempts
					rejected := a.count(429) + b.count(429)
					late := 0 // failures after the first answers
					for _, at := range res.failedAt {
						// (A call's attempts reach the upstreams up to a
						// nanosecond per call late: see upstreamNet.)
						if at.Sub(start) > routeLat+time.Microsecond {
							late++
						}
					}
					var kinds []string
					for _, ps := range st.Snapshot() {
						for _, w := range ps.Windows {
							kinds = append(kinds, fmt.Sprintf("%s %v %d/%v", ps.Upstream, w.Kind, w.Limit, w.Period))
						}
					}
					t.Logf("%s %s: ok %d failed %d (servable before the deadline %d; %d failed after the first answers); windows %v; attempts %d (key-a %d, key-b %d; their quotas' split %d/%d); 429s %d; makespan %v, combined quota's minimum %v, ratio %.3f",
						row.name, form, res.ok, res.failed, servable, late, kinds, attempts, a.attempts, b.attempts,
						calls*row.a/(row.a+row.b), calls-calls*row.a/(row.a+row.b), rejected, makespan, quotaMin, ratio)
					if res.failed > calls-servable {
						t.Logf("failures: %v", res.errs)
						for i, ev := range events.of(steady.EventRejected) {
							if i < 5 {
								t.Logf("refused %v in, by %s: %s, wait %v", ev.Time.Sub(start), ev.Upstream, ev.Reason, ev.Wait)
							}
						}
					}
					atMost(t, "429s", "%.2f%%", 100*float64(rejected)/float64(max(attempts, 1)), 1)
					if servable == calls {
						atMost(t, "failed", "%.0f", float64(res.failed), 0)
						atMost(t, "makespan", "%.3f×", ratio, 1.05)
						return
					}
					atLeast(t, "served", "%.0f", float64(res.ok), float64(servable))
					// The others are refused by the first answers, which
					// tell the quotas, without waiting. Through the
					// roundtripper the SDK retries a refusal (a transport
					// error to it) after its backoff, so that a call's end
					// is the SDK's: held through the middleware only.
					if form == "middleware" {
						atMost(t, "waited then failed", "%.0f", float64(late), 0)
					}
				})
			})
		}
	}
}
