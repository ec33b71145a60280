package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// scrape returns what h serves at /metrics.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestMetricsAfterRun runs the steady side of the demo in fake time with
// its metrics handler, and scrapes it.
func TestMetricsAfterRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, err := parseFlags(tinyArgs, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		pcfg := providerConfig{Requests: o.Requests, Window: o.Window, Dialect: o.Dialect, Algorithm: o.Algorithm, Latency: o.Latency}
		c, err := steadyClient("steady", steady.Config{}, pcfg, o, start)
		if err != nil {
			t.Fatal(err)
		}
		h, stop, err := metricsHandler(c.steady)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		if body := scrape(t, h); strings.Contains(body, "http_client_request_duration_seconds") {
			t.Errorf("attempt durations before any request:\n%s", body)
		}
		p := plan{Duration: 2 * time.Second, Concurrency: 4, Offered: 3 * float64(o.Requests) / o.Window.Seconds(),
			CallTimeout: o.Timeout, Model: o.Model, MaxTokens: 64}
		tl := run(t.Context(), p, []*client{c})
		s := c.rec.summarize(tl, 0, o.Window)
		if s.Attempts == 0 {
			t.Fatal("the run made no attempt")
		}
		body := scrape(t, h)
		for _, want := range []string{
			"http_client_request_duration_seconds_count{",
			`http_response_status_code="200"`,
			"steady_rate_limit_limit",
			"steady_breaker_state",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q:\n%s", want, body)
			}
		}
	})
}

// TestServeMetrics serves a Transport's metrics on loopback and reads
// them over HTTP, as a Prometheus server would.
func TestServeMetrics(t *testing.T) {
	prov := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 100, Window: time.Minute})
	tr := steady.New(steady.Config{})
	ms, err := serveMetrics("127.0.0.1:0", tr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ms.URL, "http://127.0.0.1:") || !strings.HasSuffix(ms.URL, "/metrics") {
		t.Errorf("URL = %q", ms.URL)
	}
	sdk := openai.NewClient(option.WithBaseURL("http://provider.invalid/v1/"), option.WithAPIKey("sk-demo"),
		option.WithHTTPClient(&http.Client{Transport: prov}), option.WithMiddleware(tr.Middleware))
	for range 3 {
		if _, err := sdk.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
			Model:    "gpt-5.4-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say ok.")},
		}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get(ms.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", ms.URL, resp.StatusCode, err)
	}
	for _, want := range []string{"http_client_request_duration_seconds_count{", "steady_rate_limit_remaining"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if strings.Contains(string(body), "sk-demo") {
		t.Error("the metrics show the credential")
	}
	if err := ms.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(ms.URL); err == nil {
		t.Error("still serving after close")
	}
}

func TestParseFlagsMetricsAndFleet(t *testing.T) {
	o, err := parseFlags([]string{"-fleet", "4"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Duration != fleetDuration || o.Window != fleetWindow || o.Requests != fleetRequests || o.Concurrency != fleetConcurrency || o.Outage != 0 {
		t.Errorf("fleet defaults: %+v", o)
	}
	o, err = parseFlags([]string{"-fleet", "2", "-window", "5s", "-duration", "10s", "-redis-outage", "3s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Window != 5*time.Second || o.Duration != 10*time.Second || o.RedisOutage != 3*time.Second {
		t.Errorf("flags set on the command line were replaced: %+v", o)
	}
	for _, args := range [][]string{
		{"-fleet", "-1"},
		{"-fleet", "1000"},
		{"-fleet", "2", "-outage", "1s"},
		{"-fleet", "2", "-metrics", ":0"},
		{"-fleet", "2", "-base-url", "http://x"},
		{"-fleet", "2", "-redis", "redis://127.0.0.1:1", "-redis-outage", "1s"},
		{"-fleet", "2", "-redis", "http://nope"},
		{"-fleet", "2", "-redis-outage", "15s"},
		{"-redis", "redis://127.0.0.1:6379"},
		{"-redis-outage", "1s"},
		{"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}
