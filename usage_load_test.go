package steady_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// tpmCase is a TPM-bound workload: a provider that counts by usage,
// 40,000 tokens a minute, requests asking max_tokens 4,000 while their
// completions really use 100 to 600.
type tpmCase struct {
	dialect steadytest.Dialect
	byUsage bool // PacingConfig.TokensByUsage
	stream  bool
	form    string // "middleware" or "roundtripper"
	windows int
}

type tpmResult struct {
	goodput  float64 // tokens accepted while the load lasted, over the limit
	rejected float64 // 429s over upstream attempts
	calls    int64
	failed   int64
	learned  int64
	estErr   float64
	stats    steadytest.Stats
}

const (
	tpmLimit  = 40000
	tpmMaxOut = 4000
)

// runTPM offers about three times what the limit allows, by what requests
// really use, from 64 workers, through the real SDK, in fake time.
func runTPM(t *testing.T, tc tpmCase) tpmResult {
	t.Helper()
	prov := steadytest.NewProvider(steadytest.ProviderConfig{
		TokensPerWindow: tpmLimit, CountUsage: true, OutputTokens: [2]int{100, 600},
		Dialect: tc.dialect, Latency: 200 * time.Millisecond, ChunkDelay: 5 * time.Millisecond,
		Faults: steadytest.Faults{Seed: 7},
	})
	// Without headers the limit is stated; with them, they tell it.
	cfg := steady.Config{Pacing: steady.PacingConfig{TokensByUsage: tc.byUsage}}
	if tc.dialect == steadytest.DialectNone {
		cfg.Pacing.TokensPerMinute = tpmLimit
	}
	client, tr := clientForms[tc.form](cfg, prov)
	run := time.Duration(tc.windows) * time.Minute
	// About 352 tokens a request (2 of prompt, 350 of output on average):
	// the limit serves about 114 a minute; offered three times that.
	const workers = 64
	interval := time.Minute * workers / (3 * 114)
	start := time.Now()
	end := start.Add(run)
	var mu sync.Mutex
	var res tpmResult
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
					Model:               "gpt-4o-mini",
					Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
					MaxCompletionTokens: openai.Int(tpmMaxOut),
				}
				var err error
				if tc.stream {
					params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
					s := client.Chat.Completions.NewStreaming(context.Background(), params)
					for s.Next() {
					}
					s.Close()
					err = s.Err()
				} else {
					_, err = client.Chat.Completions.New(context.Background(), params)
				}
				mu.Lock()
				res.calls++
				if err != nil {
					res.failed++
					if res.failed <= 3 {
						t.Logf("call failed: %v", err)
					}
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(run)
	atEnd := prov.Stats()
	for _, p := range tr.Snapshot() {
		res.learned, res.estErr = p.LearnedOutput, p.EstimateError
	}
	wg.Wait()
	res.stats = prov.Stats()
	res.goodput = float64(atEnd.TokensAccepted) / float64(tpmLimit*tc.windows)
	if res.stats.Requests > 0 {
		res.rejected = float64(res.stats.RateLimited) / float64(res.stats.Requests)
	}
	t.Logf("goodput %.1f%% of the token limit; 429s %d of %d attempts (%.2f%%); calls %d, failed %d; learned output %d, estimate error %.0f tokens",
		100*res.goodput, res.stats.RateLimited, res.stats.Requests, 100*res.rejected, res.calls, res.failed, res.learned, res.estErr)
	return res
}

// TestTPMByUsage: the TPM-bound rows. A workload of 40,000 tokens
// a minute stated in PacingConfig.TokensPerMinute, max_tokens 4,000 and
// real outputs of 100 to 600 tokens: reserving max_tokens, about ten calls
// a minute go, a tenth of the limit; settled by usage and reserving what
// was learned, at least 90% of the limit with no token headers (at most 1%
// of attempts answered 429), at least 97% with them (no 429).
func TestTPMByUsage(t *testing.T) {
	rows := []struct {
		name     string
		tc       tpmCase
		goodput  float64 // at least
		rejected float64 // at most
	}{
		{"no headers", tpmCase{dialect: steadytest.DialectNone, byUsage: true, windows: 5}, 0.90, 0.01},
		{"headers", tpmCase{dialect: steadytest.DialectOpenAI, byUsage: true, windows: 5}, 0.97, 0},
		{"no headers/stream", tpmCase{dialect: steadytest.DialectNone, byUsage: true, stream: true, windows: 3}, 0.90, 0.01},
		{"headers/stream", tpmCase{dialect: steadytest.DialectOpenAI, byUsage: true, stream: true, windows: 3}, 0.97, 0},
	}
	for _, form := range []string{"middleware", "roundtripper"} {
		for _, row := range rows {
			t.Run(form+"/"+row.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					tc := row.tc
					tc.form = form
					res := runTPM(t, tc)
					if res.goodput < row.goodput {
						t.Errorf("goodput %.1f%% of the limit, want >= %.0f%%", 100*res.goodput, 100*row.goodput)
					}
					if res.rejected > row.rejected {
						t.Errorf("429s %.2f%% of attempts, want <= %.0f%%", 100*res.rejected, 100*row.rejected)
					}
					if res.failed > 0 {
						t.Errorf("%d calls failed", res.failed)
					}
				})
			})
		}
	}
}

// TestTPMByEstimate is today's behaviour beside it, for the side by side:
// the same workload reserving max_tokens uses about a tenth of the limit.
func TestTPMByEstimate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		res := runTPM(t, tpmCase{dialect: steadytest.DialectNone, windows: 3, form: "middleware"})
		if res.goodput > 0.2 {
			t.Errorf("goodput %.1f%% reserving max_tokens: the workload is not TPM-bound as meant", 100*res.goodput)
		}
	})
}
