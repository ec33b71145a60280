package steadyotel

import (
	"errors"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/steady-go/steady"
)

// Version is the instrumentation scope version recorded with every metric
// and span.
const Version = "0.1.0"

// errNilTransport is returned by Instrument for a nil Transport.
var errNilTransport = errors.New("steadyotel: nil Transport")

// Option configures [Instrument].
type Option func(*config)

type config struct {
	mp         metric.MeterProvider
	tp         trace.TracerProvider
	explicitTP bool // tp was given with WithTracerProvider
}

// WithMeterProvider sets the provider of the meter that records steady's
// metrics. Without it, the global provider ([otel.GetMeterProvider]) is
// used. A [metricnoop.MeterProvider] turns metrics off.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithTracerProvider sets the provider of the tracer that records a span
// for each upstream attempt, and makes an attempt span even for a caller
// whose context carries no span (the provider's sampler decides). Without
// it, the global provider ([otel.GetTracerProvider]) is used, and only
// for callers whose context carries a sampled span, so that nothing is
// done while tracing is not set up. A [tracenoop.TracerProvider] turns
// tracing off.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp, c.explicitTP = tp, true }
}

// Instrumentation reports one [steady.Transport]'s events and state as
// OpenTelemetry metrics and spans. Make it with [Instrument]; Stop ends
// the reporting.
type Instrumentation struct {
	t      *steady.Transport
	labels *labels
	inst   instruments
	cache  attemptCache

	tracer       trace.Tracer // nil: tracing is off
	needsSampled bool         // only trace under a sampled parent span

	remove func()              // removes the observer
	reg    metric.Registration // the observable instruments' callback; nil when metrics are off
	once   sync.Once
}

// Instrument starts reporting t's attempts, retries, waits, limits and
// breaker states, beside [steady.New]:
//
//	t := steady.New(steady.Config{})
//	ins, err := steadyotel.Instrument(t)
//	if err != nil { ... }
//	defer ins.Stop()
//
// Metrics go to the meter provider's meter named [ScopeName], spans to its
// tracer; see [WithMeterProvider] and [WithTracerProvider]. The error
// reports an instrument the meter refused to create; nothing is reported
// then.
func Instrument(t *steady.Transport, opts ...Option) (*Instrumentation, error) {
	if t == nil {
		return nil, errNilTransport
	}
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.tp == nil {
		c.tp, c.explicitTP = otel.GetTracerProvider(), false
	}
	in := &Instrumentation{t: t, labels: newLabels()}
	in.labels.origin = t.UpstreamOrigin

	if _, off := c.mp.(metricnoop.MeterProvider); !off {
		meter := c.mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
		if err := in.inst.create(meter); err != nil {
			return nil, fmt.Errorf("steadyotel: %w", err)
		}
		reg, err := meter.RegisterCallback(in.collect, in.inst.observables()...)
		if err != nil {
			return nil, fmt.Errorf("steadyotel: registering the state callback: %w", err)
		}
		in.reg = reg
	}
	if _, off := c.tp.(tracenoop.TracerProvider); !off {
		in.tracer = c.tp.Tracer(ScopeName, trace.WithInstrumentationVersion(Version))
		in.needsSampled = !c.explicitTP
	}
	if in.reg == nil && in.tracer == nil {
		in.remove = func() {}
		return in, nil
	}
	in.remove = t.Observe(in.observe)
	return in, nil
}

// Stop ends the reporting: events are no longer recorded and the
// observable instruments are no longer called. It returns the error of
// unregistering their callback, if any. Calls after the first do nothing.
func (in *Instrumentation) Stop() error {
	if in == nil {
		return nil
	}
	var err error
	in.once.Do(func() {
		in.remove()
		if in.reg != nil {
			err = in.reg.Unregister()
		}
	})
	return err
}
