package steadyotel

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/steady-go/steady"
)

// observe records one event. It is the one place where steady's events
// become measurements and spans; a new event kind is counted by
// steady.events under its own name until it gets an instrument of its own.
func (in *Instrumentation) observe(ev steady.Event) {
	if ev.Kind == steady.EventAttempt {
		in.attempt(ev)
		return
	}
	why := ""
	if ev.Reason != "" || ev.Status != 0 || ev.Err != nil {
		why = reason(ev)
	}
	if in.tracer != nil && ev.Context != nil {
		in.spanEvent(ev, why)
	}
	if in.reg == nil {
		return // metrics are off
	}
	ctx := ev.Context
	if ctx == nil {
		ctx = context.Background()
	}
	h := in.labels.host(ev.Upstream)
	if ev.Kind == steady.EventUsage {
		// One a successful call: its own histogram, not steady.events.
		in.inst.estimateError.Record(ctx, ev.Reserved.Total()-ev.Used.Total(), in.withReason(h, ev, ""))
		return
	}
	switch ev.Kind {
	case steady.EventRetry:
		in.inst.retries.Add(ctx, 1, in.withReason(h, ev, why))
	case steady.EventGiveUp:
		in.inst.giveUps.Add(ctx, 1, in.withReason(h, ev, why))
		if why == reasonBudget {
			in.inst.budgetExhausted.Add(ctx, 1, in.withReason(h, ev, ""))
		}
	case steady.EventRejected:
		in.inst.rejections.Add(ctx, 1, in.withReason(h, ev, why))
	case steady.EventPace:
		in.inst.pacingWait.Record(ctx, ev.Wait.Seconds(), in.withReason(h, ev, ""))
	case steady.EventCooldown:
		in.inst.cooldowns.Add(ctx, 1, in.withReason(h, ev, ""))
	case steady.EventStore:
		if ev.Reason == "fallback" {
			in.inst.storeFallbacks.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(h.attrs...)))
		}
	case steady.EventBreakerState:
		in.inst.breakerChanges.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(append(h.attrs[:len(h.attrs):len(h.attrs)],
			attribute.String(attrBreakerState, breakerStateName(ev.To)),
			attribute.String(attrBreakerPrevious, breakerStateName(ev.From)))...)))
	}
	kv := []attribute.KeyValue{attribute.String(attrEventKind, ev.Kind.String()), h.id}
	if h.name != "" && h.address != "" {
		kv = append(kv, attribute.String(attrAddress, h.address)) // a routed upstream's host, beside its Name
	}
	if why != "" {
		kv = append(kv, attribute.String(attrReason, why))
	}
	in.inst.events.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(kv...)))
}

// withReason returns the attributes of an event: its host, operation and
// model, and the reason when not "".
func (in *Instrumentation) withReason(h *host, ev steady.Event, why string) metric.MeasurementOption {
	kv := make([]attribute.KeyValue, 0, len(h.attrs)+4)
	kv = append(kv, h.attrs...)
	if op := operationOf(ev.Path); op != "" {
		kv = append(kv, attribute.String(attrOperation, op))
	}
	if m := in.labels.model(ev.Model); m != "" {
		kv = append(kv, attribute.String(attrModel, m))
	}
	if why != "" {
		kv = append(kv, attribute.String(attrReason, why))
	}
	if ev.Priority != steady.PriorityDefault {
		// A request without a priority keeps the series it had.
		kv = append(kv, attribute.String(attrPriority, ev.Priority.String()))
	}
	return metric.WithAttributeSet(attribute.NewSet(kv...))
}

// attempt records one upstream attempt: its duration, a 429, and its span.
func (in *Instrumentation) attempt(ev steady.Event) {
	h := in.labels.host(ev.Upstream)
	k := attemptKey{
		h:       h,
		method:  method(ev.Method),
		op:      operationOf(ev.Path),
		model:   in.labels.model(ev.Model),
		status:  ev.Status,
		errType: errorType(ev.Status, ev.Err),
		resend:  min(max(ev.Attempt-1, 0), maxResend),
	}
	if in.reg != nil {
		ctx := ev.Context
		if ctx == nil {
			ctx = context.Background()
		}
		in.inst.duration.Record(ctx, ev.Duration.Seconds(), in.cache.get(k)...)
		if ev.Status == 429 {
			in.inst.rateLimited.Add(ctx, 1, in.cache.rateLimited(k)...)
		}
	}
	if in.tracer != nil {
		in.span(ev, k)
	}
}

// maxResend caps http.request.resend_count as a metric attribute.
const maxResend = 16

// attemptKey is what tells the attempts' attribute sets apart; every field
// is bounded.
type attemptKey struct {
	h       *host
	method  string
	op      string
	model   string
	status  int
	errType string
	resend  int
}

// attributes returns the attributes of an attempt's measurement.
func (k attemptKey) attributes() []attribute.KeyValue {
	kv := make([]attribute.KeyValue, 0, len(k.h.attrs)+6)
	kv = append(kv, k.h.attrs...)
	kv = append(kv, attribute.String(attrMethod, k.method))
	if k.status != 0 {
		kv = append(kv, attribute.Int(attrStatus, k.status))
	}
	if k.errType != "" {
		kv = append(kv, attribute.String(attrErrorType, k.errType))
	}
	if k.resend > 0 {
		kv = append(kv, attribute.Int(attrResendCount, k.resend))
	}
	if k.op != "" {
		kv = append(kv, attribute.String(attrOperation, k.op))
	}
	if k.model != "" {
		kv = append(kv, attribute.String(attrModel, k.model))
	}
	return kv
}

// maxCached bounds the attempt attribute sets kept; past it they are
// built for each attempt.
const maxCached = 4096

// attemptCache keeps the measurement options of attempts by key, so that
// recording an attempt builds no attribute set. Reads take no lock: the
// map is replaced, never changed, when a key is added.
type attemptCache struct {
	m  atomic.Pointer[map[attemptKey][]metric.RecordOption]
	mu sync.Mutex // serializes additions
}

func (c *attemptCache) get(k attemptKey) []metric.RecordOption {
	if m := c.m.Load(); m != nil {
		if opts, ok := (*m)[k]; ok {
			return opts
		}
	}
	opts := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(k.attributes()...))}
	c.mu.Lock()
	defer c.mu.Unlock()
	var cur map[attemptKey][]metric.RecordOption
	if m := c.m.Load(); m != nil {
		cur = *m
	}
	if got, ok := cur[k]; ok {
		return got
	}
	if len(cur) < maxCached {
		next := make(map[attemptKey][]metric.RecordOption, len(cur)+1)
		maps.Copy(next, cur)
		next[k] = opts
		c.m.Store(&next)
	}
	return opts
}

// rateLimited returns the attributes of a 429 count: the attempt's host,
// operation and model. 429s are rare enough not to be cached.
func (c *attemptCache) rateLimited(k attemptKey) []metric.AddOption {
	kv := make([]attribute.KeyValue, 0, len(k.h.attrs)+2)
	kv = append(kv, k.h.attrs...)
	if k.op != "" {
		kv = append(kv, attribute.String(attrOperation, k.op))
	}
	if k.model != "" {
		kv = append(kv, attribute.String(attrModel, k.model))
	}
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
}
