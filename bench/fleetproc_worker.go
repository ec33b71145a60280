package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadyredis"
)

// fleetWorkerEnv names the environment variable that makes a binary a
// fleet worker (see fleetWorker): it holds the worker's spec as JSON.
const fleetWorkerEnv = "STEADY_BENCH_FLEET_WORKER"

// The client a fleet worker runs.
const (
	workerBare       = "bare"       // the bare SDK, its own retries on
	workerMiddleware = "middleware" // steady as SDK middleware
	workerTransport  = "transport"  // steady as the HTTP client's transport
	workerOutside    = "outside"    // a process without steady: plain HTTP at a fixed rate, no retries
)

// fleetSpec is what one worker process runs.
type fleetSpec struct {
	ID          int
	Client      string // workerBare, workerMiddleware, workerTransport or workerOutside
	BaseURL     string
	Redis       string // the store's Redis as a URL; "" paces alone
	Prefix      string // the store's key prefix
	FleetHint   int
	Callers     int
	Interval    time.Duration // sustained load: each caller starts a call this often
	Rate        float64       // outside: requests per second
	CallTimeout time.Duration
	Calls       int // a batch: calls of this process; 0 for sustained load
	Buckets     int // seconds of per-second tallies
	MaxTokens   int64
	Prompt      string
}

// fleetReport is one JSON line a worker writes on its stdout: "ready"
// once set up, "final" at the end.
type fleetReport struct {
	Kind        string
	ID          int
	Calls       int `json:",omitempty"`
	OK          int `json:",omitempty"`
	Failed      int `json:",omitempty"`
	Attempts    int `json:",omitempty"`
	RateLimited int `json:",omitempty"`
	Fallbacks   int `json:",omitempty"` // the store fell back to local pacing
	Rejoins     int `json:",omitempty"` // the store rejoined the fleet
	// EventFallbacks counts the EventStore fallbacks of the process's
	// partitions: at least Fallbacks, one per partition that fell back.
	EventFallbacks int            `json:",omitempty"`
	StorePing      bool           `json:",omitempty"` // Redis answered at start
	Errors         map[string]int `json:",omitempty"` // failed calls by cause
	LastEnd        time.Duration  `json:",omitempty"` // a batch: from the start to the end of its last call
	// Per second since the common start: attempts sent, 429s received,
	// calls ended ok and failed.
	SecAttempts, SecLimited, SecOK, SecFailed []int  `json:",omitempty"`
	Err                                       string `json:",omitempty"`
}

// fleetWorker runs this process as a worker of runFleet when the
// environment says so, and reports whether it did (with the exit code the
// process should end with). The package's TestMain calls it first
// thing, since runFleet starts the test binary again as each worker:
//
//	if code, ok := fleetWorker(); ok {
//		os.Exit(code)
//	}
func fleetWorker() (code int, ok bool) {
	specJSON := os.Getenv(fleetWorkerEnv)
	if specJSON == "" {
		return 0, false
	}
	var spec fleetSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "bench fleet worker: bad %s: %v\n", fleetWorkerEnv, err)
		return 2, true
	}
	if err := runFleetWorker(spec, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "bench fleet worker %d: %v\n", spec.ID, err)
		return 1, true
	}
	return 0, true
}

// procTally counts what one worker saw, per second since the common start.
type procTally struct {
	start time.Time // set before any call

	mu                     sync.Mutex
	calls, ok, failed      int            // guarded by mu
	attempts, limited      int            // guarded by mu
	errs                   map[string]int // guarded by mu
	lastEnd                time.Duration  // guarded by mu
	secA, secL, secO, secF []int          // guarded by mu
}

func newProcTally(buckets int) *procTally {
	return &procTally{errs: map[string]int{}, secA: make([]int, buckets), secL: make([]int, buckets),
		secO: make([]int, buckets), secF: make([]int, buckets)}
}

// sec is the bucket of now, or -1 outside the run.
func (t *procTally) sec(now time.Time) int {
	d := now.Sub(t.start)
	if d < 0 {
		return -1
	}
	i := int(d / time.Second)
	if i >= len(t.secA) {
		return -1
	}
	return i
}

func (t *procTally) attempt(now time.Time, status int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.attempts++
	i := t.sec(now)
	if i >= 0 {
		t.secA[i]++
	}
	if status == http.StatusTooManyRequests {
		t.limited++
		if i >= 0 {
			t.secL[i]++
		}
	}
}

func (t *procTally) done(now time.Time, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls++
	i := t.sec(now)
	if err == nil {
		t.ok++
		if i >= 0 {
			t.secO[i]++
		}
	} else {
		t.failed++
		if i >= 0 {
			t.secF[i]++
		}
		t.errs[failureKind(err)]++
	}
	t.lastEnd = max(t.lastEnd, now.Sub(t.start))
}

// procCounting sends every attempt to next and counts it.
type procCounting struct {
	next http.RoundTripper
	t    *procTally
}

func (c *procCounting) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	c.t.attempt(time.Now(), status)
	return resp, err
}

func runFleetWorker(spec fleetSpec, stdin io.Reader, stdout, stderr io.Writer) error {
	enc := json.NewEncoder(stdout)
	t := newProcTally(spec.Buckets)
	ht := &http.Transport{MaxIdleConnsPerHost: spec.Callers + 4, IdleConnTimeout: time.Minute}
	defer ht.CloseIdleConnections()
	base := &procCounting{next: ht, t: t}

	cfg := steady.Config{Random: rand.NewPCG(uint64(spec.ID), 0x5eed)} // each process its own, seeded
	var (
		store              *steadyredis.Store
		fallbacks, rejoins atomic.Int64
		eventFallbacks     atomic.Int64 // EventStore fallbacks, as steadyotel counts them
		ping               bool
	)
	if spec.Redis != "" {
		opt, err := redis.ParseURL(spec.Redis)
		if err != nil {
			return fmt.Errorf("redis URL: %w", err)
		}
		opt.ContextTimeoutEnabled = true
		rc := redis.NewClient(opt)
		defer rc.Close()
		redis.SetLogger(quietRedis{})
		st, err := steadyredis.New(rc,
			steadyredis.WithPrefix(spec.Prefix),
			steadyredis.WithInstanceID("worker-"+strconv.Itoa(spec.ID)),
			steadyredis.WithFleetHint(spec.FleetHint),
			steadyredis.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
			steadyredis.WithNotify(func(c steadyredis.Change) {
				if c.Shared {
					rejoins.Add(1)
				} else {
					fallbacks.Add(1)
				}
			}),
		)
		if err != nil {
			return err
		}
		store = st
		defer store.Close()
		cfg.Pacing.Store = store
		cfg.OnEvent = func(ev steady.Event) {
			if ev.Kind == steady.EventStore && ev.Reason == "fallback" {
				eventFallbacks.Add(1)
			}
		}
		pctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ping = rc.Ping(pctx).Err() == nil
		cancel()
	}

	var sdk openai.Client
	opts := []option.RequestOption{option.WithBaseURL(spec.BaseURL), option.WithAPIKey("sk-bench")}
	switch spec.Client {
	case workerBare:
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: base}))
	case workerMiddleware:
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: base}), option.WithMiddleware(steady.New(cfg).Middleware))
	case workerTransport:
		cfg.Base = base
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: steady.New(cfg)}))
	case workerOutside:
	default:
		return fmt.Errorf("unknown client %q", spec.Client)
	}
	sdk = openai.NewClient(opts...)
	if err := enc.Encode(fleetReport{Kind: "ready", ID: spec.ID, StorePing: ping}); err != nil {
		return err
	}

	// "start <common start, Unix ns> <this process's start, Unix ns>",
	// then stop when stdin closes.
	lines := bufio.NewScanner(stdin)
	if !lines.Scan() {
		return nil
	}
	f := strings.Fields(lines.Text())
	if len(f) != 4 || f[0] != "start" {
		return fmt.Errorf("start line %q", lines.Text())
	}
	var ns [3]int64
	for i := range ns {
		v, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return fmt.Errorf("start line %q: %w", lines.Text(), err)
		}
		ns[i] = v
	}
	t.start = time.Unix(0, ns[0])
	from, end := time.Unix(0, ns[1]), time.Unix(0, ns[2])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for lines.Scan() {
		}
		cancel()
	}()

	call := func(ctx context.Context) {
		cctx, ccancel := context.WithTimeout(ctx, spec.CallTimeout)
		defer ccancel()
		_, err := sdk.Chat.Completions.New(cctx, openai.ChatCompletionNewParams{
			Model:               "gpt-4o-mini",
			MaxCompletionTokens: openai.Int(spec.MaxTokens),
			Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage(spec.Prompt)},
		})
		if ctx.Err() != nil {
			return // the run ended: neither a success nor a failure
		}
		t.done(time.Now(), err)
	}
	runCtx, stop := context.WithDeadline(ctx, end)
	defer stop()
	if !sleepUntil(runCtx, from) {
		return writeFinal(enc, spec, t, store, &fallbacks, &rejoins, &eventFallbacks)
	}
	var wg sync.WaitGroup
	switch {
	case spec.Client == workerOutside:
		runOutside(runCtx, spec, ht, t)
	case spec.Calls > 0:
		var next atomic.Int64
		for range spec.Callers {
			wg.Go(func() {
				for next.Add(1) <= int64(spec.Calls) && runCtx.Err() == nil {
					call(runCtx)
				}
			})
		}
	default:
		for w := range spec.Callers {
			offset := spec.Interval * time.Duration(w) / time.Duration(spec.Callers)
			wg.Go(func() {
				next := from.Add(offset)
				for sleepUntil(runCtx, next) {
					call(runCtx)
					next = next.Add(spec.Interval)
					if now := time.Now(); next.Before(now) {
						next = now
					}
				}
			})
		}
	}
	wg.Wait()
	return writeFinal(enc, spec, t, store, &fallbacks, &rejoins, &eventFallbacks)
}

// runOutside sends chat completions at spec.Rate without steady and
// without retries, as a consumer outside the fleet on the same key does.
func runOutside(ctx context.Context, spec fleetSpec, ht http.RoundTripper, t *procTally) {
	body, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "max_completion_tokens": spec.MaxTokens,
		"messages": []map[string]string{{"role": "user", "content": spec.Prompt}}})
	client := &http.Client{Transport: ht}
	every := time.Duration(float64(time.Second) / spec.Rate)
	var wg sync.WaitGroup
	defer wg.Wait()
	next := time.Now()
	for sleepUntil(ctx, next) {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, spec.CallTimeout)
			defer cancel()
			req, _ := http.NewRequestWithContext(cctx, http.MethodPost, spec.BaseURL+"chat/completions", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer sk-bench")
			resp, err := client.Do(req)
			if ctx.Err() != nil {
				return
			}
			now := time.Now()
			if err != nil {
				t.attempt(now, 0)
				t.done(now, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			t.attempt(now, resp.StatusCode)
			if resp.StatusCode/100 == 2 {
				t.done(now, nil)
			} else {
				t.done(now, fmt.Errorf("status %d", resp.StatusCode))
			}
		})
		next = next.Add(every)
	}
}

func writeFinal(enc *json.Encoder, spec fleetSpec, t *procTally, store *steadyredis.Store, fallbacks, rejoins, eventFallbacks *atomic.Int64) error {
	if store != nil {
		store.Close()
	}
	t.mu.Lock()
	r := fleetReport{Kind: "final", ID: spec.ID, Calls: t.calls, OK: t.ok, Failed: t.failed, Attempts: t.attempts,
		RateLimited: t.limited, Errors: t.errs, LastEnd: t.lastEnd,
		SecAttempts: t.secA, SecLimited: t.secL, SecOK: t.secO, SecFailed: t.secF,
		Fallbacks: int(fallbacks.Load()), Rejoins: int(rejoins.Load()), EventFallbacks: int(eventFallbacks.Load())}
	t.mu.Unlock()
	return enc.Encode(r)
}

// quietRedis is a go-redis logger that drops what it is given: the
// tallies say what went wrong.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
