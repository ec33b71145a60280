package steady

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steady-go/steady/ratelimit"
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

func (s *simServer) admit(now time.Time, cost int64) (int, ratelimit.Limits) {
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
	var rl ratelimit.Limits
	if s.announce {
		rl.Windows = []ratelimit.Window{{Unit: ratelimit.UnitRequests, Limit: s.limit, Remaining: remaining, Reset: reset}}
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
					pm, err := p.acquire(context.Background(), req, admitOpts{})
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
					pm.done.Store(true)
					pm.finish(true, status, rl, time.Now())
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
				p := newPacer(cfg, pacerDeps{})
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

const smallChat = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_completion_tokens":100}`

// settleOK settles pm as a 200 with the given windows.
func settleOK(pm *permit, windows ...ratelimit.Window) {
	pm.done.Store(true)
	pm.finish(true, http.StatusOK, ratelimit.Limits{Windows: windows}, time.Now())
}

// acquireBatch asks p for n permits of small chats to host at once, each
// from its own goroutine, and keeps them in the order they are granted
// with the time each was (a failed acquire is a test error).
func acquireBatch(t *testing.T, p *pacer, n int, host string) *batch {
	b := &batch{}
	ctx := context.Background()
	for range n {
		b.wg.Go(func() {
			pm, err := p.acquire(ctx, chatRequest(t, ctx, host, "k", smallChat), admitOpts{})
			if err != nil {
				t.Error(err)
				return
			}
			b.mu.Lock()
			b.permits, b.at = append(b.permits, pm), append(b.at, time.Now())
			b.mu.Unlock()
		})
	}
	return b
}

// batch is what acquireBatch has been granted so far.
type batch struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	permits []*permit   // guarded by mu, in the order granted
	at      []time.Time // guarded by mu: when each was granted
}

// granted returns the permits granted so far and when.
func (b *batch) granted() ([]*permit, []time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.permits), slices.Clone(b.at)
}

func TestAcquireDeadlineFailsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var events []Event
		var mu sync.Mutex
		// Two a minute: both go at once, and each comes back a minute
		// (and 0.5%) after it was used.
		p := newPacer(PacingConfig{RequestsPerMinute: 2}, pacerDeps{emit: func(ev Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }})
		ctx := context.Background()
		start := time.Now()
		for range 2 {
			pm, err := p.acquire(ctx, chatRequest(t, ctx, "api.example.com", "k", smallChat), admitOpts{})
			if err != nil {
				t.Fatal(err)
			}
			pm.settle(nil, nil)
		}
		if el := time.Since(start); el != 0 {
			t.Fatalf("the quota took %v to use, want at once", el)
		}

		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := p.acquire(dctx, chatRequest(t, dctx, "api.example.com", "k", smallChat), admitOpts{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		var we *WaitError
		if !errors.As(err, &we) {
			t.Fatalf("err = %T, want *WaitError", err)
		}
		if we.Wait != 60300*time.Millisecond {
			t.Errorf("Wait = %v, want 1m0.3s", we.Wait)
		}
		if !strings.Contains(err.Error(), "steady: ") || !strings.Contains(err.Error(), "1m0.3s") {
			t.Errorf("error %q does not say how long", err)
		}
		if el := time.Since(start); el != 0 {
			t.Errorf("refusal took %v, want at once", el)
		}
		mu.Lock()
		if len(events) != 1 || events[0].Kind != EventRejected || events[0].Path != "/v1/chat/completions" || events[0].Wait != we.Wait || events[0].Reason == "" {
			t.Errorf("events = %+v, want one rejection", events)
		}
		mu.Unlock()

		// The refused request took nothing: a request whose deadline is
		// after its turn waits for it, and so does one without a deadline,
		// however long.
		lctx, cancel2 := context.WithTimeout(ctx, 62*time.Second)
		defer cancel2()
		pm, err := p.acquire(lctx, chatRequest(t, lctx, "api.example.com", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 60300*time.Millisecond {
			t.Errorf("next request waited %v, want 1m0.3s", el)
		}
		pm.settle(nil, nil)
		pm, err = p.acquire(ctx, chatRequest(t, ctx, "api.example.com", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.settle(nil, nil)
		pm, err = p.acquire(ctx, chatRequest(t, ctx, "api.example.com", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 2*60300*time.Millisecond {
			t.Errorf("request without a deadline waited %v, want 2m0.6s", el)
		}
		pm.settle(nil, nil)
	})
}

func TestAcquireMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{RequestsPerMinute: 1, MaxWait: 10 * time.Second}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.settle(nil, nil)
		_, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		var we *WaitError
		if !errors.Is(err, ErrWaitTooLong) || !errors.As(err, &we) || we.Wait < time.Minute {
			t.Fatalf("err = %v, want ErrWaitTooLong with a wait over a minute", err)
		}
	})
}

func TestAcquireCancelStopsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{RequestsPerMinute: 1}, pacerDeps{})
		ctx, cancel := context.WithCancel(context.Background())
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.settle(nil, nil)
		start := time.Now()
		time.AfterFunc(time.Second, cancel)
		_, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if el := time.Since(start); el != time.Second {
			t.Errorf("cancelled wait returned after %v, want 1s", el)
		}
		if s := p.snapshot(time.Now()); len(s) != 1 || s[0].Waiting != 0 || s[0].InFlight != 0 {
			t.Errorf("snapshot after cancel = %+v", s)
		}
	})
}

func TestCooldownOneWaitForAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var cooldowns []Event
		var p *pacer
		p = newPacer(PacingConfig{ColdStart: 2}, pacerDeps{emit: func(ev Event) {
			// Events come without a lock held: reading a snapshot here
			// must not deadlock.
			_ = p.snapshot(time.Now())
			if ev.Kind == EventCooldown {
				mu.Lock()
				cooldowns = append(cooldowns, ev)
				mu.Unlock()
			}
		}})
		ctx := context.Background()
		start := time.Now()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.done.Store(true)
		pm.finish(true, http.StatusTooManyRequests, ratelimit.Limits{RetryAfter: 10 * time.Second, HasRetryAfter: true}, time.Now())
		s := p.snapshot(time.Now())
		if len(s) != 1 || !s[0].CooldownUntil.Equal(start.Add(10*time.Second)) {
			t.Fatalf("snapshot = %+v, want a cooldown until +10s", s)
		}
		mu.Lock()
		if len(cooldowns) != 1 || !cooldowns[0].Until.Equal(start.Add(10*time.Second)) || cooldowns[0].Partition == "" {
			t.Errorf("cooldown events = %+v", cooldowns)
		}
		mu.Unlock()

		// Every request waits for the one cooldown; then only ColdStart
		// go out until one succeeds.
		b := acquireBatch(t, p, 6, "h")
		time.Sleep(11 * time.Second)
		synctest.Wait()
		permits, times := b.granted()
		if len(times) != 2 {
			t.Fatalf("%d requests went out after the cooldown, want 2 (ColdStart) until one succeeds", len(times))
		}
		for _, at := range times {
			if d := at.Sub(start); d != 10*time.Second {
				t.Errorf("request sent at +%v, want +10s", d)
			}
		}
		settleOK(permits[0])
		b.wg.Wait()
		if permits, _ = b.granted(); len(permits) != 6 {
			t.Errorf("%d requests sent after a success, want 6", len(permits))
		}
		for _, pm := range permits[1:] {
			pm.settle(nil, nil)
		}
	})
}

func TestColdStartBoundsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{}, pacerDeps{})
		b := acquireBatch(t, p, 10, "h")
		synctest.Wait()
		permits, _ := b.granted()
		n := len(permits)
		first := permits[0]
		if n != defaultColdStart {
			t.Fatalf("%d requests out before any response, want %d", n, defaultColdStart)
		}
		s := p.snapshot(time.Now())
		if len(s) != 1 || s[0].Known || s[0].InFlight != 4 || s[0].Waiting != 6 {
			t.Errorf("snapshot = %+v", s)
		}
		// The first response tells plenty remains: the rest go.
		settleOK(first, ratelimit.Window{Unit: ratelimit.UnitRequests, Limit: 1000, Remaining: 990, Reset: time.Now().Add(time.Second)})
		b.wg.Wait()
		if permits, _ = b.granted(); len(permits) != 10 {
			t.Errorf("%d requests out after the first response, want 10", len(permits))
		}
		if s := p.snapshot(time.Now()); !s[0].Known || len(s[0].Windows) != 1 || s[0].Windows[0].Remaining != 990 {
			t.Errorf("snapshot = %+v", s)
		}
	})
}

func TestBindingWindowWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		// Plenty per minute; per day, one request every 30 s and none
		// left now.
		settleOK(pm,
			ratelimit.Window{Unit: ratelimit.UnitRequests, Name: "minute", Limit: 600, Remaining: 590, Reset: now.Add(time.Second)},
			ratelimit.Window{Unit: ratelimit.UnitRequests, Name: "day", Limit: 2880, Remaining: 0, Reset: now.Add(time.Hour)},
		)
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = p.acquire(dctx, chatRequest(t, dctx, "h", "k", smallChat), admitOpts{})
		var we *WaitError
		if !errors.As(err, &we) || we.Wait < 25*time.Second {
			t.Fatalf("err = %v, want a wait of about 30s set by the day window", err)
		}
		s := p.snapshot(now)[0]
		if len(s.Windows) != 2 || s.Windows[1].Period != 24*time.Hour || s.Windows[0].Period != time.Minute {
			t.Errorf("windows = %+v", s.Windows)
		}
	})
}

// TestSyncLowersToRemaining: what a response says remains is what the
// partition may use, less headroom and what is in flight; when nothing
// remains, the queue waits for the reset, and goes at once after it.
func TestSyncLowersToRemaining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{ColdStart: -1}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		inflight, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		// 6000 tokens, headroom 120: 432 remain, less 102 in flight: two
		// requests of 102 tokens fit, the third waits for the reset.
		settleOK(pm, ratelimit.Window{Unit: ratelimit.UnitTokens, Limit: 6000, Remaining: 432, Reset: now.Add(10 * time.Second)})
		for range 2 {
			pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
			if err != nil {
				t.Fatal(err)
			}
			defer pm.settle(nil, nil)
		}
		if el := time.Since(now); el != 0 {
			t.Errorf("what remains waited %v", el)
		}
		pm, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(now); el != 10*time.Second {
			t.Errorf("waited %v, want 10s: the reset", el)
		}
		pm.settle(nil, nil)
		inflight.settle(nil, nil)
	})
}

func TestPartitionKeys(t *testing.T) {
	p := newPacer(PacingConfig{ColdStart: -1}, pacerDeps{})
	ctx := context.Background()
	get := func(host, key, body string) *partition {
		pm, err := p.acquire(ctx, chatRequest(t, ctx, host, key, body), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.settle(nil, nil)
		return pm.pt
	}
	a := get("api.openai.com", "sk-secret-one", `{"model":"a"}`)
	if get("api.openai.com", "sk-secret-one", `{"messages":[],"model":"a"}`) != a {
		t.Error("same host, key and model: different partitions")
	}
	for _, other := range []*partition{
		get("api.openai.com", "sk-secret-one", `{"model":"b"}`),
		get("api.openai.com", "sk-secret-two", `{"model":"a"}`),
		get("api.groq.com", "sk-secret-one", `{"model":"a"}`),
	} {
		if other == a {
			t.Errorf("partition %q shared with %q", other.label, a.label)
		}
	}
	for _, s := range p.snapshot(time.Now()) {
		if strings.Contains(s.Key, "secret") {
			t.Errorf("label %q holds the credential", s.Key)
		}
	}
	if a.label != "api.openai.com/a#"+fingerprint("Authorization", "Bearer sk-secret-one") || a.upstream != "https://api.openai.com" {
		t.Errorf("label %q upstream %q", a.label, a.upstream)
	}

	p = newPacer(PacingConfig{ColdStart: -1, Key: func(req *http.Request, model string) string { return "tenant-" + model }}, pacerDeps{})
	if get("x", "k1", `{"model":"m"}`) != get("y", "k2", `{"model":"m"}`) {
		t.Error("custom key: same key, different partitions")
	}
	if s := p.snapshot(time.Now()); len(s) != 1 || s[0].Key != "tenant-m" {
		t.Errorf("snapshot = %+v", s)
	}
}

func TestAcquireLeavesBodyIntact(t *testing.T) {
	p := newPacer(PacingConfig{}, pacerDeps{})
	ctx := context.Background()
	req := chatRequest(t, ctx, "h", "k", smallChat)
	pm, err := p.acquire(ctx, req, admitOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer pm.settle(nil, nil)
	b, _ := io.ReadAll(req.Body)
	if string(b) != smallChat {
		t.Errorf("body after acquire = %q", b)
	}
	// A body that cannot be replayed is not read: one request, no tokens.
	req, _ = http.NewRequest(http.MethodPost, "https://h/v1/x", io.NopCloser(strings.NewReader(smallChat)))
	pm2, err := p.acquire(ctx, req, admitOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer pm2.settle(nil, nil)
	if b, _ := io.ReadAll(req.Body); string(b) != smallChat {
		t.Errorf("unreplayable body after acquire = %q", b)
	}
	var nilPermit *permit
	nilPermit.settle(nil, nil) // nil-safe
	pm.settle(nil, nil)        // twice: no effect
}

func TestMaxPartitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{MaxPartitions: 8, ColdStart: -1}, pacerDeps{})
		ctx := context.Background()
		busy, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", `{"model":"busy"}`), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			time.Sleep(time.Second)
			pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", fmt.Sprintf(`{"model":"m%d"}`, i)), admitOpts{})
			if err != nil {
				t.Fatal(err)
			}
			pm.settle(nil, nil)
		}
		n := p.parts.len()
		_, kept := p.parts.get(busy.pt.key)
		if n > 8 {
			t.Errorf("%d partitions kept, want at most 8", n)
		}
		if !kept {
			t.Error("the partition with a request in flight was dropped")
		}
		busy.settle(nil, nil)
	})
}

// TestPartitionSize measures the memory one partition takes, with its two
// configured windows and two announced ones.
func TestPartitionSize(t *testing.T) {
	p := newPacer(PacingConfig{RequestsPerMinute: 500, TokensPerMinute: 100000, MaxPartitions: 1 << 20}, pacerDeps{})
	ctx := context.Background()
	const n = 2000
	reqs := make([]*http.Request, n)
	for i := range reqs {
		reqs[i] = chatRequest(t, ctx, "api.openai.com", "sk-k", fmt.Sprintf(`{"model":"model-%d"}`, i))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, req := range reqs {
		pm, err := p.acquire(ctx, req, admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		settleOK(pm,
			ratelimit.Window{Unit: ratelimit.UnitRequests, Limit: 500, Remaining: 499, Reset: now.Add(time.Second)},
			ratelimit.Window{Unit: ratelimit.UnitTokens, Limit: 100000, Remaining: 99000, Reset: now.Add(time.Second)})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes per partition (4 windows)", per)
	if per >= 3072 {
		t.Errorf("%d bytes per partition, want < 3072", per)
	}
	runtime.KeepAlive(reqs)
	runtime.KeepAlive(p)
}

// BenchmarkPacer measures acquire and settle on the success path far from
// the limits, with a 2 KB chat body and OpenAI rate-limit headers on the
// response.
func BenchmarkPacer(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{{"2KB-long", longChatBody(1900)}, {"2KB-short-messages", chatBody(2048)}} {
		b.Run(bc.name, func(b *testing.B) {
			p := newPacer(PacingConfig{}, pacerDeps{})
			req, _ := http.NewRequest(http.MethodPost, "https://api.openai.com/v1/chat/completions", bytes.NewReader(bc.body))
			req.Header.Set("Authorization", "Bearer sk-bench")
			resp := &http.Response{StatusCode: 200, Header: http.Header{
				"X-Ratelimit-Limit-Requests":     {"1000000000"},
				"X-Ratelimit-Remaining-Requests": {"999999999"},
				"X-Ratelimit-Reset-Requests":     {"6ms"},
				"X-Ratelimit-Limit-Tokens":       {"10000000000000"},
				"X-Ratelimit-Remaining-Tokens":   {"9999999999000"},
				"X-Ratelimit-Reset-Tokens":       {"1ms"},
			}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				pm, err := p.acquire(ctx, req, admitOpts{})
				if err != nil {
					b.Fatal(err)
				}
				pm.settle(resp, nil)
			}
		})
	}
}

// FuzzObserve feeds arbitrary announced windows and statuses to a
// partition and checks that nothing panics and that no wait is longer than
// MaxWait.
func FuzzObserve(f *testing.F) {
	f.Add(uint8(1), int64(60), int64(0), int64(30e9), int64(0), 429, int64(5e9), true)
	f.Add(uint8(2), int64(-1), int64(1<<62), int64(-5), int64(1), 200, int64(0), false)
	f.Add(uint8(9), int64(1), int64(1), int64(1<<62), int64(1<<62), 503, int64(-1), true)
	f.Fuzz(func(t *testing.T, unit uint8, limit, remaining, resetIn, period int64, status int, retry int64, hasRetry bool) {
		synctest.Test(t, func(t *testing.T) {
			p := newPacer(PacingConfig{MaxWait: time.Minute, RequestsPerMinute: 100}, pacerDeps{})
			ctx := context.Background()
			for i := range 3 {
				pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
				if err != nil {
					var we *WaitError
					if !errors.As(err, &we) || we.Wait <= time.Minute {
						t.Fatalf("acquire %d: %v", i, err)
					}
					return
				}
				now := time.Now()
				w := ratelimit.Window{Unit: ratelimit.Unit(unit), Limit: limit, Remaining: remaining, Period: time.Duration(period)}
				if resetIn != 0 {
					w.Reset = now.Add(time.Duration(resetIn))
				}
				pm.done.Store(true)
				pm.finish(true, status, ratelimit.Limits{Windows: []ratelimit.Window{w, w}, RetryAfter: time.Duration(retry), HasRetryAfter: hasRetry}, now)
				if s := p.snapshot(now); len(s) != 1 || s[0].CooldownUntil.After(now.Add(time.Minute)) {
					t.Fatalf("snapshot %+v", s)
				}
			}
		})
	})
}

func TestInputOutputWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{ColdStart: -1}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		// Input tokens plenty; output tokens 6000 a minute and none left
		// until their reset in a minute: a request asking for 100 output
		// tokens waits for it.
		settleOK(pm,
			ratelimit.Window{Unit: ratelimit.UnitInputTokens, Limit: 100000, Remaining: 99000, Reset: now.Add(time.Second)},
			ratelimit.Window{Unit: ratelimit.UnitOutputTokens, Limit: 6000, Remaining: 0, Reset: now.Add(time.Minute)},
		)
		pm, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(now); el != time.Minute {
			t.Errorf("waited %v, want 1m for the output tokens", el)
		}
		pm.settle(nil, nil)
		// A request that asks for no output does not wait for them.
		now = time.Now()
		pm, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", `{"model":"gpt-4o-mini","input":"hi"}`), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(now); el != 0 {
			t.Errorf("request without output waited %v", el)
		}
		pm.settle(nil, nil)
	})
}

// TestRemainingOnly: a provider that announces only what remains (as
// Azure does) is paced with the largest remaining seen as its quota.
func TestRemainingOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{ColdStart: -1}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		settleOK(pm, ratelimit.Window{Unit: ratelimit.UnitRequests, Limit: -1, Remaining: 120})
		s := p.snapshot(time.Now())[0].Windows
		if len(s) != 1 || s[0].Tokens != 118 {
			t.Fatalf("windows = %+v, want 118 to use now", s)
		}
		// No reset announced: the window refills over a minute, its
		// length as far as known.
		time.Sleep(30 * time.Second)
		for range 118 {
			pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
			if err != nil {
				t.Fatal(err)
			}
			pm.settle(nil, nil)
		}
		s = p.snapshot(time.Now())[0].Windows
		if s[0].Tokens != 0 || s[0].Rate != 0 {
			t.Fatalf("windows = %+v, want 0 left", s)
		}
	})
}

// BenchmarkPacerParallel is BenchmarkPacer from every core at once, on one
// partition: the cost of its lock under contention.
func BenchmarkPacerParallel(b *testing.B) {
	p := newPacer(PacingConfig{}, pacerDeps{})
	body := longChatBody(1900)
	resp := &http.Response{StatusCode: 200, Header: http.Header{
		"X-Ratelimit-Limit-Requests":     {"1000000000"},
		"X-Ratelimit-Remaining-Requests": {"999999999"},
		"X-Ratelimit-Reset-Requests":     {"6ms"},
	}}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest(http.MethodPost, "https://api.openai.com/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer sk-bench")
		for pb.Next() {
			pm, err := p.acquire(ctx, req, admitOpts{})
			if err != nil {
				b.Fatal(err)
			}
			pm.settle(resp, nil)
		}
	})
}

func TestCustomEstimator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var bodies []string
		est := func(req *http.Request, body io.Reader) TokenEstimate {
			b, _ := io.ReadAll(body)
			bodies = append(bodies, string(b))
			return TokenEstimate{Input: 500, Output: -7} // negative reads as 0
		}
		// 6000 tokens a minute, 5880 with headroom: eleven requests of
		// 500 go at once, the twelfth when the first comes back.
		p := newPacer(PacingConfig{TokensPerMinute: 6000, Estimator: est}, pacerDeps{})
		ctx := context.Background()
		start := time.Now()
		for range 12 {
			pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
			if err != nil {
				t.Fatal(err)
			}
			pm.settle(nil, nil)
		}
		if el := time.Since(start); el != 60300*time.Millisecond {
			t.Errorf("twelve requests of 500 tokens took %v, want 1m0.3s", el)
		}
		if len(bodies) != 12 || bodies[0] != smallChat {
			t.Errorf("estimator saw %q", bodies)
		}
	})
}

func TestInferWindowKind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples [][2]int64 // remaining, reset in seconds
		kind    windowKind
		period  time.Duration
	}{
		{"sliding", [][2]int64{{90, 10}, {70, 10}, {40, 10}}, kindSliding, 10 * time.Second},
		{"bucket", [][2]int64{{90, 1}, {70, 3}, {40, 6}}, kindBucket, 10 * time.Second},
		{"fixed", [][2]int64{{90, 40}, {70, 38}, {40, 36}}, kindUnknown, 0},
		{"sliding, samples too close", [][2]int64{{90, 60}, {70, 60}, {40, 60}}, kindUnknown, 0},
		// Nearly used up, a sliding window's resets stay about its
		// length: uses a little apart fit a bucket's proportion too,
		// but its resets do not move with them.
		{"sliding nearly used up, samples close", [][2]int64{{22, 60}, {10, 60}}, kindUnknown, 0},
		{"one sample", [][2]int64{{50, 10}}, kindUnknown, 0},
		{"same remaining", [][2]int64{{50, 10}, {49, 10}}, kindUnknown, 0},
		{"no reset", [][2]int64{{90, 0}, {50, 0}}, kindUnknown, 0},
		{"beyond any period", [][2]int64{{90, 1 << 40}, {50, 1 << 40}}, kindUnknown, 0},
	} {
		var w window
		now := time.Unix(1e9, 0)
		for _, s := range tc.samples {
			w.learnLocked(100, s[0], time.Duration(s[1])*time.Second, now)
			now = now.Add(2 * time.Second)
		}
		if w.kind != tc.kind || w.period != tc.period {
			t.Errorf("%s: kind %v period %v, want %v %v", tc.name, w.kind, w.period, tc.kind, tc.period)
		}
	}
}

// TestAdmitStop: a request waiting in the queue whose stop channel closes
// (its upstream's circuit opened) returns errStopped at once, holding
// nothing: the queue behind it moves on.
func TestAdmitStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{RequestsPerMinute: 1}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.settle(nil, nil)
		stop := make(chan struct{})
		closed := make(chan struct{})
		close(closed)
		if _, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{stop: closed}); err != errStopped {
			t.Fatalf("closed stop: err = %v, want errStopped", err)
		}
		time.AfterFunc(time.Second, func() { close(stop) })
		start := time.Now()
		_, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{stop: stop})
		if err != errStopped || time.Since(start) != time.Second {
			t.Fatalf("err = %v after %v, want errStopped after 1s", err, time.Since(start))
		}
		if s := p.snapshot(time.Now()); s[0].Waiting != 0 || s[0].InFlight != 0 {
			t.Errorf("after stop: %+v", s[0])
		}
	})
}

// TestAdmitUrgent: an urgent request (a half-open probe) goes ahead of the
// queue, but still waits for the limits.
func TestAdmitUrgent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{RequestsPerMinute: 1}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.settle(nil, nil)
		start := time.Now()
		var mu sync.Mutex
		var order []string
		var wg sync.WaitGroup
		for _, name := range []string{"first", "second"} {
			wg.Go(func() {
				pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
				if err == nil {
					mu.Lock()
					order = append(order, name)
					mu.Unlock()
					pm.settle(nil, nil)
				}
			})
			synctest.Wait()
		}
		pm, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{urgent: true})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 60300*time.Millisecond {
			t.Errorf("urgent request waited %v, want the limit's 1m0.3s", el)
		}
		mu.Lock()
		if len(order) != 0 {
			t.Errorf("%v went before the urgent request", order)
		}
		mu.Unlock()
		pm.settle(nil, nil)
		wg.Wait()
		if len(order) != 2 || order[0] != "first" {
			t.Errorf("order %v, want first, second", order)
		}
	})
}

// TestPermitCancel: a permit cancelled before its request is sent gives
// its reservation back, so the next request goes at once; cancel and
// settle are idempotent and nil-safe.
func TestPermitCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{RequestsPerMinute: 1}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.cancel()
		pm.cancel()
		pm.settle(nil, nil)
		var nilPermit *permit
		nilPermit.cancel()
		nilPermit.settle(nil, nil)
		start := time.Now()
		pm, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 0 {
			t.Errorf("after a cancel the next request waited %v", el)
		}
		pm.settle(nil, nil)
		pm.cancel() // after settle: nothing
		if s := p.snapshot(time.Now()); s[0].InFlight != 0 || s[0].Windows[0].Tokens != 0 {
			t.Errorf("after settle and cancel: %+v", s[0])
		}
	})
}

// TestHugeHint: a 429 asking for a day's pause fails at once the requests
// whose deadline comes sooner, and makes one without a deadline wait only
// maxHintWait before asking again.
func TestHugeHint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(PacingConfig{ColdStart: -1}, pacerDeps{})
		ctx := context.Background()
		pm, err := p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		pm.done.Store(true)
		pm.finish(true, http.StatusTooManyRequests, ratelimit.Limits{RetryAfter: 24 * time.Hour, HasRetryAfter: true}, time.Now())
		start := time.Now()
		hctx, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		_, err = p.acquire(hctx, chatRequest(t, hctx, "h", "k", smallChat), admitOpts{})
		var we *WaitError
		if !errors.As(err, &we) || !errors.Is(err, context.DeadlineExceeded) || we.Wait != 24*time.Hour || time.Since(start) != 0 {
			t.Fatalf("err = %v after %v, want a refusal at once telling 24h", err, time.Since(start))
		}
		pm, err = p.acquire(ctx, chatRequest(t, ctx, "h", "k", smallChat), admitOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != maxHintWait {
			t.Errorf("without a deadline waited %v, want %v", el, maxHintWait)
		}
		pm.settle(nil, nil)
	})
}

// TestConfigRule: zero means the default and a negative value means none,
// for every numeric pacing field.
func TestConfigRule(t *testing.T) {
	zero := newPacer(PacingConfig{}, pacerDeps{})
	if zero.headroom != defaultHeadroom || zero.coldStart != defaultColdStart || zero.maxParts != defaultMaxPartitions || zero.idle != defaultIdleTimeout || zero.maxWait != 0 {
		t.Errorf("zero config: %+v", zero)
	}
	none := newPacer(PacingConfig{Headroom: -1, ColdStart: -1, MaxPartitions: -1, IdleTimeout: -1, MaxWait: -1}, pacerDeps{})
	if none.headroom != 0 || none.coldStart > 0 || none.maxParts < 1<<30 || none.idle < 50*365*24*time.Hour || none.maxWait != 0 {
		t.Errorf("negative config: %+v", none)
	}
	now := time.Now()
	if cut := now.Add(-none.idle); !cut.Before(now) {
		t.Errorf("idle cutoff %v is not before now", cut)
	}
}
