package steady_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady"
)

// hintRT answers every request with a 429 whose Retry-After is hint, and
// records when it last answered.
type hintRT struct {
	hint time.Duration
	mu   sync.Mutex
	last time.Time
}

func (h *hintRT) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.last = time.Now()
	h.mu.Unlock()
	resp := statusResponse(r, http.StatusTooManyRequests, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`)
	resp.Header.Set("Retry-After", strconv.Itoa(int(h.hint/time.Second)))
	return resp, nil
}

// TestUpstreamsSnapshotSkipped: an upstream that routing passes by is
// visible in the Transport's snapshot, with why and until when: a refused
// key until its next probe, an open circuit until its open period ends, a
// long Retry-After until the hint's end. The healthy upstream beside it
// is not marked.
func TestUpstreamsSnapshotSkipped(t *testing.T) {
	for _, form := range routeForms {
		for _, row := range []string{"key-refused", "circuit-open", "long-hint"} {
			t.Run(row+"/"+form, func(t *testing.T) {
				steady.SeedRandom(22)
				synctest.Test(t, func(t *testing.T) {
					var net upstreamNet
					net.add("api.openai.com", "Bearer sk-a", limitedAccount(600))
					hint := &hintRT{hint: 10 * time.Minute}
					var b *account
					if row == "long-hint" {
						b = net.add("api.openai.com", "Bearer sk-b", newAccount(hint))
					} else {
						b = net.add("api.openai.com", "Bearer sk-b", limitedAccount(600))
					}
					b.revoked.Store(row == "key-refused")
					b.down.Store(row == "circuit-open")
					var events eventLog
					client, st := routedClient(form, steady.Config{Upstreams: twoKeys(), OnEvent: events.add}, &net)
					var wantWhy string
					var wantUntil time.Time
					for i := 0; i < 60 && wantWhy == ""; i++ {
						res := runBatch(client, 1, noDeadline)
						if res.failed != 0 {
							t.Fatalf("call %d failed: %v", i, res.errs)
						}
						switch row {
						case "key-refused":
							for _, ev := range events.of(steady.EventUpstream) {
								if ev.Upstream == "key-b" && strings.HasPrefix(ev.Reason, "key refused") {
									wantWhy, wantUntil = "key refused (", ev.Until
								}
							}
						case "circuit-open":
							if st.BreakerState("key-b") == steady.BreakerOpen {
								for _, ev := range events.of(steady.EventBreakerState) {
									if ev.Upstream == "key-b" && ev.To == steady.BreakerOpen {
										wantWhy, wantUntil = "circuit open", ev.Until
									}
								}
							}
						case "long-hint":
							if b.count(http.StatusTooManyRequests) > 0 {
								hint.mu.Lock()
								wantWhy, wantUntil = "cooldown", hint.last.Add(hint.hint)
								hint.mu.Unlock()
							}
						}
					}
					if wantWhy == "" {
						t.Fatalf("key-b never became unusable: attempts %d, statuses %v", b.attempts, b.status)
					}
					seen := map[string]bool{}
					for _, ps := range st.Snapshot() {
						seen[ps.Upstream] = true
						t.Logf("%s %s: %s: skipped %q until %v (%v from now); cooldown until %v, breaker %v",
							row, form, ps.Upstream, ps.Skipped, ps.SkippedUntil, time.Until(ps.SkippedUntil), ps.CooldownUntil, ps.Breaker)
						switch ps.Upstream {
						case "key-a":
							if ps.Skipped != "" || !ps.SkippedUntil.IsZero() {
								t.Errorf("key-a is healthy, shown skipped %q until %v", ps.Skipped, ps.SkippedUntil)
							}
						case "key-b":
							if !strings.HasPrefix(ps.Skipped, wantWhy) || !ps.SkippedUntil.Equal(wantUntil) || !wantUntil.After(time.Now()) {
								t.Errorf("key-b shown skipped %q until %v, want %q… until %v", ps.Skipped, ps.SkippedUntil, wantWhy, wantUntil)
							}
							if strings.Contains(ps.Skipped, "sk-") {
								t.Errorf("a credential in %q", ps.Skipped)
							}
						}
					}
					if !seen["key-a"] || !seen["key-b"] {
						t.Errorf("snapshot names %v, want key-a and key-b", seen)
					}
				})
			})
		}
	}
}
