package steady_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// BenchmarkLoopback runs finite batches in real time over loopback HTTP,
// against a simulated provider, through the real SDK in both forms, and
// reports each batch's makespan over the quota's minimum ("x-quota-min")
// and its 429s per attempt ("429/attempt"). Run it with -benchtime=1x:
//
//	go test -run '^$' -bench Loopback -benchtime=1x .
//
// per-second: Heroku headers (Unix-second resets), 20 requests per fixed
// one-second window, 16 workers, 120 calls: the quota needs about 5 s
// (headroom rounds to no request of 20).
// ten-second: OpenAI headers, 100 requests per ten-second sliding window,
// 300 calls launched at once: at 98 a window (2% headroom) the quota
// needs 30 s.
func BenchmarkLoopback(b *testing.B) {
	for _, bc := range []struct {
		name    string
		cfg     steadytest.ProviderConfig
		calls   int
		workers int // 0: every call at once
	}{
		{"per-second", steadytest.ProviderConfig{RequestsPerWindow: 20, Window: time.Second, Algorithm: steadytest.FixedWindow, Dialect: steadytest.DialectHerokuSeed}, 120, 16},
		{"ten-second", steadytest.ProviderConfig{RequestsPerWindow: 100, Window: 10 * time.Second, Algorithm: steadytest.SlidingWindow}, 300, 0},
	} {
		for _, form := range []string{"middleware", "roundtripper"} {
			b.Run(bc.name+"/"+form, func(b *testing.B) {
				for b.Loop() {
					loopbackBatch(b, bc.cfg, bc.calls, bc.workers, form)
				}
			})
		}
	}
}

func loopbackBatch(b *testing.B, cfg steadytest.ProviderConfig, calls, workers int, form string) {
	prov := steadytest.NewProvider(cfg)
	srv := httptest.NewServer(prov)
	defer srv.Close()
	opts := []option.RequestOption{option.WithBaseURL(srv.URL + "/v1/"), option.WithAPIKey("sk-loopback")}
	if form == "middleware" {
		tr := steady.New(steady.Config{})
		opts = append(opts, option.WithMiddleware(tr.Middleware))
	} else {
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: steady.New(steady.Config{})}))
	}
	client := openai.NewClient(opts...)
	start := time.Now()
	var failed atomic.Int64
	call := func() {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi")},
		})
		if err != nil {
			failed.Add(1)
		}
	}
	var wg sync.WaitGroup
	if workers > 0 {
		var next atomic.Int64
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= int64(calls) {
					call()
				}
			})
		}
	} else {
		for range calls {
			wg.Go(call)
		}
	}
	wg.Wait()
	el := time.Since(start)
	st := prov.Stats()
	// The quota's minimum at the default 2% headroom (in whole requests)
	// from the batch's start: a fixed window starts at a whole period, so
	// the first one may be partly gone.
	l, p := cfg.RequestsPerWindow-cfg.RequestsPerWindow*2/100, cfg.Window
	windows := (calls+l-1)/l - 1
	minimum := time.Duration(windows) * p
	if cfg.Algorithm == steadytest.FixedWindow {
		first := p - time.Duration(start.UnixNano()%int64(p))
		minimum = first + time.Duration(windows-1)*p
	}
	b.ReportMetric(el.Seconds()/minimum.Seconds(), "x-quota-min")
	b.ReportMetric(float64(st.RateLimited)/float64(max(st.Requests, 1)), "429/attempt")
	b.ReportMetric(float64(failed.Load()), "failed")
}
