package bench

import (
	"time"

	"github.com/steady-go/steady/steadytest"
)

// batchLimit is one limit of the batch matrix and the size of the batch
// run against it.
type batchLimit struct {
	Limit limitSpec
	Calls int
}

// matrixLimits returns the limits of the fake-time batch matrix. A new
// limit is one line.
func matrixLimits() []batchLimit {
	const openai, heroku, anthropic, none = steadytest.DialectOpenAI, steadytest.DialectHerokuSeed, steadytest.DialectAnthropic, steadytest.DialectNone
	ms := time.Millisecond
	return []batchLimit{
		{limitSpec{Kind: kindSliding, Requests: 60, Window: time.Minute, Dialect: openai, Latency: 200 * ms}, 200},
		{limitSpec{Kind: kindSliding, Requests: 100, Window: 10 * time.Second, Dialect: openai, Latency: 200 * ms}, 300},
		{limitSpec{Kind: kindBucket, Requests: 60, Window: time.Minute, Dialect: openai, Latency: 200 * ms}, 200},
		{limitSpec{Kind: kindFixed, Requests: 20, Window: time.Second, Dialect: heroku, Latency: 50 * ms}, 120},
		{limitSpec{Kind: kindFixed, Requests: 100, Window: 10 * time.Second, Dialect: openai, Latency: 200 * ms}, 300},
		{limitSpec{Kind: kindFixed, Requests: 60, Window: time.Minute, Dialect: heroku, Latency: 200 * ms}, 200},
		{limitSpec{Kind: kindLeaky, Requests: 20, Window: time.Second, Burst: 10, Dialect: none, Latency: 50 * ms}, 300},
		{limitSpec{Kind: kindFixed, Requests: 20, Window: time.Second, Dialect: none, Latency: 50 * ms}, 120},
		{limitSpec{Kind: kindSliding, Requests: 60, Window: time.Minute, Dialect: none, Latency: 200 * ms}, 200},
		// Exact fits of several windows (issue 20): the headroom must
		// cost no window; whole-second resets, rounded up or truncated.
		{limitSpec{Kind: kindFixed, Requests: 60, Window: time.Minute, Dialect: openai, Latency: 200 * ms}, 300},
		{limitSpec{Kind: kindSliding, Requests: 100, Window: 10 * time.Second, Dialect: heroku, Latency: 200 * ms}, 300},
		{limitSpec{Kind: kindSliding, Requests: 100, Window: 10 * time.Second, Dialect: anthropic, Latency: 200 * ms, TruncateResets: true}, 300},
	}
}

// matrixPatterns returns the callers of the fake-time batch matrix.
func matrixPatterns() []pattern {
	return []pattern{
		{Name: "16 workers, no deadline", Workers: 16},
		{Name: "all at once, no deadline"},
		{Name: "all at once, cancel all on the first error", CancelOnError: true},
		{Name: "all at once, deadline 2× the minimum", Relative: 2},
		{Name: "all at once, deadline ½ the minimum", Relative: 0.5},
	}
}

// fleetBatches returns the batches shared by several uncoordinated
// processes on one key: the same batch split over 1, 4 and 16 clients.
func fleetBatches() []batch {
	lim := limitSpec{Kind: kindSliding, Requests: 600, Window: time.Minute, Dialect: steadytest.DialectOpenAI, Latency: 200 * time.Millisecond}
	var bs []batch
	for _, n := range []int{1, 4, 16} {
		bs = append(bs, batch{Limit: lim, Calls: 1500, Pattern: pattern{Name: "32 workers, no deadline", Workers: 32}, Processes: n})
	}
	return bs
}

// loopbackCase is one real-time batch on loopback and the targets steady
// must meet in it.
type loopbackCase struct {
	Name      string
	Batch     batch
	MaxRatio  float64 // target: makespan at most this multiple of the minimum
	MaxLimits float64 // target: at most this share of attempts answered 429
}

// The cap of a loopback run: loopbackCapFactor times its minimum plus
// loopbackCapSlack, so that the whole set takes well under two minutes
// whatever a peer does, and still shows a peer's makespan up to well past
// the targets.
const (
	loopbackCapFactor = 2
	loopbackCapSlack  = 5 * time.Second
)

// loopbackCases returns the real-time batches, each with its cap.
func loopbackCases() []loopbackCase {
	ms := time.Millisecond
	heroku := limitSpec{Kind: kindFixed, Requests: 20, Window: time.Second, Dialect: steadytest.DialectHerokuSeed, Latency: 50 * ms}
	tenSec := limitSpec{Kind: kindFixed, Requests: 100, Window: 10 * time.Second, Dialect: steadytest.DialectOpenAI, Latency: 50 * ms}
	leaky := limitSpec{Kind: kindLeaky, Requests: 20, Window: time.Second, Burst: 10, Latency: 50 * ms}
	cs := []loopbackCase{
		{"per-second fixed windows, Heroku headers", batch{Limit: heroku, Calls: 120, Pattern: pattern{Name: "16 workers, no deadline", Workers: 16}}, 1.10, 0.01},
		{"10-second fixed windows, OpenAI headers", batch{Limit: tenSec, Calls: 200, Pattern: pattern{Name: "all at once, no deadline"}}, 1.10, 0.01},
		{"header-less leaky bucket", batch{Limit: leaky, Calls: 300, Pattern: pattern{Name: "16 workers, 60 s deadlines", Workers: 16, Deadline: time.Minute}}, 1.25, 0.05},
		{"header-less leaky bucket", batch{Limit: leaky, Calls: 300, Pattern: pattern{Name: "all at once, no deadline"}}, 1.25, 0.05},
	}
	for i := range cs {
		b := &cs[i].Batch
		b.Cap = time.Duration(loopbackCapFactor*float64(b.Minimum(time.Unix(0, 0)))) + loopbackCapSlack
	}
	return cs
}
