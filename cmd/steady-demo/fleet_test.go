package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/steadyredis"
	"github.com/steady-go/steady/store"
)

// TestMain makes the test binary a fleet worker when the fleet test
// starts it as one.
func TestMain(m *testing.M) {
	if spec := os.Getenv(workerEnv); spec != "" {
		os.Exit(workerMain(spec, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestFleet runs a small fleet of real worker processes (this test
// binary, started again as workers) on loopback, with the embedded Redis.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes and runs for seconds of real time")
	}
	plot := filepath.Join(t.TempDir(), "fleet.svg")
	args := []string{"-fleet", "2", "-duration", "3s", "-window", "1s", "-requests", "20",
		"-latency", "5ms", "-concurrency", "4", "-progress", "1s", "-plot", plot}
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	res, err := fleet(t.Context(), o, &out, &errOut)
	if err == nil {
		err = reportFleet(o, res, &out)
	}
	t.Logf("output:\n%s\nworkers' stderr:\n%s", out.String(), errOut.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Store || !res[1].Store {
		t.Fatalf("fleets = %+v, want without the store, then with it", res)
	}
	for _, r := range res {
		if r.Processes != 2 || r.Reported != 2 {
			t.Errorf("%s: %d processes, %d reported; want 2 and 2", r.Name, r.Processes, r.Reported)
		}
		if r.OK == 0 || r.Attempts < r.OK {
			t.Errorf("%s: %d ok calls in %d attempts", r.Name, r.OK, r.Attempts)
		}
		// What the workers report must agree with what the provider saw.
		if int64(r.OK) > r.Provider.Accepted || int64(r.RateLimited) > r.Provider.RateLimited {
			t.Errorf("%s: workers report %d ok and %d 429s, the provider admitted %d and refused %d",
				r.Name, r.OK, r.RateLimited, r.Provider.Accepted, r.Provider.RateLimited)
		}
		accepted := 0
		for _, n := range r.Accepted {
			accepted += n
		}
		if accepted < r.OK || int64(accepted) > r.Provider.Accepted {
			t.Errorf("%s: %d accepted in the per-second counts, %d ok calls, %d admitted", r.Name, accepted, r.OK, r.Provider.Accepted)
		}
		if r.Goodput <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Errorf("%s: goodput %.1f/s, p50 %s, p99 %s", r.Name, r.Goodput, r.P50, r.P99)
		}
	}
	// Two processes pacing alone each take the whole limit: the
	// provider refuses some of their requests.
	if res[0].RateLimited == 0 {
		t.Errorf("the fleet without the store met no 429: %+v", res[0])
	}
	if res[1].StorePing != 2 {
		t.Errorf("with the store, %d of 2 workers reached Redis at start", res[1].StorePing)
	}
	for _, want := range []string{"without store", "with store", "429s", "share of ok calls per process", "p99 latency", "chart written"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	b, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b, new(any)); err != nil {
		t.Errorf("the chart is not well-formed XML: %v", err)
	}
	for _, want := range []string{"without store", "with store"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("the chart lacks the series %q", want)
		}
	}
}

// TestFleetStoppedEarly stops a fleet at once: the workers stop, and
// nothing is left running.
func TestFleetStoppedEarly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	o, err := parseFlags([]string{"-fleet", "1", "-duration", "1m", "-window", "1s", "-requests", "20", "-latency", "5ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var out bytes.Buffer
	w := &notifyWriter{w: &out, after: "fleet: ", fn: func() { time.AfterFunc(time.Second, cancel) }}
	start := time.Now()
	if _, err := fleet(ctx, o, w, io.Discard); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("stopping took %s", took)
	}
	if !strings.Contains(out.String(), "stopped after") {
		t.Errorf("output lacks the stop note:\n%s", out.String())
	}
}

// TestFleetDeadUpstream runs a small fleet against providers that
// answer 503 to everything, beside one process alone.
func TestFleetDeadUpstream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes and runs for seconds of real time")
	}
	o, err := parseFlags([]string{"-fleet", "2", "-dead-upstream", "-duration", "2s", "-window", "1s", "-requests", "20",
		"-latency", "5ms", "-concurrency", "2", "-progress", "1s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := fleet(t.Context(), o, &out, io.Discard)
	if err == nil {
		err = reportFleet(o, res, &out)
	}
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[2].Processes != 1 || res[2].Store {
		t.Fatalf("fleets = %+v, want a third column of one process without the store", res)
	}
	for _, r := range res {
		if r.OK != 0 || r.Attempts == 0 {
			t.Errorf("%s: %d ok calls, %d attempts; want none ok, after some attempts", r.Name, r.OK, r.Attempts)
		}
		if int64(r.Attempts) != r.Provider.Requests {
			t.Errorf("%s: the workers counted %d attempts, the provider received %d", r.Name, r.Attempts, r.Provider.Requests)
		}
	}
	if res[0].Attempts <= res[2].Attempts {
		t.Errorf("two processes pacing alone sent %d attempts, one process %d: want more", res[0].Attempts, res[2].Attempts)
	}
	if !strings.Contains(out.String(), "The upstream was down for the whole run") {
		t.Error("output lacks the note on the dead upstream")
	}
}

// TestFleetOnRedis runs a small fleet whose store uses the Redis server
// at 127.0.0.1:6379, when one answers.
func TestFleetOnRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const url = "redis://127.0.0.1:6379"
	if err := pingRedis(t.Context(), url); err != nil {
		t.Skipf("no Redis at %s (%v): start one to run this test", url, err)
	}
	o, err := parseFlags([]string{"-fleet", "2", "-redis", url, "-duration", "1s", "-window", "1s", "-requests", "20",
		"-latency", "5ms", "-concurrency", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := fleet(t.Context(), o, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "steadyredis.New on "+url) {
		t.Errorf("output does not name the Redis:\n%s", out.String())
	}
	if res[1].StorePing != 2 || res[1].Reported != 2 || res[1].OK == 0 {
		t.Errorf("with the store on %s: %+v", url, res[1])
	}
}

// notifyWriter calls fn once, when what is written contains after.
type notifyWriter struct {
	w     io.Writer
	after string
	fn    func()
	done  bool
}

func (n *notifyWriter) Write(b []byte) (int, error) {
	if !n.done && bytes.Contains(b, []byte(n.after)) {
		n.done = true
		n.fn()
	}
	return n.w.Write(b)
}

// TestStoreOnEmbeddedRedis checks that the embedded server runs the
// store's script: a reservation through it is shared.
func TestStoreOnEmbeddedRedis(t *testing.T) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer mr.Close()
	opt, err := redis.ParseURL("redis://" + mr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	st, err := steadyredis.New(rc, steadyredis.WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := store.Reservation{
		Partition: store.Partition{Upstream: "http://provider.invalid", Key: "demo"},
		Windows:   []store.Window{{ID: store.WindowID(ratelimit.UnitRequests, "minute"), Cost: 1, Rate: 10, Burst: 1}},
	}
	g1, err := st.Reserve(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := st.Reserve(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	if !g1.Shared || !g2.Shared || g2.Seq <= g1.Seq {
		t.Fatalf("grants %+v then %+v: want both shared, in order", g1, g2)
	}
	if g2.Wait <= 0 {
		t.Errorf("the second request at 10/s with a burst of 1 may go at once: %+v", g2)
	}
	if len(mr.Keys()) == 0 {
		t.Error("the reservations wrote no key")
	}
}

func TestMaxShareDeviation(t *testing.T) {
	for _, c := range []struct {
		counts []int
		want   float64
	}{
		{nil, 0},
		{[]int{0, 0}, 0},
		{[]int{10, 10, 10}, 0},
		{[]int{15, 5}, 0.5},
		{[]int{12, 10, 8}, 0.2},
	} {
		if got := maxShareDeviation(c.counts); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("maxShareDeviation(%v) = %v, want %v", c.counts, got, c.want)
		}
	}
}

func TestWriteFleetTable(t *testing.T) {
	res := []fleetResult{
		{Name: "without store", Processes: 4, Reported: 4, OK: 90, Attempts: 100, RateLimited: 10, Goodput: 45, Limit: 50, MaxShareDev: 0.061},
		{Name: "with store", Store: true, Processes: 4, Reported: 3, StorePing: 4, OK: 98, Attempts: 98, Goodput: 49, Limit: 50, Fallbacks: 2},
	}
	var b bytes.Buffer
	if err := writeFleetTable(&b, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"45.0/s = 90% of limit", "49.0/s = 98% of limit", "10 = 10.0% of attempts", "0 = 0.0% of attempts",
		"within ±6.1% of equal", "4 (3 reported)", "4 of 4 processes", "2 times",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestWorkerProtocol checks a worker's side of the protocol in the
// process: a bad spec, a bad Redis URL, and a parent that stops before
// the start.
func TestWorkerProtocol(t *testing.T) {
	if code := workerMain("{", strings.NewReader(""), io.Discard, io.Discard); code != 2 {
		t.Errorf("a bad spec: exit code %d, want 2", code)
	}
	var errOut bytes.Buffer
	if code := workerMain(`{"Redis":"http://x"}`, strings.NewReader(""), io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "redis URL") {
		t.Errorf("a bad Redis URL: exit code %d, stderr %q", code, errOut.String())
	}
	var out bytes.Buffer
	spec := `{"ID":3,"BaseURL":"http://127.0.0.1:1/v1/","Duration":1000000000,"Concurrency":1,"Offered":1}`
	if code := workerMain(spec, strings.NewReader(""), &out, io.Discard); code != 0 {
		t.Errorf("stopped before the start: exit code %d", code)
	}
	if got := strings.TrimSpace(out.String()); got != `{"Kind":"ready","ID":3}` {
		t.Errorf("reports %q, want only the ready line", got)
	}
	out.Reset()
	if code := workerMain(spec, strings.NewReader("start soon\n"), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "start line") {
		t.Errorf("a bad start line: exit code %d, stderr %q", code, errOut.String())
	}
}
