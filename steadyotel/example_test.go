package steadyotel_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadyotel"
	"github.com/steady-go/steady/steadytest"
)

// Instrument beside steady.New, then read what steady did: here a 429 that
// was retried, through the real SDK, into an in-memory reader.
func ExampleInstrument() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	t := steady.New(steady.Config{Base: steadytest.NewFake(
		steadytest.RateLimited(time.Millisecond),
		steadytest.ChatCompletion("Hello!"),
	)})
	ins, err := steadyotel.Instrument(t, steadyotel.WithMeterProvider(mp))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ins.Stop()

	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: t}),
		option.WithBaseURL("https://api.openai.com/v1"),
		option.WithAPIKey("sk-example"),
	)
	_, err = client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	var rm metricdata.ResourceMetrics
	reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				status, _ := p.Attributes.Value("http.response.status_code")
				provider, _ := p.Attributes.Value("gen_ai.provider.name")
				fmt.Printf("%s status=%d provider=%s count=%d\n", m.Name, status.AsInt64(), provider.AsString(), p.Count)
			}
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				kind, _ := p.Attributes.Value("steady.event.kind")
				reason, _ := p.Attributes.Value("steady.reason")
				fmt.Printf("%s kind=%s reason=%s %d\n", m.Name, kind.AsString(), reason.AsString(), p.Value)
			}
		}
	}
	// Unordered output:
	// http.client.request.duration status=429 provider=openai count=1
	// http.client.request.duration status=200 provider=openai count=1
	// steady.rate_limited kind= reason= 1
	// steady.retries kind= reason=rate_limited 1
	// steady.pacing.cooldowns kind= reason= 1
	// steady.events kind=retry reason=rate_limited 1
	// steady.events kind=cooldown reason=rate_limited 1
}

// Serve steady's metrics in the Prometheus exposition format, for a
// dashboard to scrape (the demo's -metrics flag does this on :9464).
func Example_prometheus() {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		fmt.Println(err)
		return
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))

	t := steady.New(steady.Config{Base: steadytest.NewFake(
		steadytest.ChatCompletion("Hello!").WithHeader(
			"X-Ratelimit-Limit-Requests", "500",
			"X-Ratelimit-Remaining-Requests", "499",
			"X-Ratelimit-Reset-Requests", "120ms",
		),
	)})
	ins, err := steadyotel.Instrument(t, steadyotel.WithMeterProvider(mp))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ins.Stop()
	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: t}),
		option.WithBaseURL("https://api.openai.com/v1"),
		option.WithAPIKey("sk-example"),
	)
	client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	})

	// In a program: go http.ListenAndServe(":9464", mux), with
	// mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{})).
	srv := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var names []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "# TYPE steady_") || strings.HasPrefix(line, "# TYPE http_client") {
			names = append(names, strings.Join(strings.Fields(line)[2:], " "))
		}
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Println(n)
	}
	// Output:
	// http_client_request_duration_seconds histogram
	// steady_breaker_state gauge
	// steady_pacing_in_flight gauge
	// steady_pacing_waiting gauge
	// steady_rate_limit_limit gauge
	// steady_rate_limit_remaining gauge
	// steady_rate_limit_reset_seconds gauge
	// steady_tokens_estimate_error histogram
}
