package steady

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// chatRequest returns a replayable chat completion request like the SDK's.
func chatRequest(t testing.TB, ctx context.Context, host, key, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+host+"/v1/chat/completions", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// simServer is a rate-limited server model for the pacer alone: it admits
// or rejects each request at the moment it arrives and answers with the
// limits it would announce, already parsed. Latency is half before the
// server sees a request and half after.
type simServer struct {
	mu        sync.Mutex
	algo      string // "sliding", "fixed", "bucket"
	limit     int64  // quota per window, in units of cost
	window    time.Duration
	latency   time.Duration
	announce  bool // whether responses carry limits
	log       []simEntry
	tokens    float64 // bucket
	last      time.Time
	fixedEnd  time.Time
	fixedUsed int64
	// counters
	end                time.Time // requests at or after end are not counted
	accepted, rejected int
	acceptedCost       int64
	maxInWindow        int64
}

type simEntry struct {
	at   time.Time
	cost int64
}

func (s *simServer) admit(now time.Time, cost int64) (int, RateLimits) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var remaining int64
	var reset time.Time
	ok := false
	switch s.algo {
	case "sliding":
		cut := now.Add(-s.window)
		i := 0
		for i < len(s.log) && !s.log[i].at.After(cut) {
			i++
		}
		s.log = s.log[i:]
		var used int64
		for _, e := range s.log {
			used += e.cost
		}
		if used+cost <= s.limit {
			ok = true
			used += cost
			s.log = append(s.log, simEntry{now, cost})
		}
		s.maxInWindow = max(s.maxInWindow, used)
		remaining = s.limit - used
		if len(s.log) > 0 {
			reset = s.log[len(s.log)-1].at.Add(s.window)
		} else {
			reset = now
		}
	case "fixed":
		if !now.Before(s.fixedEnd) {
			s.fixedEnd = now.Truncate(s.window).Add(s.window)
			s.fixedUsed = 0
		}
		if s.fixedUsed+cost <= s.limit {
			ok = true
			s.fixedUsed += cost
		}
		s.maxInWindow = max(s.maxInWindow, s.fixedUsed)
		remaining = s.limit - s.fixedUsed
		reset = s.fixedEnd
	case "bucket":
		if s.last.IsZero() {
			s.tokens = float64(s.limit)
		} else {
			s.tokens = min(float64(s.limit), s.tokens+now.Sub(s.last).Seconds()*float64(s.limit)/s.window.Seconds())
		}
		s.last = now
		if s.tokens >= float64(cost) {
			ok = true
			s.tokens -= float64(cost)
		}
		remaining = int64(s.tokens)
		reset = now.Add(time.Duration((float64(s.limit) - s.tokens) / float64(s.limit) * float64(s.window)))
	}
	counted := s.end.IsZero() || now.Before(s.end)
	var rl RateLimits
	if s.announce {
		rl.Windows = []Window{{Unit: UnitRequests, Limit: s.limit, Remaining: remaining, Reset: reset}}
	}
	if !ok {
		if counted {
			s.rejected++
		}
		if s.announce {
			rl.RetryAfter = max(reset.Sub(now), 0)
			if s.algo == "sliding" && len(s.log) > 0 {
				rl.RetryAfter = s.log[0].at.Add(s.window).Sub(now)
			}
			rl.HasRetryAfter = true
		}
		return http.StatusTooManyRequests, rl
	}
	if counted {
		s.accepted++
		s.acceptedCost += cost
	}
	return http.StatusOK, rl
}

// runSim offers load from workers goroutines for d through p against s
// and returns how many calls failed.
func runSim(t *testing.T, p *pacer, s *simServer, workers int, d time.Duration) (failed int) {
	t.Helper()
	var mu sync.Mutex
	s.end = time.Now().Add(d)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				req := chatRequest(t, context.Background(), "api.example.com", "sk-test", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
				for attempt := 0; ; attempt++ {
					pm, err := p.acquire(context.Background(), req)
					if err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
						t.Errorf("acquire: %v", err)
						return
					}
					time.Sleep(s.latency / 2)
					status, rl := s.admit(time.Now(), 1)
					time.Sleep(s.latency / 2)
					pm.observe(true, status, rl, time.Now())
					pm.pt.release()
					if status == http.StatusOK {
						break
					}
					if attempt == 5 {
						mu.Lock()
						failed++
						mu.Unlock()
						break
					}
				}
			}
		})
	}
	wg.Wait()
	return failed
}

func TestPacerSimulatedLoad(t *testing.T) {
	for _, tc := range []struct {
		algo     string
		announce bool
		config   bool
		latency  time.Duration
	}{
		{"sliding", true, false, 50 * time.Millisecond},
		{"fixed", true, false, 50 * time.Millisecond},
		{"bucket", true, false, 50 * time.Millisecond},
		{"sliding", true, false, 0},
		{"sliding", false, true, 20 * time.Millisecond},
		{"sliding", true, true, 200 * time.Millisecond},
	} {
		name := fmt.Sprintf("%s/headers=%v/config=%v/latency=%v", tc.algo, tc.announce, tc.config, tc.latency)
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const limit, window, windows = 120, time.Minute, 6
				s := &simServer{algo: tc.algo, limit: limit, window: window, latency: tc.latency, announce: tc.announce}
				cfg := PacingConfig{}
				if tc.config {
					cfg.RequestsPerMinute = limit
				}
				p := newPacer(cfg, nil, nil)
				failed := runSim(t, p, s, 32, windows*window)
				attempts := s.accepted + s.rejected
				goodput := float64(s.accepted) / float64(limit*windows)
				t.Logf("accepted %d rejected %d (%.2f%%) goodput %.1f%% max in window %d failed %d",
					s.accepted, s.rejected, 100*float64(s.rejected)/float64(attempts), 100*goodput, s.maxInWindow, failed)
				if goodput < 0.97 {
					t.Errorf("goodput %.1f%% of the limit, want >= 97%%", 100*goodput)
				}
				if float64(s.rejected) > 0.01*float64(attempts) {
					t.Errorf("%d of %d attempts rejected, want <= 1%%", s.rejected, attempts)
				}
				if failed > 0 {
					t.Errorf("%d calls failed", failed)
				}
			})
		})
	}
}

var _ = errors.Is
var _ = strings.Contains
