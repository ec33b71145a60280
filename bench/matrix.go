package bench

import (
	"time"

	"github.com/steady-go/steady/steadytest"
)

// BatchLimit is one limit of the batch matrix and the size of the batch
// run against it.
type BatchLimit struct {
	Limit Limit
	Calls int
}

// MatrixLimits returns the limits of the fake-time batch matrix. A new
// limit is one line.
func MatrixLimits() []BatchLimit {
	const openai, heroku, anthropic, none = steadytest.DialectOpenAI, steadytest.DialectHerokuSeed, steadytest.DialectAnthropic, steadytest.DialectNone
	ms := time.Millisecond
	return []BatchLimit{
		{Limit{Kind: Sliding, Requests: 60, Window: time.Minute, Dialect: openai, Latency: 200 * ms}, 200},
		{Limit{Kind: Sliding, Requests: 100, Window: 10 * time.Second, Dialect: openai, Latency: 200 * ms}, 300},
		{Limit{Kind: Bucket, Requests: 60, Window: time.Minute, Dialect: openai, Latency: 200 * ms}, 200},
		{Limit{Kind: Fixed, Requests: 20, Window: time.Second, Dialect: heroku, Latency: 50 * ms}, 120},
		{Limit{Kind: Fixed, Requests: 100, Window: 10 * time.Second, Dialect: openai, Latency: 200 * ms}, 300},
		{Limit{Kind: Fixed, Requests: 60, Window: time.Minute, Dialect: heroku, Latency: 200 * ms}, 200},
		{Limit{Kind: Leaky, Requests: 20, Window: time.Second, Burst: 10, Dialect: none, Latency: 50 * ms}, 300},
		{Limit{Kind: Fixed, Requests: 20, Window: time.Second, Dialect: none, Latency: 50 * ms}, 120},
		{Limit{Kind: Sliding, Requests: 60, Window: time.Minute, Dialect: none, Latency: 200 * ms}, 200},
		// Exact fits of several windows (issue 20): the headroom must
		// cost no window; whole-second resets, rounded up or truncated.
		{Limit{Kind: Fixed, Requests: 60, Window: time.Minute, Dialect: openai, Latency: 200 * ms}, 300},
		{Limit{Kind: Sliding, Requests: 100, Window: 10 * time.Second, Dialect: heroku, Latency: 200 * ms}, 300},
		{Limit{Kind: Sliding, Requests: 100, Window: 10 * time.Second, Dialect: anthropic, Latency: 200 * ms, TruncateResets: true}, 300},
	}
}

// MatrixPatterns returns the callers of the fake-time batch matrix.
func MatrixPatterns() []Pattern {
	return []Pattern{
		{Name: "16 workers, no deadline", Workers: 16},
		{Name: "all at once, no deadline"},
		{Name: "all at once, cancel all on the first error", CancelOnError: true},
		{Name: "all at once, deadline 2× the minimum", Relative: 2},
		{Name: "all at once, deadline ½ the minimum", Relative: 0.5},
	}
}

// FleetBatches returns the batches shared by several uncoordinated
// processes on one key: the same batch split over 1, 4 and 16 clients.
func FleetBatches() []Batch {
	lim := Limit{Kind: Sliding, Requests: 600, Window: time.Minute, Dialect: steadytest.DialectOpenAI, Latency: 200 * time.Millisecond}
	var bs []Batch
	for _, n := range []int{1, 4, 16} {
		bs = append(bs, Batch{Limit: lim, Calls: 1500, Pattern: Pattern{Name: "32 workers, no deadline", Workers: 32}, Processes: n})
	}
	return bs
}

// LoopbackCase is one real-time batch on loopback and the targets steady
// must meet in it.
type LoopbackCase struct {
	Name      string
	Batch     Batch
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

// LoopbackCases returns the real-time batches, each with its cap.
func LoopbackCases() []LoopbackCase {
	ms := time.Millisecond
	heroku := Limit{Kind: Fixed, Requests: 20, Window: time.Second, Dialect: steadytest.DialectHerokuSeed, Latency: 50 * ms}
	tenSec := Limit{Kind: Fixed, Requests: 100, Window: 10 * time.Second, Dialect: steadytest.DialectOpenAI, Latency: 50 * ms}
	leaky := Limit{Kind: Leaky, Requests: 20, Window: time.Second, Burst: 10, Latency: 50 * ms}
	cs := []LoopbackCase{
		{"per-second fixed windows, Heroku headers", Batch{Limit: heroku, Calls: 120, Pattern: Pattern{Name: "16 workers, no deadline", Workers: 16}}, 1.10, 0.01},
		{"10-second fixed windows, OpenAI headers", Batch{Limit: tenSec, Calls: 200, Pattern: Pattern{Name: "all at once, no deadline"}}, 1.10, 0.01},
		{"header-less leaky bucket", Batch{Limit: leaky, Calls: 300, Pattern: Pattern{Name: "16 workers, 60 s deadlines", Workers: 16, Deadline: time.Minute}}, 1.25, 0.05},
		{"header-less leaky bucket", Batch{Limit: leaky, Calls: 300, Pattern: Pattern{Name: "all at once, no deadline"}}, 1.25, 0.05},
	}
	for i := range cs {
		b := &cs[i].Batch
		b.Cap = time.Duration(loopbackCapFactor*float64(b.Minimum(time.Unix(0, 0)))) + loopbackCapSlack
	}
	return cs
}
