package steadyotel

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/steady-go/steady"
)

// span records an attempt as a client span, child of the caller's span:
// it started Duration before the event and ended at the event. It carries
// the HTTP client attributes, the resend count, the breaker's state when
// the attempt was let through, the pacing wait before it when the event
// tells it, and the upstream's request id; never a header other than the
// request id, a query string or a body.
func (in *Instrumentation) span(ev steady.Event, k attemptKey) {
	if ev.Context == nil {
		return
	}
	if in.needsSampled && !trace.SpanContextFromContext(ev.Context).IsSampled() {
		return
	}
	start := ev.Time.Add(-ev.Duration)
	_, sp := in.tracer.Start(ev.Context, k.method,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start))
	if !sp.IsRecording() {
		sp.End()
		return
	}
	kv := make([]attribute.KeyValue, 0, 14)
	kv = append(kv, k.h.attrs...)
	kv = append(kv, attribute.String(attrMethod, k.method))
	if ev.Upstream != "" && k.h.name == "" {
		// A routed request's Upstream is a Name, not a URL's origin.
		kv = append(kv, attribute.String(attrURL, ev.Upstream+ev.Path))
	}
	if ev.Status != 0 {
		kv = append(kv, attribute.Int(attrStatus, ev.Status))
	}
	if k.errType != "" {
		kv = append(kv, attribute.String(attrErrorType, k.errType))
	}
	if ev.Attempt > 1 {
		kv = append(kv, attribute.Int(attrResendCount, ev.Attempt-1))
	}
	if k.op != "" {
		kv = append(kv, attribute.String(attrOperation, k.op))
	}
	if k.model != "" {
		kv = append(kv, attribute.String(attrModel, k.model))
	}
	if ev.RequestID != "" {
		kv = append(kv, attribute.String(attrRequestID, ev.RequestID))
	}
	if ev.Wait > 0 {
		kv = append(kv, attribute.Float64(attrPacingWait, ev.Wait.Seconds()))
	}
	// The breaker's decision at admission: an attempt goes out of a closed
	// circuit, or as a half-open circuit's probe.
	kv = append(kv, attribute.String(attrBreakerState, breakerStateName(ev.To)))
	sp.SetAttributes(kv...)
	if k.errType != "" {
		sp.SetStatus(codes.Error, k.errType)
	}
	sp.End(trace.WithTimestamp(ev.Time))
}

// spanEvent adds an event that concerns one request (a retry, a pacing
// wait, a give-up, a rejection) to the caller's span, when it is recorded:
// a request refused while the circuit is open has no attempt span, but
// its trace still says why.
func (in *Instrumentation) spanEvent(ev steady.Event, why string) {
	sp := trace.SpanFromContext(ev.Context)
	if !sp.IsRecording() {
		return
	}
	kv := make([]attribute.KeyValue, 0, 5)
	if why != "" {
		kv = append(kv, attribute.String(attrReason, why))
	}
	if ev.Status != 0 {
		kv = append(kv, attribute.Int(attrStatus, ev.Status))
	}
	if ev.Attempt > 0 {
		kv = append(kv, attribute.Int(attrResendCount, ev.Attempt-1))
	}
	if ev.Wait > 0 {
		kv = append(kv, attribute.Float64(attrWait, ev.Wait.Seconds()))
	}
	if ev.RequestID != "" {
		kv = append(kv, attribute.String(attrRequestID, ev.RequestID))
	}
	sp.AddEvent(spanEventPrefix+ev.Kind.String(), trace.WithTimestamp(ev.Time), trace.WithAttributes(kv...))
}
