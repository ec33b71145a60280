package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady"
)

// tinyArgs is a whole run in a few seconds of fake time.
var tinyArgs = []string{
	"-duration", "4s", "-window", "1s", "-requests", "20", "-outage", "1s",
	"-concurrency", "8", "-latency", "10ms", "-timeout", "3s", "-progress", "1s",
}

func TestDemoRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		if err := demo(t.Context(), tinyArgs, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		text := out.String()
		for _, want := range []string{"bare SDK", "steady", "goodput during overload", "attempts during outage", "429s", "p99 latency"} {
			if !strings.Contains(text, want) {
				t.Errorf("output lacks %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, "\r") {
			t.Errorf("progress to a non-terminal uses carriage returns:\n%q", text)
		}
	})
}

func TestDemoStoppedEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(1500*time.Millisecond, cancel)
		var out bytes.Buffer
		start := time.Now()
		if err := demo(ctx, tinyArgs, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("stopping took until %s, want right after the cancel at 1.5s", took)
		}
		if !strings.Contains(out.String(), "stopped after 1.5s") || !strings.Contains(out.String(), "calls ok") {
			t.Errorf("output after a stop lacks the note or the table:\n%s", out.String())
		}
	})
}

func TestRunCountsEveryCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, err := parseFlags(tinyArgs, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		clients, err := newClients(providerConfig{Requests: o.Requests, Window: o.Window, Dialect: o.Dialect, Algorithm: o.Algorithm, Latency: o.Latency}, o, start)
		if err != nil {
			t.Fatal(err)
		}
		p := plan{Duration: 4 * time.Second, OutageStart: 2 * time.Second, OutageEnd: 3 * time.Second,
			Concurrency: 8, Offered: 60, CallTimeout: 3 * time.Second, Model: "gpt-4o-mini"}
		tl := run(t.Context(), p, clients)
		if tl.End != p.Duration || tl.span(phaseOverload) != 2*time.Second || tl.span(phaseOutage) != time.Second {
			t.Fatalf("timeline = %+v, want phases at 0s, 2s, 3s ending at 4s", tl)
		}
		for _, c := range clients {
			s := c.rec.summarize(tl, 20, time.Second)
			if s.OK+s.Failed != s.Calls {
				t.Errorf("%s: ok %d + failed %d != calls %d", s.Name, s.OK, s.Failed, s.Calls)
			}
			if s.OK == 0 {
				t.Errorf("%s: no call succeeded", s.Name)
			}
			if s.Goodput <= 0 || s.Goodput > 20 {
				t.Errorf("%s: goodput %.2f/s, want above 0 and at most the limit, 20/s", s.Name, s.Goodput)
			}
			if got := c.upstream.maxInWindow(); got > 20 {
				t.Errorf("%s: provider admitted %d in one window, limit 20", s.Name, got)
			}
			accepted := 0
			for _, n := range s.Accepted {
				accepted += n
			}
			if accepted != s.OK {
				t.Errorf("%s: %d accepted upstream, %d calls ok", s.Name, accepted, s.OK)
			}
			if s.OutageAttempts == 0 && s.Name == "bare SDK" {
				t.Errorf("bare SDK made no attempt during the outage")
			}
		}
	})
}

func TestWriteTable(t *testing.T) {
	rows := []summary{
		{Name: "bare SDK", Goodput: 8.5, Limit: 10, OK: 170, Failed: 30, Calls: 200, Attempts: 400, RateLimited: 100,
			Retries: 200, P50: 1500 * time.Millisecond, P99: 12340 * time.Millisecond, OutageAttempts: 90, OutageCalls: true, MaxInWindow: 100},
		{Name: "steady", Goodput: 9.87, Limit: 10, OK: 197, Calls: 197, Attempts: 199, RateLimited: 1,
			Retries: 2, P50: 800 * time.Millisecond, P99: 2 * time.Second, OutageAttempts: 3, OutageCalls: true, MaxInWindow: 100},
	}
	var b bytes.Buffer
	if err := writeTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"goodput during overload": {"8.5/s = 85% of limit", "9.9/s = 99% of limit"},
		"calls failed":            {"30", "0"},
		"429s":                    {"100 = 25.0% of attempts", "1 = 0.5% of attempts"},
		"p50 latency (ok calls)":  {"1.5s", "800ms"},
		"p99 latency (ok calls)":  {"12.3s", "2s"},
		"attempts during outage":  {"90", "3"},
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.Contains(lines[0], "bare SDK") || strings.Index(lines[0], "bare SDK") > strings.Index(lines[0], "steady") {
		t.Errorf("header = %q, want the clients in order", lines[0])
	}
	for label, cells := range want {
		found := false
		for _, l := range lines {
			if !strings.HasPrefix(strings.TrimSpace(l), label) {
				continue
			}
			found = true
			rest := strings.TrimSpace(l)[len(label):]
			i := strings.Index(rest, cells[0])
			j := strings.LastIndex(rest, cells[1])
			if i < 0 || j < 0 || i >= j {
				t.Errorf("row %q = %q, want cells %q then %q", label, l, cells[0], cells[1])
			}
		}
		if !found {
			t.Errorf("no row %q in\n%s", label, b.String())
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := percentile(d, c.q); got != c.want {
			t.Errorf("percentile(1..100ms, %v) = %s, want %s", c.q, got, c.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %s, want 0", got)
	}
}

// svgDoc is the part of the SVG the test reads.
type svgDoc struct {
	Rects []struct {
		Class string  `xml:"class,attr"`
		X     float64 `xml:"x,attr"`
		Y     float64 `xml:"y,attr"`
		Width float64 `xml:"width,attr"`
		Fill  string  `xml:"fill,attr"`
	} `xml:"rect"`
	Lines []struct {
		Class string  `xml:"class,attr"`
		Y1    float64 `xml:"y1,attr"`
	} `xml:"line"`
	Polylines []struct {
		Class  string `xml:"class,attr"`
		Points string `xml:"points,attr"`
		Stroke string `xml:"stroke,attr"`
		Dash   string `xml:"stroke-dasharray,attr"`
	} `xml:"polyline"`
	Texts []string `xml:"text"`
}

// TestWriteSVG: one panel per client, each with its attempts, 429s and
// accepted requests counted over the limit's window (as the provider
// counts them), the limit drawn as the quota per window, the outage in
// every panel and the open breaker only in its client's; every line and
// band told apart by colour or dash.
func TestWriteSVG(t *testing.T) {
	c := chart{
		Title:  "t <&> t",
		Bucket: time.Second,
		End:    10 * time.Second,
		Limit:  10,
		Window: 2 * time.Second,
		Outage: period{4 * time.Second, 6 * time.Second},
		Series: []series{
			{Name: "bare SDK", Accepted: []int{20, 0, 20, 0, 0, 0, 20, 0, 20, 0},
				Attempts: []int{30, 30, 30, 30, 40, 40, 30, 30, 30, 30}, Limited: []int{10, 30, 10, 30, 0, 0, 10, 30, 10, 30}},
			{Name: "steady", Accepted: []int{10, 10, 10, 10, 0, 0, 1, 10, 10, 10},
				Attempts: []int{10, 10, 10, 10, 5, 0, 1, 10, 10, 10}, Limited: make([]int, 10),
				Open: []period{{4500 * time.Millisecond, 5500 * time.Millisecond}}},
		},
	}
	var b bytes.Buffer
	if err := writeSVG(&b, c); err != nil {
		t.Fatal(err)
	}
	var doc svgDoc
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("not well-formed XML: %v\n%s", err, b.String())
	}
	byClass := map[string][]int{} // polyline indexes
	for i, pl := range doc.Polylines {
		byClass[pl.Class] = append(byClass[pl.Class], i)
	}
	for _, class := range []string{"series", "attempts", "limited"} {
		if len(byClass[class]) != 2 {
			t.Fatalf("%d %s lines, want one per client", len(byClass[class]), class)
		}
	}
	acc := byClass["series"]
	if doc.Polylines[acc[0]].Stroke == doc.Polylines[acc[1]].Stroke {
		t.Errorf("both clients' accepted lines drawn in %s", doc.Polylines[acc[0]].Stroke)
	}
	style := func(i int) string { return doc.Polylines[i].Stroke + "/" + doc.Polylines[i].Dash }
	seen := map[string]string{}
	for class, idx := range byClass {
		for _, i := range idx {
			if other, ok := seen[style(i)]; ok && other != class {
				t.Errorf("%s and %s lines look the same (%s)", class, other, style(i))
			}
			seen[style(i)] = class
		}
	}
	// Scale: the top value is 60 attempts in a 2-second span (bare SDK,
	// at 2 s and after), 1.05 times rounded up: 0..100 over each panel
	// 150 high; panel i starts at 50 + 186 i.
	ys := func(i int) []float64 {
		var out []float64
		for _, pt := range strings.Fields(doc.Polylines[i].Points) {
			_, v, _ := strings.Cut(pt, ",")
			y, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("point %q: %v", pt, err)
			}
			out = append(out, y)
		}
		return out
	}
	want := func(panel int, v float64) float64 { return 50 + 186*float64(panel) + 150*(1-v/100) }
	for panel, s := range c.Series {
		for class, per := range map[string][]int{"series": s.Accepted, "attempts": s.Attempts, "limited": s.Limited} {
			got := ys(byClass[class][panel])
			if len(got) != len(per) {
				t.Fatalf("%s %s: %d points, want %d", s.Name, class, len(got), len(per))
			}
			for j := range per {
				sum := per[j]
				if j > 0 {
					sum += per[j-1] // the 2-second span ending with slot j
				}
				if w := want(panel, float64(sum)); math.Abs(got[j]-w) > 0.1 {
					t.Errorf("%s %s point %d: y = %g, want %g (%d in the span)", s.Name, class, j, got[j], w, sum)
				}
			}
		}
	}
	var outage, open int
	for _, r := range doc.Rects {
		switch r.Class {
		case "outage":
			outage++
			if want := 60 + 730*0.4; math.Abs(r.X-want) > 0.1 {
				t.Errorf("outage starts at x=%g, want %g", r.X, want)
			}
		case "open":
			open++
			if want := 730 * 0.1; math.Abs(r.Width-want) > 0.1 {
				t.Errorf("open period width %g, want %g", r.Width, want)
			}
			if r.Y < 50+186 {
				t.Errorf("steady's open breaker drawn at y=%g, in the bare SDK's panel", r.Y)
			}
		}
	}
	if outage != 2 || open != 1 {
		t.Errorf("%d outage and %d open-breaker bands, want 2 (one a panel) and 1", outage, open)
	}
	var limits []float64
	for _, l := range doc.Lines {
		if l.Class == "limit" {
			limits = append(limits, l.Y1)
		}
	}
	// The limit: 10/s over a 2-second window is 20 a span.
	if len(limits) != 2 || math.Abs(limits[0]-want(0, 20)) > 0.1 || math.Abs(limits[1]-want(1, 20)) > 0.1 {
		t.Errorf("limit lines at %v, want %g and %g", limits, want(0, 20), want(1, 20))
	}
	if !strings.Contains(b.String(), "limit 20 per 2 s") {
		t.Error("the limit is not labelled as the quota per window")
	}
	if !strings.Contains(b.String(), "t &lt;&amp;&gt; t") {
		t.Error("title not escaped")
	}
}

func TestProgressInPlaceOnTerminal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		clients := []*client{
			{name: "a", rec: newRecorder("a", start, time.Second)},
			{name: "b", rec: newRecorder("b", start, time.Second)},
		}
		done := make(chan struct{})
		time.AfterFunc(1100*time.Millisecond, func() { close(done) })
		var tty, plain bytes.Buffer
		p := plan{Duration: time.Minute}
		finished := make(chan struct{})
		go func() {
			showProgress(&plain, false, 500*time.Millisecond, start, p, clients, done)
			close(finished)
		}()
		showProgress(&tty, true, 500*time.Millisecond, start, p, clients, done)
		<-finished
		// Ticks at 0.5s and 1s, then the final line at 1.1s: three frames.
		if n := strings.Count(tty.String(), "\x1b[2A"); n != 2 {
			t.Errorf("terminal output moved up %d times, want 2: %q", n, tty.String())
		}
		if n := strings.Count(plain.String(), "\n"); n != 6 {
			t.Errorf("plain output has %d lines, want 6: %q", n, plain.String())
		}
		if strings.ContainsAny(plain.String(), "\r\x1b") {
			t.Errorf("plain output has control characters: %q", plain.String())
		}
	})
}

func TestParseFlagsRejects(t *testing.T) {
	for _, args := range [][]string{
		{"-duration", "0"},
		{"-requests", "0"},
		{"-dialect", "klingon"},
		{"-duration", "10s", "-outage", "6s"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		} else if errors.Is(err, context.Canceled) {
			t.Errorf("unexpected error %v", err)
		}
	}
}

// blockingTransport answers nothing until the request's context is done.
type blockingTransport struct{}

func (blockingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	<-req.Context().Done()
	return nil, req.Context().Err()
}

func TestCallStoppedByInterruptIsNotCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("c", time.Now(), time.Second)
		c := &client{name: "c", rec: rec, sdk: openai.NewClient(
			option.WithBaseURL("http://x.invalid/v1/"), option.WithAPIKey("k"),
			option.WithHTTPClient(&http.Client{Transport: blockingTransport{}}),
		)}
		// signal.NotifyContext cancels with a cause naming the signal.
		ctx, cancel := context.WithCancelCause(t.Context())
		time.AfterFunc(time.Second, func() { cancel(errors.New("interrupt signal received")) })
		c.call(ctx, plan{CallTimeout: time.Minute, Model: "m"})
		if p := rec.progress(time.Now()); p.Calls != 0 {
			t.Errorf("a call stopped by an interrupt was counted: %+v", p)
		}
		// A call that runs past its own deadline is a failure.
		c.call(t.Context(), plan{CallTimeout: time.Second, Model: "m"})
		if p := rec.progress(time.Now()); p.Calls != 1 || p.Failed != 1 {
			t.Errorf("a call past its deadline: %+v, want one failed call", p)
		}
	})
}

func TestRecorderBreakerPeriodsAndBuckets(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	r := newRecorder("steady", start, time.Second)
	r.breakerEvent(at(2000), steady.BreakerOpen)
	r.breakerEvent(at(3000), steady.BreakerHalfOpen)
	r.breakerEvent(at(3100), steady.BreakerOpen)
	r.breakerEvent(at(4000), steady.BreakerHalfOpen)
	r.breakerEvent(at(4200), steady.BreakerClosed)
	r.breakerEvent(at(6000), steady.BreakerOpen) // still open at the end
	r.attempt(at(100), true, 200)
	r.attempt(at(900), true, 200)
	r.attempt(at(1500), true, 429)
	r.attempt(at(1600), false, 200)
	r.attempt(at(2500), true, 500)
	tl := timeline{Start: [numPhases]time.Duration{0, -1, -1}, End: 7 * time.Second}
	s := r.summarize(tl, 10, time.Second)
	wantOpen := []period{{2 * time.Second, 3 * time.Second}, {3100 * time.Millisecond, 4 * time.Second}, {6 * time.Second, 7 * time.Second}}
	if !slices.Equal(s.OpenPeriods, wantOpen) {
		t.Errorf("open periods = %v, want %v", s.OpenPeriods, wantOpen)
	}
	if want := []int{2, 1, 0, 0, 0, 0, 0}; !slices.Equal(s.Accepted, want) {
		t.Errorf("accepted per second = %v, want %v", s.Accepted, want)
	}
	if s.Attempts != 5 || s.RateLimited != 1 || s.ServerErrors != 1 || s.Retries != 1 {
		t.Errorf("attempts %d, 429s %d, 5xx %d, retries %d; want 5, 1, 1, 1", s.Attempts, s.RateLimited, s.ServerErrors, s.Retries)
	}
	if p := r.progress(at(6500)); p.Breaker != "open" {
		t.Errorf("breaker shown as %q, want open", p.Breaker)
	}
}

func TestGoodputOverWholeWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		r := newRecorder("c", start, time.Second)
		for _, at := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 2200 * time.Millisecond, 2900 * time.Millisecond} {
			time.Sleep(time.Until(start.Add(at)))
			r.callDone(time.Millisecond, nil)
		}
		r.setPhase(phaseOutage)
		time.Sleep(time.Until(start.Add(3500 * time.Millisecond)))
		r.callDone(time.Millisecond, nil)
		r.callDone(3*time.Second, errors.New("began before the outage, ended in it"))
		tl := timeline{Start: [numPhases]time.Duration{0, 2500 * time.Millisecond, -1}, End: 4 * time.Second}
		// Two whole windows fit in the 2.5s overload: two calls in them.
		if s := r.summarize(tl, 1, time.Second); s.Goodput != 1 {
			t.Errorf("goodput over whole 1s windows = %v/s, want 1", s.Goodput)
		}
		// No whole 5s window fits: all of the overload counts.
		s := r.summarize(tl, 1, 5*time.Second)
		if s.Goodput != 3/2.5 {
			t.Errorf("goodput with a 5s window = %v/s, want %v", s.Goodput, 3/2.5)
		}
		if s.FailedIn != [numPhases]int{0, 1, 0} {
			t.Errorf("failed calls by phase = %v, want the one failure in the outage", s.FailedIn)
		}
	})
}

// TestDemoShowsWhatItClaims runs the default workload in fake time and
// checks the claims the demo's table makes about the two sides.
func TestDemoShowsWhatItClaims(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, err := parseFlags(nil, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		clients, err := newClients(providerConfig{Requests: o.Requests, Window: o.Window, Dialect: o.Dialect, Algorithm: o.Algorithm, Latency: o.Latency}, o, start)
		if err != nil {
			t.Fatal(err)
		}
		limit := float64(o.Requests) / o.Window.Seconds()
		p := plan{Duration: o.Duration, OutageStart: o.Duration / 2, OutageEnd: o.Duration/2 + o.Outage,
			Concurrency: o.Concurrency, Offered: o.Offered * limit, CallTimeout: o.Timeout, Model: o.Model, MaxTokens: 64}
		tl := run(t.Context(), p, clients)
		bare, st := clients[0].rec.summarize(tl, limit, o.Window), clients[1].rec.summarize(tl, limit, o.Window)
		t.Logf("bare: %+v", bare)
		t.Logf("steady: %+v", st)
		share := func(s summary) float64 { return float64(s.RateLimited) / float64(max(s.Attempts, 1)) }
		if share(st) > 0.02 || share(st) >= share(bare) {
			t.Errorf("429 share: steady %.3f, bare SDK %.3f; want steady at most 0.02 and below the bare SDK", share(st), share(bare))
		}
		if st.Goodput < 0.9*limit {
			t.Errorf("steady goodput %.2f/s, want at least 90%% of the limit %.0f/s", st.Goodput, limit)
		}
		if st.OutageAttempts*5 > bare.OutageAttempts {
			t.Errorf("attempts during the outage: steady %d, bare SDK %d; want steady under a fifth", st.OutageAttempts, bare.OutageAttempts)
		}
		if len(st.OpenPeriods) == 0 {
			t.Error("steady's breaker never opened during the outage")
		}
		hold := clients[2].rec.summarize(tl, limit, o.Window)
		t.Logf("steady hold: %+v", hold)
		if hold.Failed != 0 || hold.OutageAttempts > st.OutageAttempts+2 {
			t.Errorf("hold: %d calls failed, %d attempts during the outage (fail-fast: %d); want none failed and no more attempts",
				hold.Failed, hold.OutageAttempts, st.OutageAttempts)
		}
		if len(explain([]summary{bare, st, hold})) < 2 {
			t.Error("the notes under the table are missing")
		}
	})
}
