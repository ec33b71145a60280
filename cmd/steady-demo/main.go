// Command steady-demo runs the same chat workload through the bare OpenAI
// Go SDK, through the SDK with steady's defaults, and with steady holding
// calls during an outage (BreakerConfig.Hold), side by side, against
// simulated rate-limited providers in the same process: no API key, no
// network. It is its own module, so that it can show optional
// integrations; from the repository's root:
//
//	go -C cmd/steady-demo run .
//	go -C cmd/steady-demo run . -plot steady.svg
//
// The run offers well above the rate limit, then switches the providers to
// an outage (every request fails with 503), then lets them recover. A live
// line per client shows progress; the end prints a side-by-side table.
// Ctrl-C stops early and prints the table so far.
//
// With -base-url and OPENAI_API_KEY, the steady side talks to a real
// OpenAI-compatible endpoint instead of its simulated provider (no outage
// is injected there). With -metrics :9464, the steady side's metrics are
// served at /metrics for Prometheus while the demo runs.
//
// With -fleet N, the demo runs two fleets of N worker processes (its own
// binary, started again) side by side, each on one simulated provider
// served on loopback, one key for the whole fleet: in one fleet every
// process paces alone, in the other every process shares its pacing
// through a steadyredis store, on an embedded Redis-compatible server or
// the one -redis names:
//
//	go -C cmd/steady-demo run . -fleet 4
//	go -C cmd/steady-demo run . -fleet 16 -plot fleet.svg
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady"
)

// options are the command's flags.
type options struct {
	Duration    time.Duration
	Concurrency int
	Requests    int
	Tokens      int
	Window      time.Duration
	Offered     float64
	Outage      time.Duration
	Latency     time.Duration
	Timeout     time.Duration
	Dialect     string
	Algorithm   string
	Plot        string
	BaseURL     string
	Model       string
	Interval    time.Duration
	Metrics     string
	Fleet       int
	Redis       string
	RedisOutage time.Duration
	Dead        bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("steady-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.Duration, "duration", 45*time.Second, "length of the whole run")
	fs.IntVar(&o.Concurrency, "concurrency", 32, "concurrent callers per client")
	fs.IntVar(&o.Requests, "requests", 100, "provider limit: requests per window")
	fs.IntVar(&o.Tokens, "tokens", 0, "provider limit: tokens per window (0: none)")
	fs.DurationVar(&o.Window, "window", 10*time.Second, "provider limit window")
	fs.Float64Var(&o.Offered, "offered", 3, "offered load, as a multiple of the requests limit")
	fs.DurationVar(&o.Outage, "outage", 10*time.Second, "length of the outage, starting half way through (0: none)")
	fs.DurationVar(&o.Latency, "latency", 50*time.Millisecond, "provider time to answer a request")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Second, "deadline of one call, retries included")
	fs.StringVar(&o.Dialect, "dialect", "ietf", "rate-limit header dialect: "+strings.Join(dialectNames(), ", ")+
		"; with none, steady learns the limit from the first 429 but not the window's length, which it takes for a minute: use -window 1m -duration 5m -outage 1m")
	fs.StringVar(&o.Algorithm, "algorithm", "sliding-window", "how the provider counts its limits: sliding-window or token-bucket")
	fs.StringVar(&o.Plot, "plot", "", "write an SVG chart of accepted requests per second to this file")
	fs.StringVar(&o.BaseURL, "base-url", "", "run the steady side against this OpenAI-compatible endpoint (needs OPENAI_API_KEY)")
	fs.StringVar(&o.Model, "model", "gpt-5.4-mini", "model named in each request")
	fs.DurationVar(&o.Interval, "progress", 0, "progress interval (0: 250ms on a terminal, 5s otherwise)")
	fs.StringVar(&o.Metrics, "metrics", "", "serve the steady side's metrics for Prometheus at this address's /metrics (such as :9464)")
	fs.IntVar(&o.Fleet, "fleet", 0, "run a fleet of this many worker processes on one provider, without and with a shared store (see -redis)")
	fs.StringVar(&o.Redis, "redis", "", "with -fleet: the Redis the store uses, as redis://host:port (default: an embedded Redis-compatible server)")
	fs.DurationVar(&o.RedisOutage, "redis-outage", 0, "with -fleet and the embedded server: stop it this long half way through, then restart it empty")
	fs.BoolVar(&o.Dead, "dead-upstream", false, "with -fleet: the providers answer 503 to everything, and a third column shows one process alone")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.Fleet != 0 {
		if err := fleetDefaults(fs, &o); err != nil {
			return o, err
		}
	} else if o.Redis != "" || o.RedisOutage != 0 || o.Dead {
		return o, errors.New("-redis, -redis-outage and -dead-upstream need -fleet")
	}
	switch {
	case o.Duration <= 0:
		return o, errors.New("-duration must be positive")
	case o.Concurrency <= 0:
		return o, errors.New("-concurrency must be positive")
	case o.Requests <= 0 || o.Window <= 0:
		return o, errors.New("-requests and -window must be positive")
	case o.Offered <= 0:
		return o, errors.New("-offered must be positive")
	case o.Outage < 0 || o.Outage >= o.Duration/2:
		return o, errors.New("-outage must be between 0 and half of -duration")
	case o.Timeout <= 0:
		return o, errors.New("-timeout must be positive")
	}
	if !validDialect(o.Dialect) {
		return o, fmt.Errorf("-dialect %q: want one of %s", o.Dialect, strings.Join(dialectNames(), ", "))
	}
	if _, err := parseAlgorithm(o.Algorithm); err != nil {
		return o, fmt.Errorf("-algorithm: %w", err)
	}
	return o, nil
}

func main() {
	if spec := os.Getenv(workerEnv); spec != "" {
		os.Exit(workerMain(spec, os.Stdin, os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := demo(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "steady-demo:", err)
		stop()
		os.Exit(2)
	}
}

// demo runs the whole command: flags, workload, progress, table, plot.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.Fleet > 0 {
		return runFleet(ctx, o, stdout, stderr)
	}
	p := plan{
		Duration:    o.Duration,
		Concurrency: o.Concurrency,
		Offered:     o.Offered * float64(o.Requests) / o.Window.Seconds(),
		CallTimeout: o.Timeout,
		Model:       o.Model,
		MaxTokens:   64,
	}
	if o.Outage > 0 {
		p.OutageStart = o.Duration / 2
		p.OutageEnd = p.OutageStart + o.Outage
	}
	pcfg := providerConfig{Requests: o.Requests, Tokens: o.Tokens, Window: o.Window, Dialect: o.Dialect, Algorithm: o.Algorithm, Latency: o.Latency}
	start := time.Now()
	clients, err := newClients(pcfg, o, start)
	if err != nil {
		return err
	}
	limit := float64(o.Requests) / o.Window.Seconds()
	outage := "no outage"
	if o.Outage > 0 {
		outage = fmt.Sprintf("outage %s at %s", o.Outage, p.OutageStart)
	}
	fmt.Fprintf(stdout, "limit %d requests per %s (%.1f/s), offered %.1f/s from %d callers per client, %s; Ctrl-C stops early\n",
		o.Requests, o.Window, limit, p.Offered, o.Concurrency, outage)
	fmt.Fprintln(stdout, "steady: steady.New(steady.Config{}), the library's defaults, as SDK middleware (OnEvent set, to count)")
	if o.BaseURL != "" {
		fmt.Fprintf(stdout, "the steady side calls %s: its limits are that endpoint's, and no outage is injected there\n", o.BaseURL)
	} else {
		fmt.Fprintln(stdout, "steady hold: the same, with Breaker.Hold set: calls meeting an open circuit wait for recovery when their deadline allows")
	}
	fmt.Fprintf(stdout, "every call has a %s deadline; the bare SDK keeps its defaults (2 retries)\n", o.Timeout)
	if o.Metrics != "" {
		ms, err := serveMetrics(o.Metrics, clients[1].steady)
		if err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		defer ms.close()
		fmt.Fprintf(stdout, "metrics of the steady side (OpenTelemetry, Prometheus format) served at %s while the demo runs\n", ms.URL)
	}

	// Progress, until the run ends.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { showProgress(stdout, isTerminal(stdout), o.Interval, start, p, clients, done) })
	tl := run(ctx, p, clients)
	close(done)
	wg.Wait()

	if ctx.Err() != nil {
		fmt.Fprintf(stdout, "\nstopped after %s; the table so far:\n", tl.End.Round(100*time.Millisecond))
	}
	rows := make([]summary, len(clients))
	for i, c := range clients {
		rows[i] = c.rec.summarize(tl, limit, o.Window)
		if c.upstream != nil {
			rows[i].MaxInWindow = c.upstream.maxInWindow()
		} else {
			rows[i].Limit = 0 // a real endpoint's limit is not known here
		}
	}
	fmt.Fprintln(stdout)
	if err := writeTable(stdout, rows); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nThe limit is %d requests per %s. Goodput counts successful calls over the whole windows of the overload.\n"+
		"steady paces calls under the limit the provider announces, so they wait their turn instead of\n"+
		"failing with 429s and retrying; during the outage its circuit breaker stops calls from reaching\n"+
		"the provider: failing them at once (steady), or holding them until it recovers (steady hold).\n\n", o.Requests, o.Window)
	for _, n := range explain(rows) {
		fmt.Fprintln(stdout, n)
	}
	if o.Plot != "" {
		if err := savePlot(o.Plot, chartOf(rows, tl, p, limit, o.Window)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "chart written to %s\n", o.Plot)
	}
	return nil
}

// newClients builds the sides: the bare SDK, the SDK with steady's
// defaults (failing fast on an open circuit), and with Hold set; each with
// its own simulated provider and a counting transport between them.
func newClients(pcfg providerConfig, o options, start time.Time) ([]*client, error) {
	bareUp, err := newProvider(pcfg)
	if err != nil {
		return nil, err
	}
	bare := &client{name: "bare SDK", upstream: bareUp, rec: newRecorder("bare SDK", start, time.Second)}
	bare.sdk = openai.NewClient(
		option.WithBaseURL("http://bare.provider.invalid/v1/"),
		option.WithAPIKey("sk-demo"),
		option.WithHTTPClient(&http.Client{Transport: &counting{next: bareUp, rec: bare.rec}}),
	)

	st, err := steadyClient("steady", steady.Config{}, pcfg, o, start)
	if err != nil {
		return nil, err
	}
	if o.BaseURL != "" {
		return []*client{bare, st}, nil
	}
	hold, err := steadyClient("steady hold", holdConfig, pcfg, o, start)
	if err != nil {
		return nil, err
	}
	return []*client{bare, st, hold}, nil
}

// holdConfig is the one setting the hold side changes: calls that meet an
// open circuit wait for the upstream's recovery, when their deadline
// allows, instead of failing at once.
var holdConfig = steady.Config{Breaker: steady.BreakerConfig{Hold: true}}

// steadyClient builds an SDK client with steady as middleware, configured
// by cfg (plus OnEvent, to count what steady does), with its own simulated
// provider, or the -base-url endpoint.
func steadyClient(name string, cfg steady.Config, pcfg providerConfig, o options, start time.Time) (*client, error) {
	c := &client{name: name, rec: newRecorder(name, start, time.Second)}
	c.rec.breaker = steady.BreakerClosed.String()
	baseURL, key := "http://steady.provider.invalid/v1/", "sk-demo"
	var next http.RoundTripper
	if o.BaseURL != "" {
		key = os.Getenv("OPENAI_API_KEY")
		if key == "" {
			return nil, errors.New("-base-url needs OPENAI_API_KEY")
		}
		baseURL, next = o.BaseURL, http.DefaultTransport
	} else {
		up, err := newProvider(pcfg)
		if err != nil {
			return nil, err
		}
		c.upstream, next = up, up
	}
	cfg.OnEvent = c.rec.event
	t := steady.New(cfg)
	c.steady = t
	c.sdk = openai.NewClient(
		option.WithBaseURL(baseURL),
		option.WithAPIKey(key),
		option.WithHTTPClient(&http.Client{Transport: &counting{next: next, rec: c.rec}}),
		option.WithMiddleware(t.Middleware),
	)
	return c, nil
}

// showProgress prints a live line per client every interval until done
// is closed: rewritten in place on a terminal, plain lines otherwise.
func showProgress(w io.Writer, tty bool, every time.Duration, start time.Time, p plan, clients []*client, done <-chan struct{}) {
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
		now := time.Now()
		elapsed := min(now.Sub(start), p.Duration)
		var b strings.Builder
		if tty && printed {
			fmt.Fprintf(&b, "\x1b[%dA", len(clients))
		}
		for _, c := range clients {
			line := progressLine(c.rec.progress(now), elapsed, p.phaseAt(elapsed))
			if tty {
				b.WriteString("\r\x1b[2K")
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
		io.WriteString(w, b.String())
		printed = true
	}
	for {
		select {
		case <-done:
			show()
			return
		case <-tick.C:
			show()
		}
	}
}

// isTerminal reports whether w is a character device.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// chartOf turns the summaries into a chart.
func chartOf(rows []summary, tl timeline, p plan, limit float64, window time.Duration) chart {
	c := chart{
		Title:  "Upstream attempts, 429s and accepted requests in each window-long span, against the limit",
		Bucket: time.Second,
		End:    tl.End,
		Limit:  limit,
		Window: window,
	}
	if d := tl.span(phaseOutage); d > 0 {
		c.Outage = period{tl.Start[phaseOutage], tl.Start[phaseOutage] + d}
	}
	for _, r := range rows {
		c.Series = append(c.Series, series{Name: r.Name, Accepted: r.Accepted, Attempts: r.AttemptsPer, Limited: r.LimitedPer, Open: r.OpenPeriods})
	}
	return c
}

func savePlot(path string, c chart) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeSVG(f, c); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
