package steadytest

import "sync"

// Recorder collects the events a steady Transport reports, so that a test
// asserts what steady did rather than what reached the server. The SDK
// retries a 429 by itself, so "two requests, the second one a 200" holds
// with or without steady; "one EventRetry after a 429" holds only when
// steady handled the request.
//
// [Record] makes one. A Recorder is safe for concurrent use.
type Recorder[E any] struct {
	mu     sync.Mutex
	events []E // guarded by mu
}

// Record starts recording the events of tr, a *steady.Transport (anything
// with its Observe method), and returns the recorder. Recording lasts as
// long as tr:
//
//	tr := steady.New(steady.Config{Base: fake})
//	rec := steadytest.Record(tr) // a *Recorder[steady.Event]
//
// The type parameter is inferred from tr's Observe method. It is there
// because steadytest does not import package steady, so that steady's own
// tests can use steadytest.
func Record[E any](tr interface {
	Observe(fn func(E)) (remove func())
}) *Recorder[E] {
	r := &Recorder[E]{}
	tr.Observe(r.add)
	return r
}

func (r *Recorder[E]) add(ev E) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

// Events returns a copy of the events recorded so far, in the order they
// were reported. A test keeps the kinds it asserts on with
// slices.DeleteFunc.
func (r *Recorder[E]) Events() []E {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]E(nil), r.events...)
}
