package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
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

// workerEnv names the environment variable that makes the demo's own
// binary a fleet worker: it holds the worker's spec as JSON.
const workerEnv = "STEADY_DEMO_WORKER"

// workerSpec is what a fleet worker runs.
type workerSpec struct {
	ID          int
	BaseURL     string        // the simulated provider, on loopback
	Redis       string        // the store's Redis as a URL; "" paces alone
	Prefix      string        // the store's key prefix
	FleetSize   int           // the store's fleet hint
	Duration    time.Duration // of the run
	Window      time.Duration // the provider's window, for goodput
	Concurrency int           // callers
	Offered     float64       // calls per second of this worker
	Timeout     time.Duration // deadline of one call
	Model       string
	Every       time.Duration // progress report interval
}

// workerReport is one JSON line a worker writes to its stdout: "ready"
// when it is set up, "progress" while it runs, and "final" at the end.
type workerReport struct {
	Kind        string
	ID          int
	Calls       int     `json:",omitempty"`
	OK          int     `json:",omitempty"`
	Failed      int     `json:",omitempty"`
	Attempts    int     `json:",omitempty"`
	RateLimited int     `json:",omitempty"`
	Retries     int     `json:",omitempty"`
	Rate        float64 `json:",omitempty"` // ok upstream responses per second, recently
	Store       bool    `json:",omitempty"` // the worker paces with a shared store
	StorePing   bool    `json:",omitempty"` // Redis answered when the worker started
	Shared      bool    `json:",omitempty"` // the store's last call to Redis succeeded
	Fallbacks   int     `json:",omitempty"` // times the store fell back to local pacing
	Goodput     float64 `json:",omitempty"` // ok calls per second over whole windows
	Latencies   []int64 `json:",omitempty"` // of ok calls, in microseconds (final)
	Accepted    []int   `json:",omitempty"` // 2xx upstream responses per second (final)
	Err         string  `json:",omitempty"`
}

// workerMain runs one fleet worker: it sets up an SDK client with steady
// (and the shared store when the spec names a Redis), reports "ready",
// waits for the start time the parent writes on stdin, runs the workload,
// and reports its tallies. It stops early when stdin closes or on an
// interrupt. It returns the process's exit code.
func workerMain(specJSON string, stdin io.Reader, stdout, stderr io.Writer) int {
	var spec workerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintf(stderr, "steady-demo worker: bad %s: %v\n", workerEnv, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := runWorker(ctx, spec, stdin, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "steady-demo worker %d: %v\n", spec.ID, err)
		return 1
	}
	return 0
}

func runWorker(ctx context.Context, spec workerSpec, stdin io.Reader, stdout, stderr io.Writer) error {
	var (
		outMu sync.Mutex
		enc   = json.NewEncoder(stdout)
	)
	report := func(r workerReport) error {
		r.ID = spec.ID
		outMu.Lock()
		defer outMu.Unlock()
		return enc.Encode(r)
	}

	// The store, when the spec names a Redis.
	cfg := steady.Config{}
	var (
		store     *steadyredis.Store
		fallbacks atomic.Int64
		ping      bool
	)
	if spec.Redis != "" {
		opt, err := redis.ParseURL(spec.Redis)
		if err != nil {
			return fmt.Errorf("redis URL: %w", err)
		}
		opt.ContextTimeoutEnabled = true // a slow call is abandoned at the store's timeout
		rc := redis.NewClient(opt)
		defer rc.Close()
		logger := slog.New(slog.NewTextHandler(stderr, nil))
		// This program owns go-redis's process-wide logger: its dial
		// failures while Redis is down go to the worker's log, one a
		// minute, rather than a line a second.
		redis.SetLogger(steadyredis.RedisLogger(logger, 0))
		st, err := steadyredis.New(rc,
			steadyredis.WithPrefix(spec.Prefix),
			steadyredis.WithInstanceID("worker-"+strconv.Itoa(spec.ID)),
			steadyredis.WithFleetHint(spec.FleetSize),
			steadyredis.WithLogger(logger),
			steadyredis.WithNotify(func(c steadyredis.Change) {
				if !c.Shared {
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
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		ping = rc.Ping(pctx).Err() == nil
		cancel()
	}

	// The client: SDK, steady as middleware, counting every attempt.
	start := time.Now() // replaced by the parent's start time below
	name := "worker " + strconv.Itoa(spec.ID)
	rec := newRecorder(name, start, time.Second)
	cfg.OnEvent = rec.event
	t := steady.New(cfg)
	ht := &http.Transport{MaxIdleConnsPerHost: 2*spec.Concurrency + 4, IdleConnTimeout: 30 * time.Second}
	defer ht.CloseIdleConnections()
	c := &client{name: name, rec: rec, steady: t}
	c.sdk = openai.NewClient(
		option.WithBaseURL(spec.BaseURL),
		option.WithAPIKey("sk-demo"),
		option.WithHTTPClient(&http.Client{Transport: &counting{next: ht, rec: rec}}),
		option.WithMiddleware(t.Middleware),
	)
	if err := report(workerReport{Kind: "ready", Store: store != nil, StorePing: ping}); err != nil {
		return err
	}

	// The start time, then stop when stdin closes.
	lines := bufio.NewScanner(stdin)
	if !lines.Scan() {
		return nil // the parent stopped before the start
	}
	ns, err := strconv.ParseInt(strings.TrimPrefix(lines.Text(), "start "), 10, 64)
	if err != nil {
		return fmt.Errorf("start line %q: %w", lines.Text(), err)
	}
	start = time.Unix(0, ns)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for lines.Scan() {
		}
		cancel()
	}()
	if !sleepUntil(ctx, start) {
		return nil
	}
	rec.mu.Lock()
	rec.start = start
	rec.mu.Unlock()

	state := func(kind string) workerReport {
		p := rec.progress(time.Now())
		r := workerReport{Kind: kind, Calls: p.Calls, OK: p.OK, Failed: p.Failed, RateLimited: p.RateLimited,
			Retries: p.Retries, Rate: p.Rate, Store: store != nil, Fallbacks: int(fallbacks.Load())}
		rec.mu.Lock()
		r.Attempts = rec.attempts
		rec.mu.Unlock()
		if store != nil {
			r.Shared = store.Shared()
		}
		return r
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(max(spec.Every, 50*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				report(state("progress"))
			}
		}
	})
	p := plan{Duration: spec.Duration, Concurrency: spec.Concurrency, Offered: spec.Offered,
		CallTimeout: spec.Timeout, Model: spec.Model, MaxTokens: 64}
	tl := run(ctx, p, []*client{c})
	close(done)
	wg.Wait()

	s := rec.summarize(tl, 0, spec.Window)
	final := state("final")
	final.Goodput = s.Goodput
	final.Accepted = s.Accepted
	rec.mu.Lock()
	lat := slices.Clone(rec.latencies)
	rec.mu.Unlock()
	final.Latencies = make([]int64, len(lat))
	for i, d := range lat {
		final.Latencies[i] = d.Microseconds()
	}
	return report(final)
}
