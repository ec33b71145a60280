package steady

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady/steadytest"
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

// loadCase is a load target: a provider, its limits, and the workload.
type loadCase struct {
	name      string
	provider  steadytest.ProviderConfig
	pacing    PacingConfig
	maxTokens int64 // max_completion_tokens of every request; 0 for none
	windows   int
}

// loadResult is what a load run measured.
type loadResult struct {
	calls, failed      int64
	stats              steadytest.Stats // at the end of the run
	acceptedInRun      int64            // requests accepted within the run's windows
	tokensInRun        int64
	goodput, tokenGood float64 // accepted within the run over the limits
	rejectedShare      float64 // 429s over upstream attempts
}

// runLoad offers three times the binding limit from 32 goroutines for
// tc.windows windows through the real SDK client, with mw (the pacing
// under test) as its only middleware, and measures the provider.
func runLoad(t *testing.T, tc loadCase, mw option.Middleware) loadResult {
	t.Helper()
	prov := steadytest.NewProvider(tc.provider)
	client := openai.NewClient(
		option.WithMiddleware(mw),
		option.WithHTTPClient(&http.Client{Transport: prov}),
		option.WithBaseURL("https://llm.example.test/v1/"),
		option.WithAPIKey("sk-load"),
	)
	window := tc.provider.Window
	if window <= 0 {
		window = time.Minute
	}
	run := time.Duration(tc.windows) * window
	// Requests per window the limits allow; offered at three times that.
	perWindow := float64(tc.provider.RequestsPerWindow)
	if tc.provider.TokensPerWindow > 0 && tc.maxTokens > 0 {
		perWindow = min(perWindow, float64(tc.provider.TokensPerWindow)/float64(tc.maxTokens+2))
	}
	const workers = 32
	interval := time.Duration(float64(window) * workers / (3 * perWindow))
	start := time.Now()
	end := start.Add(run)

	var res loadResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			next := start.Add(time.Duration(w) * interval / workers)
			for {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				if !time.Now().Before(end) {
					return
				}
				next = next.Add(interval)
				params := openai.ChatCompletionNewParams{
					Model:    "gpt-4o-mini",
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
				}
				if tc.maxTokens > 0 {
					params.MaxCompletionTokens = openai.Int(tc.maxTokens)
				}
				_, err := client.Chat.Completions.New(context.Background(), params)
				mu.Lock()
				res.calls++
				if err != nil {
					res.failed++
					if res.failed <= 3 {
						t.Errorf("call failed: %v", err)
					}
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(run)
	atEnd := prov.Stats()
	wg.Wait()
	res.stats = prov.Stats()
	res.acceptedInRun = atEnd.Accepted
	res.tokensInRun = atEnd.TokensAccepted
	if l := tc.provider.RequestsPerWindow; l > 0 {
		res.goodput = float64(res.acceptedInRun) / float64(int64(l)*int64(tc.windows))
	}
	if l := tc.provider.TokensPerWindow; l > 0 {
		res.tokenGood = float64(res.tokensInRun) / float64(int64(l)*int64(tc.windows))
	}
	if res.stats.Requests > 0 {
		res.rejectedShare = float64(res.stats.RateLimited) / float64(res.stats.Requests)
	}
	t.Logf("%s: calls %d failed %d; upstream %d accepted %d (in run %d, goodput %.1f%%, tokens %.1f%%) 429 %d (%.2f%%); max in window: %d requests, %d tokens; peak concurrency %d",
		tc.name, res.calls, res.failed, res.stats.Requests, res.stats.Accepted, res.acceptedInRun, 100*res.goodput, 100*res.tokenGood,
		res.stats.RateLimited, 100*res.rejectedShare, res.stats.MaxRequestsInWindow, res.stats.MaxTokensInWindow, res.stats.PeakConcurrency)
	return res
}

// pacedMiddleware paces with p alone and retries 429s after the shared
// cooldown: the pacer's part of the transport, for tests of the pacer
// through the real SDK.
func pacedMiddleware(p *pacer) option.Middleware {
	return func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		for attempt := 1; ; attempt++ {
			pm, err := p.acquire(req.Context(), req)
			if err != nil {
				return nil, err
			}
			r := req.Clone(req.Context())
			if req.GetBody != nil {
				r.Body, _ = req.GetBody()
			}
			resp, err := next(r)
			pm.settle(resp, err)
			if err != nil || resp.StatusCode != http.StatusTooManyRequests || attempt == 6 {
				return resp, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

func loadCases() []loadCase {
	var cs []loadCase
	for _, d := range []steadytest.Dialect{steadytest.DialectOpenAI, steadytest.DialectHerokuSeed, steadytest.DialectHerokuDocs, steadytest.DialectAnthropic, steadytest.DialectIETF} {
		for _, a := range []steadytest.Algorithm{steadytest.SlidingWindow, steadytest.TokenBucket} {
			cs = append(cs, loadCase{
				name:     fmt.Sprintf("requests/%s/%s", d, a),
				provider: steadytest.ProviderConfig{RequestsPerWindow: 120, Dialect: d, Algorithm: a, Latency: 150 * time.Millisecond},
				windows:  6,
			})
			if d == steadytest.DialectIETF {
				// The simulated provider's IETF policies carry no qu
				// parameter, so its tokens policy reads as requests.
				continue
			}
			cs = append(cs, loadCase{
				name:      fmt.Sprintf("tokens/%s/%s", d, a),
				provider:  steadytest.ProviderConfig{RequestsPerWindow: 1000, TokensPerWindow: 40000, Dialect: d, Algorithm: a, Latency: 150 * time.Millisecond},
				maxTokens: 500,
				windows:   6,
			})
		}
	}
	cs = append(cs, loadCase{
		name:     "requests/none+config",
		provider: steadytest.ProviderConfig{RequestsPerWindow: 120, Dialect: steadytest.DialectNone, Latency: 150 * time.Millisecond},
		pacing:   PacingConfig{RequestsPerMinute: 120},
		windows:  6,
	}, loadCase{
		name:      "tokens/none+config",
		provider:  steadytest.ProviderConfig{RequestsPerWindow: 1000, TokensPerWindow: 40000, Dialect: steadytest.DialectNone, Latency: 150 * time.Millisecond},
		pacing:    PacingConfig{TokensPerMinute: 40000},
		maxTokens: 500,
		windows:   6,
	})
	return cs
}

func TestPacerLoadThroughSDK(t *testing.T) {
	for _, tc := range loadCases() {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newPacer(tc.pacing, nil, nil)
				res := runLoad(t, tc, pacedMiddleware(p))
				good := res.goodput
				if tc.maxTokens > 0 {
					good = res.tokenGood
				}
				if good < 0.97 {
					t.Errorf("goodput %.1f%% of the limit, want >= 97%%", 100*good)
				}
				if res.rejectedShare > 0.01 {
					t.Errorf("429s are %.2f%% of upstream attempts, want <= 1%%", 100*res.rejectedShare)
				}
			})
		})
	}
}
