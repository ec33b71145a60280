package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/steadytest"
)

// Fleet mode's defaults, for the flags the command line leaves unset:
// a short window, so that a run of a few windows stays short.
const (
	fleetDuration    = 20 * time.Second
	fleetWindow      = 2 * time.Second
	fleetRequests    = 100
	fleetConcurrency = 8
	maxFleet         = 64
)

// fleetDefaults checks the flags of fleet mode and gives the ones left
// unset fleet mode's defaults.
func fleetDefaults(fs *flag.FlagSet, o *options) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case o.Fleet < 0 || o.Fleet > maxFleet:
		return fmt.Errorf("-fleet must be between 1 and %d", maxFleet)
	case set["outage"]:
		return errors.New("-outage is not used with -fleet (see -redis-outage)")
	case o.BaseURL != "":
		return errors.New("-base-url is not used with -fleet")
	case o.Metrics != "":
		return errors.New("-metrics is not used with -fleet")
	case o.Redis != "" && o.RedisOutage != 0:
		return errors.New("-redis-outage stops the embedded server: not with -redis")
	}
	o.Outage = 0
	if !set["duration"] {
		o.Duration = fleetDuration
	}
	if !set["window"] {
		o.Window = fleetWindow
	}
	if !set["requests"] {
		o.Requests = fleetRequests
	}
	if !set["concurrency"] {
		o.Concurrency = fleetConcurrency
	}
	if o.RedisOutage < 0 || o.RedisOutage > o.Duration/2 {
		return errors.New("-redis-outage must be between 0 and half of -duration")
	}
	if o.Redis != "" {
		if _, err := redis.ParseURL(o.Redis); err != nil {
			return fmt.Errorf("-redis: %w", err)
		}
	}
	return nil
}

// fleetSide is one of the two fleets: its provider, served on loopback,
// and its worker processes.
type fleetSide struct {
	name     string
	n        int // processes
	store    bool
	provider *steadytest.Provider
	url      string
	srv      *http.Server
	workers  []*fleetWorker
}

// fleetWorker is one worker process as the parent sees it.
type fleetWorker struct {
	id    int
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ready chan workerReport // the ready report, once
	done  chan struct{}     // closed when its stdout ends

	mu    sync.Mutex
	last  workerReport  // newest progress; guarded by mu
	final *workerReport // guarded by mu
	bad   error         // a line that could not be read; guarded by mu
}

// fleetResult is one fleet's outcome.
type fleetResult struct {
	Name        string
	Store       bool
	Processes   int
	Reported    int // processes that sent their final tallies
	StorePing   int // processes whose Redis answered at start
	Calls       int
	OK          int
	Failed      int
	Attempts    int
	RateLimited int
	Retries     int
	Goodput     float64 // ok calls per second over whole windows, all processes
	Limit       float64 // requests per second
	MaxShareDev float64 // largest deviation of a process's share of ok calls from an equal share, as a fraction
	P50, P99    time.Duration
	Fallbacks   int
	Accepted    []int // 2xx upstream responses per second, all processes
	Provider    steadytest.Stats
}

// runFleet runs fleet mode: two fleets of o.Fleet worker processes side
// by side, each on its own simulated provider, one pacing alone and one
// through the shared store, with live progress, a table and a plot.
func runFleet(ctx context.Context, o options, stdout, stderr io.Writer) error {
	res, err := fleet(ctx, o, stdout, stderr)
	if err != nil {
		return err
	}
	return reportFleet(o, res, stdout)
}

// reportFleet writes the fleets' table, what it shows, and the plot.
func reportFleet(o options, res []fleetResult, stdout io.Writer) error {
	fmt.Fprintln(stdout)
	if err := writeFleetTable(stdout, res); err != nil {
		return err
	}
	if o.Dead && len(res) == 3 {
		fmt.Fprintf(stdout, "\nThe upstream was down for the whole run. Upstream attempts: %d from the fleet without the store, %d from the fleet\n"+
			"with it, %d from one process alone. Each process's circuit breaker opens on its own failures; with the store,\n"+
			"the circuit is shared, so one process's discovery opens it for the whole fleet.\n", res[0].Attempts, res[1].Attempts, res[2].Attempts)
	} else {
		fmt.Fprintf(stdout, "\nThe limit is %d requests per %s for the whole fleet, on one key. Goodput counts successful calls over whole windows.\n"+
			"Each process paces under the limit the provider announces; alone, every process takes the whole limit for itself,\n"+
			"so the fleet overshoots and meets 429s. With the store, the processes reserve their turns in one shared budget.\n", o.Requests, o.Window)
	}
	if o.Plot != "" {
		c := chart{Title: fmt.Sprintf("Accepted requests of a %d-process fleet in each window-long span, against the limit", o.Fleet),
			Bucket: time.Second, End: o.Duration, Limit: float64(o.Requests) / o.Window.Seconds(), Window: o.Window}
		if o.RedisOutage > 0 {
			c.Outage, c.OutageLabel = period{o.Duration / 4, o.Duration/4 + o.RedisOutage}, "Redis down"
		}
		for _, r := range res {
			c.Series = append(c.Series, series{Name: r.Name, Accepted: r.Accepted})
		}
		if err := savePlot(o.Plot, c); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "chart written to %s\n", o.Plot)
	}
	return nil
}

// fleet runs both fleets and returns their results: without the store,
// then with it.
func fleet(ctx context.Context, o options, stdout, stderr io.Writer) ([]fleetResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the demo's own binary for the workers: %w", err)
	}

	// The store's Redis.
	redisURL, where := o.Redis, o.Redis
	var mr *miniredis.Miniredis
	if redisURL == "" {
		mr = miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("starting the embedded Redis-compatible server: %w", err)
		}
		defer mr.Close()
		redisURL = "redis://" + mr.Addr()
		where = "the embedded Redis-compatible server (miniredis) at " + redisURL
	} else if err := pingRedis(ctx, redisURL); err != nil {
		return nil, fmt.Errorf("-redis %s: %w", redisURL, err)
	}
	prefix := fmt.Sprintf("steady-demo:%d:", time.Now().UnixNano())

	// One provider per fleet, served on loopback.
	pcfg := providerConfig{Requests: o.Requests, Tokens: o.Tokens, Window: o.Window, Dialect: o.Dialect, Algorithm: o.Algorithm, Latency: o.Latency}
	sides := []*fleetSide{{name: "without store", n: o.Fleet}, {name: "with store", n: o.Fleet, store: true}}
	if o.Dead {
		sides = append(sides, &fleetSide{name: "one process", n: 1})
	}
	for _, s := range sides {
		up, err := newProvider(pcfg)
		if err != nil {
			return nil, err
		}
		up.setOutage(o.Dead)
		s.provider = up.(simulated).Provider
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s.url = "http://" + ln.Addr().String() + "/v1/"
		s.srv = &http.Server{Handler: s.provider, ReadHeaderTimeout: 10 * time.Second}
		go s.srv.Serve(ln)
		defer s.srv.Close()
	}

	limit := float64(o.Requests) / o.Window.Seconds()
	offered := o.Offered * limit
	fmt.Fprintf(stdout, "fleet: %d worker processes per fleet, %d fleets side by side, each on its own simulated provider on loopback\n", o.Fleet, len(sides))
	fmt.Fprintf(stdout, "limit %d requests per %s (%.1f/s) on one key for the whole fleet, offered %.1f/s in total (%.1f/s per process, %d callers each) for %s\n",
		o.Requests, o.Window, limit, offered, offered/float64(o.Fleet), o.Concurrency, o.Duration)
	fmt.Fprintln(stdout, "without store: each process has steady.New(steady.Config{}) and paces alone")
	fmt.Fprintf(stdout, "with store: each process sets Pacing.Store to steadyredis.New on %s\n", where)
	if o.Dead {
		fmt.Fprintln(stdout, "the providers are down: every request is answered 503; one process: the same workload of one process, alone")
	}
	if o.RedisOutage > 0 {
		fmt.Fprintf(stdout, "the embedded server stops at %s for %s, then restarts empty\n", o.Duration/4, o.RedisOutage)
	}

	// The workers.
	// Every worker's log goes, a line at a time, through one lock into
	// stderr: the workers' output is copied by one goroutine each.
	logs := &lockedWriter{w: stderr}
	var all []*fleetWorker
	defer func() {
		for _, w := range all {
			w.stdin.Close()
		}
		for _, w := range all {
			w.cmd.Wait()
		}
	}()
	for _, s := range sides {
		for i := range s.n {
			spec := workerSpec{ID: i, BaseURL: s.url, FleetSize: s.n, Duration: o.Duration, Window: o.Window,
				Concurrency: o.Concurrency, Offered: offered / float64(o.Fleet), Timeout: o.Timeout, Model: o.Model,
				Every: 200 * time.Millisecond}
			if s.store {
				spec.Redis, spec.Prefix = redisURL, prefix
			}
			w, err := startWorker(exe, spec, &prefixWriter{w: logs, prefix: fmt.Sprintf("[%s, worker %d] ", s.name, i)})
			if err != nil {
				return nil, err
			}
			s.workers = append(s.workers, w)
			all = append(all, w)
		}
	}

	// Every worker ready, then one start time for all.
	readyBy := time.NewTimer(time.Minute)
	defer readyBy.Stop()
	pings := map[*fleetSide]int{}
	for _, s := range sides {
		for _, w := range s.workers {
			select {
			case r := <-w.ready:
				if r.StorePing {
					pings[s]++
				}
			case <-w.done:
				return nil, fmt.Errorf("%s, worker %d: exited before it was ready%s", s.name, w.id, w.error())
			case <-readyBy.C:
				return nil, fmt.Errorf("%s, worker %d: not ready after a minute", s.name, w.id)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	start := time.Now().Add(100 * time.Millisecond)
	for _, w := range all {
		fmt.Fprintf(w.stdin, "start %d\n", start.UnixNano())
	}
	if mr != nil && o.RedisOutage > 0 {
		octx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { redisOutage(octx, mr, start.Add(o.Duration/4), o.RedisOutage) })
		defer wg.Wait()
		defer cancel()
	}

	// Live progress until every worker is done.
	allDone := make(chan struct{})
	go func() {
		for _, w := range all {
			<-w.done
		}
		close(allDone)
	}()
	tty := isTerminal(stdout)
	every := o.Interval
	if every <= 0 {
		every = 5 * time.Second
		if tty {
			every = 250 * time.Millisecond
		}
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	printed := false
	show := func() {
		elapsed := min(max(time.Since(start), 0), o.Duration)
		var b strings.Builder
		if tty && printed {
			fmt.Fprintf(&b, "\x1b[%dA", len(sides))
		}
		for _, s := range sides {
			if tty {
				b.WriteString("\r\x1b[2K")
			}
			b.WriteString(s.progressLine(elapsed))
			b.WriteByte('\n')
		}
		io.WriteString(stdout, b.String())
		printed = true
	}
	// A worker that outlives the run by far, or a stop by far, is killed.
	const grace = 15 * time.Second
	kill := time.NewTimer(time.Until(start.Add(o.Duration + grace)))
	defer kill.Stop()
	stopped, ctxDone := false, ctx.Done()
wait:
	for {
		select {
		case <-allDone:
			break wait
		case <-tick.C:
			show()
		case <-ctxDone:
			stopped, ctxDone = true, nil
			for _, w := range all {
				w.stdin.Close() // the workers stop and send what they have
			}
			kill.Reset(grace)
		case <-kill.C:
			for _, w := range all {
				w.cmd.Process.Kill()
			}
		}
	}
	show()
	if stopped {
		fmt.Fprintf(stdout, "\nstopped after %s; the table so far:\n", time.Since(start).Round(100*time.Millisecond))
	}

	var res []fleetResult
	var errs []error
	for _, s := range sides {
		r := s.result(limit)
		r.StorePing = pings[s]
		res = append(res, r)
		for _, w := range s.workers {
			if err := w.cmd.Wait(); err != nil {
				errs = append(errs, fmt.Errorf("%s, worker %d: %w%s", s.name, w.id, err, w.error()))
			} else if w.final == nil {
				errs = append(errs, fmt.Errorf("%s, worker %d: ended without its tallies%s", s.name, w.id, w.error()))
			}
		}
	}
	all = nil
	if len(errs) > 0 && !stopped {
		return res, errors.Join(errs...)
	}
	return res, nil
}

// startWorker starts one worker process: the demo's own binary with the
// spec in its environment.
func startWorker(exe string, spec workerSpec, stderr io.Writer) (*fleetWorker, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"="+string(b))
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting worker %d: %w", spec.ID, err)
	}
	w := &fleetWorker{id: spec.ID, cmd: cmd, stdin: stdin, ready: make(chan workerReport, 1), done: make(chan struct{})}
	go w.read(out)
	return w, nil
}

// read takes in the worker's reports until its stdout ends.
func (w *fleetWorker) read(out io.Reader) {
	defer close(w.done)
	lines := bufio.NewScanner(out)
	lines.Buffer(make([]byte, 64<<10), 64<<20)
	for lines.Scan() {
		var r workerReport
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			w.mu.Lock()
			w.bad = fmt.Errorf("unreadable report %.80q: %w", lines.Text(), err)
			w.mu.Unlock()
			continue
		}
		w.mu.Lock()
		switch r.Kind {
		case "ready":
			select {
			case w.ready <- r:
			default:
			}
		case "progress":
			w.last = r
		case "final":
			w.last, w.final = r, &r
		}
		w.mu.Unlock()
	}
	if err := lines.Err(); err != nil {
		w.mu.Lock()
		w.bad = err
		w.mu.Unlock()
	}
}

// error returns ": " and what went wrong reading the worker, or "".
func (w *fleetWorker) error() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bad == nil {
		return ""
	}
	return ": " + w.bad.Error()
}

// progressLine renders the fleet's live line: its workers' newest
// reports added up.
func (s *fleetSide) progressLine(elapsed time.Duration) string {
	var sum workerReport
	shared := 0
	for _, w := range s.workers {
		w.mu.Lock()
		r := w.last
		w.mu.Unlock()
		sum.Calls += r.Calls
		sum.OK += r.OK
		sum.Failed += r.Failed
		sum.Attempts += r.Attempts
		sum.RateLimited += r.RateLimited
		sum.Rate += r.Rate
		if r.Shared {
			shared++
		}
	}
	store := "-"
	if s.store {
		store = fmt.Sprintf("shared %d/%d", shared, len(s.workers))
	}
	procs := "processes"
	if len(s.workers) == 1 {
		procs = "process  "
	}
	return fmt.Sprintf("%-13s %5.1fs  %2d %s  calls %5d  ok %5d  failed %4d  %5.1f ok/s  429s %5d = %5s of attempts  store %s",
		s.name, elapsed.Seconds(), len(s.workers), procs, sum.Calls, sum.OK, sum.Failed, sum.Rate, sum.RateLimited,
		percent(sum.RateLimited, sum.Attempts), store)
}

// result adds up the workers' final tallies.
func (s *fleetSide) result(limit float64) fleetResult {
	r := fleetResult{Name: s.name, Store: s.store, Processes: len(s.workers), Limit: limit, Provider: s.provider.Stats()}
	var lat []time.Duration
	var oks []int
	for _, w := range s.workers {
		w.mu.Lock()
		f := w.final
		w.mu.Unlock()
		if f == nil {
			continue
		}
		r.Reported++
		r.Calls += f.Calls
		r.OK += f.OK
		r.Failed += f.Failed
		r.Attempts += f.Attempts
		r.RateLimited += f.RateLimited
		r.Retries += f.Retries
		r.Goodput += f.Goodput
		r.Fallbacks += f.Fallbacks
		oks = append(oks, f.OK)
		for _, us := range f.Latencies {
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
		for len(r.Accepted) < len(f.Accepted) {
			r.Accepted = append(r.Accepted, 0)
		}
		for i, n := range f.Accepted {
			r.Accepted[i] += n
		}
	}
	r.MaxShareDev = maxShareDeviation(oks)
	slices.Sort(lat)
	r.P50, r.P99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return r
}

// maxShareDeviation returns how far the largest or smallest of the
// processes' counts is from an equal share of their sum, as a fraction of
// that share; 0 when there is nothing to share.
func maxShareDeviation(counts []int) float64 {
	total := 0
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return 0
	}
	equal := float64(total) / float64(len(counts))
	dev := 0.0
	for _, n := range counts {
		dev = max(dev, math.Abs(float64(n)-equal)/equal)
	}
	return dev
}

// writeFleetTable writes the fleets' results side by side.
func writeFleetTable(w io.Writer, res []fleetResult) error {
	tw, line := sideBySide(w, res)
	line("fleet", func(r fleetResult) string { return r.Name })
	line("processes", func(r fleetResult) string {
		if r.Reported != r.Processes {
			return fmt.Sprintf("%d (%d reported)", r.Processes, r.Reported)
		}
		return fmt.Sprint(r.Processes)
	})
	line("goodput", func(r fleetResult) string {
		return fmt.Sprintf("%.1f/s = %.0f%% of limit", r.Goodput, 100*r.Goodput/r.Limit)
	})
	line("calls ok", func(r fleetResult) string { return fmt.Sprint(r.OK) })
	line("calls failed", func(r fleetResult) string { return fmt.Sprint(r.Failed) })
	line("upstream attempts", func(r fleetResult) string { return fmt.Sprint(r.Attempts) })
	line("429s", func(r fleetResult) string {
		return fmt.Sprintf("%d = %s of attempts", r.RateLimited, percent(r.RateLimited, r.Attempts))
	})
	line("retries", func(r fleetResult) string { return fmt.Sprint(r.Retries) })
	line("share of ok calls per process", func(r fleetResult) string {
		if r.OK == 0 || r.Reported < 2 {
			return "-"
		}
		return fmt.Sprintf("within ±%.1f%% of equal", 100*r.MaxShareDev)
	})
	line("p50 latency (ok calls)", func(r fleetResult) string { return fmtDur(r.P50) })
	line("p99 latency (ok calls)", func(r fleetResult) string { return fmtDur(r.P99) })
	line("requests the provider received", func(r fleetResult) string { return fmt.Sprint(r.Provider.Requests) })
	line("most admitted in a window", func(r fleetResult) string { return fmt.Sprint(r.Provider.MaxRequestsInWindow) })
	line("store: Redis answered at start", func(r fleetResult) string {
		if !r.Store {
			return "-"
		}
		return fmt.Sprintf("%d of %d processes", r.StorePing, r.Processes)
	})
	line("store: fell back to local pacing", func(r fleetResult) string {
		if !r.Store {
			return "-"
		}
		return fmt.Sprintf("%d times", r.Fallbacks)
	})
	return tw.Flush()
}

// pingRedis checks that the Redis at url answers.
func pingRedis(ctx context.Context, url string) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	opt.DialerRetries, opt.MaxRetries = 1, -1
	redis.SetLogger(quiet{}) // the error says what went wrong, once
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// quiet is a go-redis logger that drops what it is given.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// redisOutage stops the embedded server at from for d, then restarts it
// empty on the same address.
func redisOutage(ctx context.Context, mr *miniredis.Miniredis, from time.Time, d time.Duration) {
	if !sleepUntil(ctx, from) {
		return
	}
	mr.Close()
	if !sleepUntil(ctx, from.Add(d)) {
		return
	}
	mr.FlushAll()
	mr.Restart()
}

// lockedWriter serializes the writes of several writers into one.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// prefixWriter writes each line with a prefix, for the workers' logs. Its
// mutex guards its own state only: several prefixWriters that share a
// destination share it through a lockedWriter.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	mid    bool // in the middle of a line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for _, c := range b {
		if !p.mid {
			out = append(out, p.prefix...)
			p.mid = true
		}
		out = append(out, c)
		if c == '\n' {
			p.mid = false
		}
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}
