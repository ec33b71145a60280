package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/steadytest"
)

// fleetStart is how the processes of a fleet run start.
type fleetStart int

const (
	// deploy starts every process at once.
	deploy fleetStart = iota
	// rolling starts the processes one after another, evenly over the
	// first third of the run, as a rolling restart brings them up.
	rolling
	// steadyState starts every process at once and measures only the
	// last two thirds of the run.
	steadyState
)

// String names the start for tables.
func (s fleetStart) String() string {
	switch s {
	case deploy:
		return "deploy"
	case rolling:
		return "rolling"
	case steadyState:
		return "steady state"
	}
	return "FleetStart(" + strconv.Itoa(int(s)) + ")"
}

// fleetStore is how the processes of a fleet share their pacing.
type fleetStore int

const (
	// noStore: every process paces alone.
	noStore fleetStore = iota
	// oneStore: every process shares one steadyredis store (one prefix).
	oneStore
	// twoStores: half the processes share one prefix, half another, as
	// two services sharing a key, each with its own store.
	twoStores
)

// String names the store mode for tables.
func (s fleetStore) String() string {
	switch s {
	case noStore:
		return "no store"
	case oneStore:
		return "store"
	case twoStores:
		return "two stores"
	}
	return "FleetStore(" + strconv.Itoa(int(s)) + ")"
}

// fleetFault is what happens to the store's Redis during a run.
type fleetFault int

const (
	// noFault leaves Redis alone.
	noFault fleetFault = iota
	// redisKilled kills Redis (SIGKILL) a quarter into the run, and
	// restarts it empty one window (at least 2 s) later.
	redisKilled
	// redisPaused stops Redis (SIGSTOP) a quarter into the run for 1 s,
	// forty times the store's default timeout, then lets it go on.
	redisPaused
)

// String names the fault for tables.
func (f fleetFault) String() string {
	switch f {
	case noFault:
		return "none"
	case redisKilled:
		return "Redis killed, restarted empty"
	case redisPaused:
		return "Redis paused"
	}
	return "FleetFault(" + strconv.Itoa(int(f)) + ")"
}

// The clients a fleet's processes can run.
const (
	fleetBare       = "bare SDK"
	fleetMiddleware = "steady (middleware)"
	fleetTransport  = "steady (transport)"
)

// fleetCase is one run of a fleet of real OS processes on loopback against
// one simulated provider (steadytest, served on 127.0.0.1): its limit, the
// fleet's size and client, how it starts, how it shares its pacing, and
// what happens to the store.
type fleetCase struct {
	Name     string
	Provider steadytest.ProviderConfig // the limits, their algorithm and dialect, the latency
	// Processes is the fleet's size. Zero means one.
	Processes int
	// Client is fleetBare, fleetMiddleware or fleetTransport. Empty means
	// fleetMiddleware.
	Client string
	Start  fleetStart
	Store  fleetStore
	// Outside adds a process without steady that sends at a third of the
	// limit, without retries, beside the fleet.
	Outside bool
	Fault   fleetFault
	// Duration is the run's length under sustained load; for a batch
	// (Calls > 0), the most it may take.
	Duration time.Duration
	// Calls, when positive, makes the run a batch: this many calls in all,
	// split evenly over the processes, each process's callers taking them
	// one after another.
	Calls int
	// Offered is the sustained load the fleet offers, a multiple of the
	// limit. Zero means 3.
	Offered float64
	// Callers is the callers per process. Zero means 8.
	Callers int
	// CallTimeout is each call's deadline. Zero means one minute.
	CallTimeout time.Duration
}

func (c fleetCase) processes() int { return max(c.Processes, 1) }

func (c fleetCase) client() string {
	if c.Client == "" {
		return fleetMiddleware
	}
	return c.Client
}

func (c fleetCase) callers() int {
	if c.Callers <= 0 {
		return 8
	}
	return c.Callers
}

func (c fleetCase) offered() float64 {
	if c.Offered <= 0 {
		return 3
	}
	return c.Offered
}

func (c fleetCase) callTimeout() time.Duration {
	if c.CallTimeout <= 0 {
		return time.Minute
	}
	return c.CallTimeout
}

func (c fleetCase) window() time.Duration {
	if c.Provider.Window <= 0 {
		return time.Minute
	}
	return c.Provider.Window
}

// The fleet's request: a short prompt and a small completion budget, so
// that a token-bound limit binds at a known cost (see fleetCost).
const (
	fleetPrompt    = "Say ok."
	fleetMaxTokens = 64
)

// fleetCost is the tokens one request of the fleet counts against a
// tokens limit, as steadytest counts them.
func fleetCost() int { return (len(fleetPrompt)+3)/4 + fleetMaxTokens }

// RequestRate is the most requests per second the limit admits in the
// long run: the requests limit, or the tokens limit divided by what one
// request of the fleet costs, whichever binds.
func (c fleetCase) RequestRate() float64 {
	n := math.Inf(1)
	if r := c.Provider.RequestsPerWindow; r > 0 {
		n = float64(r)
	}
	if t := c.Provider.TokensPerWindow; t > 0 {
		n = min(n, math.Floor(float64(t)/float64(fleetCost())))
	}
	return n / c.window().Seconds()
}

// perWindow is how many requests the limit admits per window.
func (c fleetCase) perWindow() int {
	return int(math.Round(c.RequestRate() * c.window().Seconds()))
}

// Minimum is a batch's physical minimum makespan, from a start at start:
// the time at which the quota can admit its last call, plus one answer's
// latency.
func (c fleetCase) Minimum(start time.Time) time.Duration {
	if c.Calls <= 0 {
		return 0
	}
	kind := kindSliding
	switch c.Provider.Algorithm {
	case steadytest.TokenBucket:
		kind = kindBucket
	case steadytest.FixedWindow:
		kind = kindFixed
	}
	b := batch{Limit: limitSpec{Kind: kind, Requests: c.perWindow(), Window: c.window(), Latency: c.Provider.Latency},
		Calls: c.Calls, Pattern: pattern{Workers: c.callers() * c.processes()}}
	return b.Minimum(start)
}

// fleetSample is what the provider counted in one second of a run.
type fleetSample struct {
	Requests, Accepted, RateLimited int64
}

// fleetProcess is one process's tallies.
type fleetProcess struct {
	Calls, OK, Failed, Attempts, RateLimited int
	Fallbacks, Rejoins                       int  // the store's changes
	EventFallbacks                           int  // its partitions' EventStore fallbacks
	StorePing                                bool // Redis answered when it started
}

// fleetOutcome is what a fleet run measured. The fleet's figures leave
// out the outside consumer, whose own are in Outside.
type fleetOutcome struct {
	Case                                     fleetCase
	Calls, OK, Failed, Attempts, RateLimited int
	// Errors counts the failed calls by cause.
	Errors map[string]int
	// Goodput is the fleet's ok calls per second over the measured span
	// (whole windows, for fixed windows), as a fraction of RequestRate.
	Goodput float64
	// Spread is how far the process furthest from an equal share of the
	// fleet's ok calls is from it, as a fraction of that share.
	Spread float64
	// Makespan and Minimum are a batch's time from the start to the end of
	// its last call, and the quota's minimum for it.
	Makespan, Minimum time.Duration
	Processes         []fleetProcess
	Outside           *fleetProcess
	// Samples is the provider's count, second by second from the start.
	Samples []fleetSample
	// SecLimited is the fleet's 429s, second by second from the start.
	SecLimited []int
	Wall       time.Duration
}

// LimitedShare is the share of the fleet's attempts answered 429.
func (o fleetOutcome) LimitedShare() float64 {
	if o.Attempts == 0 {
		return 0
	}
	return float64(o.RateLimited) / float64(o.Attempts)
}

// Ratio is a batch's makespan as a multiple of its minimum.
func (o fleetOutcome) Ratio() float64 {
	if o.Minimum <= 0 {
		return 0
	}
	return o.Makespan.Seconds() / o.Minimum.Seconds()
}

// fleetRedis is the Redis that fleet runs with a store use, unless a fault
// needs a server of their own.
const fleetRedis = "redis://127.0.0.1:6379"

// fleetRedisReady says why a fleet with a store cannot run here, or nil:
// the Redis at fleetRedis answers, and, for faults, redis-server is on
// the PATH (a fault run starts its own server, never touching the shared
// one).
func fleetRedisReady(fault fleetFault) error {
	if fault != noFault {
		if _, err := exec.LookPath("redis-server"); err != nil {
			return fmt.Errorf("a Redis fault needs redis-server on the PATH to run a server of its own: %w", err)
		}
		return nil
	}
	return pingRedis(fleetRedis)
}

func pingRedis(url string) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	opt.DialerRetries, opt.MaxRetries = 1, -1
	redis.SetLogger(quietRedis{})
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("no Redis answers at %s: %w", url, err)
	}
	return nil
}

// runFleet runs c: it serves a fresh provider on loopback, starts the
// fleet's processes (this binary again, which must call fleetWorker
// first thing), samples the provider every second, injects the fault, and
// adds up what the processes report. Workers' stderr goes to logs.
func runFleet(ctx context.Context, c fleetCase, logs io.Writer) (fleetOutcome, error) {
	wallStart := time.Now()
	out := fleetOutcome{Case: c, Errors: map[string]int{}}
	exe, err := os.Executable()
	if err != nil {
		return out, fmt.Errorf("bench: finding this binary for the fleet's workers: %w", err)
	}
	n := c.processes()
	switch {
	case c.Duration <= 0:
		return out, errors.New("bench: a fleet run needs a positive Duration")
	case c.Store != noStore && c.client() == fleetBare:
		return out, errors.New("bench: the bare SDK has no store")
	case c.Fault != noFault && c.Store == noStore:
		return out, errors.New("bench: a Redis fault needs a store")
	case c.Store == twoStores && n < 2:
		return out, errors.New("bench: two stores need two processes at least")
	}

	// The provider, on loopback.
	prov := steadytest.NewProvider(c.Provider)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return out, err
	}
	srv := &http.Server{Handler: prov, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	baseURL := "http://" + ln.Addr().String() + "/v1/"

	// The store's Redis.
	redisURL := fleetRedis
	var own *redisServer
	if c.Store != noStore {
		if c.Fault != noFault {
			if own, err = startRedisServer(); err != nil {
				return out, err
			}
			defer own.stop()
			redisURL = own.url()
		}
		if err := pingRedis(redisURL); err != nil {
			return out, err
		}
	}
	prefix := fmt.Sprintf("steady-bench:%d:", time.Now().UnixNano())
	if c.Store != noStore && own == nil {
		defer deletePrefix(redisURL, prefix)
	}

	// Timing: the start on a whole second, so that the per-second tallies
	// line up with fixed windows.
	buckets := int(c.Duration/time.Second) + 2
	perProc := c.offered() * c.RequestRate() / float64(n)
	callers := c.callers()
	interval := time.Duration(float64(callers) / perProc * float64(time.Second))

	var workers []*fleetProc
	defer func() {
		for _, w := range workers {
			w.stdin.Close()
		}
		for _, w := range workers {
			w.cmd.Wait()
		}
	}()
	spawn := func(spec fleetSpec) error {
		spec.BaseURL, spec.Buckets, spec.CallTimeout = baseURL, buckets, c.callTimeout()
		spec.MaxTokens, spec.Prompt = fleetMaxTokens, fleetPrompt
		w, err := startFleetProc(exe, spec, logs)
		if err != nil {
			return err
		}
		workers = append(workers, w)
		return nil
	}
	clientOf := map[string]string{fleetBare: workerBare, fleetMiddleware: workerMiddleware, fleetTransport: workerTransport}
	for i := range n {
		spec := fleetSpec{ID: i, Client: clientOf[c.client()], Callers: callers, Interval: interval, FleetHint: n}
		if c.Calls > 0 {
			spec.Calls = c.Calls / n
			if i < c.Calls%n {
				spec.Calls++
			}
		}
		switch c.Store {
		case oneStore:
			spec.Redis, spec.Prefix = redisURL, prefix
		case twoStores:
			spec.Redis, spec.Prefix, spec.FleetHint = redisURL, prefix+strconv.Itoa(i%2)+":", (n+1-i%2)/2
		}
		if err := spawn(spec); err != nil {
			return out, err
		}
	}
	if c.Outside {
		if err := spawn(fleetSpec{ID: n, Client: workerOutside, Callers: 1, Rate: c.RequestRate() / 3}); err != nil {
			return out, err
		}
	}
	readyBy := time.NewTimer(time.Minute)
	defer readyBy.Stop()
	for _, w := range workers {
		select {
		case r := <-w.ready:
			w.ping = r.StorePing
		case <-w.done:
			return out, fmt.Errorf("bench: fleet worker %d exited before it was ready%s", w.id, w.error())
		case <-readyBy.C:
			return out, fmt.Errorf("bench: fleet worker %d not ready after a minute", w.id)
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	start := time.Now().Add(500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	end := start.Add(c.Duration)
	for i, w := range workers {
		from := start
		if c.Start == rolling && i < n && n > 1 {
			from = start.Add(c.Duration / 3 * time.Duration(i) / time.Duration(n-1))
		}
		fmt.Fprintf(w.stdin, "start %d %d %d\n", start.UnixNano(), from.UnixNano(), end.UnixNano())
	}

	// The provider's count every second, and the fault.
	var bg sync.WaitGroup
	bgCtx, bgStop := context.WithCancel(ctx)
	defer bg.Wait()
	defer bgStop()
	samples := make(chan []fleetSample, 1)
	bg.Go(func() { samples <- sampleProvider(bgCtx, prov, start, buckets) })
	if own != nil {
		bg.Go(func() { injectFault(bgCtx, own, c, start.Add(c.Duration/4), logs) })
	}

	// Every worker's final report.
	kill := time.NewTimer(time.Until(end.Add(c.callTimeout() + 15*time.Second)))
	defer kill.Stop()
	for _, w := range workers {
		select {
		case <-w.done:
		case <-kill.C:
			for _, w := range workers {
				w.cmd.Process.Kill()
			}
			<-w.done
		case <-ctx.Done():
			for _, w := range workers {
				w.cmd.Process.Kill()
			}
			return out, ctx.Err()
		}
	}
	bgStop()
	out.Samples = <-samples

	var errs []error
	var oks []int
	lo := 0 // the measured span [lo, hi), in seconds from the start
	if c.Start == steadyState {
		lo = int(c.Duration / 3 / time.Second)
	}
	hi := int(c.Duration / time.Second)
	if w := int(c.window() / time.Second); c.Provider.Algorithm == steadytest.FixedWindow && w > 0 && c.Calls == 0 {
		// Whole fixed windows only (they are aligned on the epoch).
		s := int(start.Unix())
		lo += ((w - (s+lo)%w) % w)
		hi -= (s + hi) % w
	}
	measuredOK := 0
	out.SecLimited = make([]int, buckets)
	for _, w := range workers {
		f := w.final
		if f == nil {
			errs = append(errs, fmt.Errorf("bench: fleet worker %d ended without its tallies%s", w.id, w.error()))
			continue
		}
		p := fleetProcess{Calls: f.Calls, OK: f.OK, Failed: f.Failed, Attempts: f.Attempts, RateLimited: f.RateLimited,
			Fallbacks: f.Fallbacks, Rejoins: f.Rejoins, EventFallbacks: f.EventFallbacks, StorePing: w.ping}
		if w.id == n {
			out.Outside = &p
			continue
		}
		out.Processes = append(out.Processes, p)
		out.Calls += f.Calls
		out.OK += f.OK
		out.Failed += f.Failed
		out.Attempts += f.Attempts
		out.RateLimited += f.RateLimited
		for k, v := range f.Errors {
			out.Errors[k] += v
		}
		for i, v := range f.SecLimited {
			if i < len(out.SecLimited) {
				out.SecLimited[i] += v
			}
		}
		ok := 0
		for i := lo; i < min(hi, len(f.SecOK)); i++ {
			ok += f.SecOK[i]
		}
		measuredOK += ok
		oks = append(oks, ok)
		if c.Calls > 0 {
			out.Makespan = max(out.Makespan, f.LastEnd)
		}
	}
	if c.Calls > 0 {
		out.Minimum = c.Minimum(start)
		oks = oks[:0]
		for _, p := range out.Processes {
			oks = append(oks, p.OK)
		}
		if out.Makespan > 0 {
			out.Goodput = float64(out.OK) / out.Makespan.Seconds() / c.RequestRate()
		}
	} else if hi > lo {
		out.Goodput = float64(measuredOK) / float64(hi-lo) / c.RequestRate()
	}
	out.Spread = maxShareDeviation(oks)
	out.Wall = time.Since(wallStart)
	for _, w := range workers {
		if err := w.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("bench: fleet worker %d: %w%s", w.id, err, w.error()))
		}
	}
	workers = nil
	return out, errors.Join(errs...)
}

// maxShareDeviation returns how far the largest or smallest of counts is
// from an equal share of their sum, as a fraction of that share; 0 when
// there is nothing to share.
func maxShareDeviation(counts []int) float64 {
	total := 0
	for _, n := range counts {
		total += n
	}
	if total == 0 || len(counts) < 2 {
		return 0
	}
	equal := float64(total) / float64(len(counts))
	dev := 0.0
	for _, n := range counts {
		dev = max(dev, math.Abs(float64(n)-equal)/equal)
	}
	return dev
}

// sampleProvider reads the provider's counters every second from start,
// until ctx is done, and returns what each second added.
func sampleProvider(ctx context.Context, p *steadytest.Provider, start time.Time, buckets int) []fleetSample {
	var out []fleetSample
	prev := p.Stats()
	for i := 1; ; i++ {
		if !sleepUntil(ctx, start.Add(time.Duration(i)*time.Second)) {
			return out
		}
		s := p.Stats()
		out = append(out, fleetSample{Requests: s.Requests - prev.Requests, Accepted: s.Accepted - prev.Accepted, RateLimited: s.RateLimited - prev.RateLimited})
		prev = s
		if i >= buckets+60 {
			return out
		}
	}
}

// injectFault does c.Fault to the run's own Redis at from.
func injectFault(ctx context.Context, r *redisServer, c fleetCase, from time.Time, logs io.Writer) {
	if !sleepUntil(ctx, from) {
		return
	}
	switch c.Fault {
	case redisKilled:
		r.kill()
		if !sleepUntil(ctx, time.Now().Add(max(c.window(), 2*time.Second))) {
			return
		}
		if err := r.restart(); err != nil {
			fmt.Fprintf(logs, "bench: restarting Redis: %v\n", err)
		}
	case redisPaused:
		r.cmd.Process.Signal(syscall.SIGSTOP)
		sleepUntil(context.Background(), time.Now().Add(time.Second))
		r.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// redisServer is a redis-server of a run's own, on a free loopback port,
// without persistence: a restart is empty.
type redisServer struct {
	port int
	cmd  *exec.Cmd
}

func startRedisServer() (*redisServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r := &redisServer{port: port}
	return r, r.restart()
}

func (r *redisServer) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) }

func (r *redisServer) restart() error {
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: starting redis-server: %w", err)
	}
	r.cmd = cmd
	for range 100 {
		if pingRedis(r.url()) == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("bench: redis-server on port %d does not answer", r.port)
}

func (r *redisServer) kill() {
	if r.cmd != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

func (r *redisServer) stop() { r.kill() }

// deletePrefix deletes a run's keys from the shared Redis.
func deletePrefix(url, prefix string) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	it := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for it.Next(ctx) {
		c.Del(ctx, it.Val())
	}
}

// fleetProc is one worker process as the parent sees it.
type fleetProc struct {
	id    int
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ready chan fleetReport
	done  chan struct{} // closed when its stdout ends
	ping  bool

	mu    sync.Mutex
	final *fleetReport // guarded by mu until done
	bad   error        // guarded by mu
}

func startFleetProc(exe string, spec fleetSpec, logs io.Writer) (*fleetProc, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	// One OS thread of Go code per worker: a fleet of 16 on two cores.
	cmd.Env = append(os.Environ(), fleetWorkerEnv+"="+string(b), "GOMAXPROCS=1")
	cmd.Stderr = logs
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting fleet worker %d: %w", spec.ID, err)
	}
	w := &fleetProc{id: spec.ID, cmd: cmd, stdin: stdin, ready: make(chan fleetReport, 1), done: make(chan struct{})}
	go w.read(stdout)
	return w, nil
}

func (w *fleetProc) read(r io.Reader) {
	defer close(w.done)
	lines := bufio.NewScanner(r)
	lines.Buffer(make([]byte, 64<<10), 16<<20)
	for lines.Scan() {
		var rep fleetReport
		if err := json.Unmarshal(lines.Bytes(), &rep); err != nil {
			w.mu.Lock()
			w.bad = fmt.Errorf("unreadable report %.80q: %w", lines.Text(), err)
			w.mu.Unlock()
			continue
		}
		switch rep.Kind {
		case "ready":
			w.ready <- rep
		case "final":
			w.mu.Lock()
			w.final = &rep
			w.mu.Unlock()
		}
	}
}

func (w *fleetProc) error() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bad == nil {
		return ""
	}
	return ": " + w.bad.Error()
}

// describe is a fleet case in a few words, for logs and tables.
func (c fleetCase) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d× %s, %s, %s", c.processes(), c.client(), c.Store, c.Start)
	if c.Outside {
		b.WriteString(", outside consumer")
	}
	if c.Fault != noFault {
		b.WriteString(", " + c.Fault.String())
	}
	return b.String()
}
