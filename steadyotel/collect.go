package steadyotel

import (
	"context"
	"maps"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/steady-go/steady"
)

// collect observes the state instruments from one snapshot of the
// Transport: requests waiting and in flight, every window's limit,
// remaining quota and reset, and every known upstream's breaker state.
//
// Partitions are aggregated by host and model (the credential fingerprint
// that tells them apart is never an attribute): waiting and in-flight
// requests are summed, and of several partitions with the same window, the
// one with the least quota left is reported.
func (in *Instrumentation) collect(_ context.Context, o metric.Observer) error {
	parts := in.t.Snapshot()
	now := time.Now()

	type load struct {
		waiting, inFlight int64
		byPrio            map[steady.Priority]int64 // nil when no partition waits with priorities
	}
	type win struct {
		limit, remaining int64
		reset            time.Time
	}
	type winKey struct {
		part         partKey
		unit, window string
	}
	loads := make(map[partKey]*load)
	wins := make(map[winKey]*win)
	var order []partKey
	var worder []winKey
	upstreams := make(map[string]struct{})
	for _, s := range parts {
		upstreams[s.Upstream] = struct{}{}
		pk := partKey{h: in.labels.host(s.Upstream), model: in.labels.model(s.Model)}
		l := loads[pk]
		if l == nil {
			l = &load{}
			loads[pk] = l
			order = append(order, pk)
		}
		l.waiting += int64(s.Waiting)
		for pr, n := range s.WaitingByPriority {
			if l.byPrio == nil {
				l.byPrio = make(map[steady.Priority]int64, 3)
			}
			l.byPrio[pr] += int64(n)
		}
		l.inFlight += int64(s.InFlight)
		for _, w := range s.Windows {
			if w.Limit < 0 && w.Remaining < 0 {
				continue // nothing known yet
			}
			wk := winKey{part: pk, unit: unitName(w.Unit), window: in.labels.window(w.Name)}
			cur := wins[wk]
			if cur == nil {
				wins[wk] = &win{limit: w.Limit, remaining: w.Remaining, reset: w.Reset}
				worder = append(worder, wk)
				continue
			}
			if tighter(w.Remaining, cur.remaining) {
				*cur = win{limit: w.Limit, remaining: w.Remaining, reset: w.Reset}
			}
		}
	}
	for _, pk := range order {
		set := metric.WithAttributeSet(attribute.NewSet(pk.attributes()...))
		if l := loads[pk]; l.byPrio != nil {
			// Waiting by priority: one series each, summing to the
			// total; a partition without priorities counts as default.
			var others int64
			for _, pr := range []steady.Priority{steady.PriorityBatch, steady.PriorityInteractive} {
				others += l.byPrio[pr]
			}
			for _, pr := range []steady.Priority{steady.PriorityBatch, steady.PriorityDefault, steady.PriorityInteractive} {
				n := l.byPrio[pr]
				if pr == steady.PriorityDefault {
					n = l.waiting - others
				}
				kv := append(pk.attributes(), attribute.String(attrPriority, pr.String()))
				o.ObserveInt64(in.inst.waiting, n, metric.WithAttributeSet(attribute.NewSet(kv...)))
			}
		} else {
			o.ObserveInt64(in.inst.waiting, loads[pk].waiting, set)
		}
		o.ObserveInt64(in.inst.inFlight, loads[pk].inFlight, set)
	}
	for _, wk := range worder {
		w := wins[wk]
		kv := append(wk.part.attributes(), attribute.String(attrUnit, wk.unit), attribute.String(attrWindow, wk.window))
		set := metric.WithAttributeSet(attribute.NewSet(kv...))
		if w.limit >= 0 {
			o.ObserveInt64(in.inst.limit, w.limit, set)
		}
		if w.remaining >= 0 {
			o.ObserveInt64(in.inst.remaining, w.remaining, set)
		}
		if !w.reset.IsZero() {
			o.ObserveFloat64(in.inst.reset, max(w.reset.Sub(now).Seconds(), 0), set)
		}
	}

	// Breakers: every upstream seen in a snapshot or an event.
	for _, u := range in.labels.upstreams() {
		upstreams[u] = struct{}{}
	}
	seen := make(map[*host]bool)
	for u := range upstreams {
		h := in.labels.host(u)
		if h == in.labels.other || seen[h] {
			continue
		}
		seen[h] = true
		state := in.t.BreakerState(u)
		for i, name := range breakerStateNames {
			v := int64(0)
			if steady.BreakerState(i) == state {
				v = 1
			}
			kv := append(h.attrs[:len(h.attrs):len(h.attrs)], attribute.String(attrBreakerState, name))
			o.ObserveInt64(in.inst.breakerState, v, metric.WithAttributeSet(attribute.NewSet(kv...)))
		}
	}
	return nil
}

// tighter reports whether a window with remaining quota a is more
// constrained than one with b; -1 means unknown.
func tighter(a, b int64) bool {
	switch {
	case a < 0:
		return false
	case b < 0:
		return true
	}
	return a < b
}

// partKey is a partition as metrics tell it apart: by host and model.
type partKey struct {
	h     *host
	model string
}

func (k partKey) attributes() []attribute.KeyValue {
	kv := make([]attribute.KeyValue, 0, len(k.h.attrs)+3)
	kv = append(kv, k.h.attrs...)
	if k.model != "" {
		kv = append(kv, attribute.String(attrModel, k.model))
	}
	return kv
}

// upstreams returns the upstreams seen so far, within the cap.
func (l *labels) upstreams() []string {
	return slices.Collect(maps.Keys(*l.hosts.Load()))
}
