package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadyotel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// metricsHandler instruments t with steadyotel and returns a handler
// that serves its metrics in the Prometheus exposition format, through
// the OpenTelemetry Prometheus exporter, and a stop function that ends
// the instrumentation.
func metricsHandler(t *steady.Transport) (http.Handler, func() error, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	ins, err := steadyotel.Instrument(t, steadyotel.WithMeterProvider(mp))
	if err != nil {
		mp.Shutdown(context.Background())
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	stop := func() error {
		return errors.Join(ins.Stop(), mp.Shutdown(context.Background()))
	}
	return mux, stop, nil
}

// metricsServer serves t's metrics on addr (such as ":9464") at
// /metrics until its close function is called.
type metricsServer struct {
	URL  string // where the metrics are served
	srv  *http.Server
	stop func() error
	done chan error
}

// serveMetrics starts serving t's metrics on addr.
func serveMetrics(addr string, t *steady.Transport) (*metricsServer, error) {
	h, stop, err := metricsHandler(t)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		stop()
		return nil, err
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	m := &metricsServer{
		URL:  "http://" + net.JoinHostPort(host, port) + "/metrics",
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		stop: stop,
		done: make(chan error, 1),
	}
	go func() { m.done <- m.srv.Serve(ln) }()
	return m, nil
}

// close stops the server and the instrumentation.
func (m *metricsServer) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	if serr := <-m.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, m.stop())
}
