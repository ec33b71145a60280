package steady_test

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3/option"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// launch runs call(0) to call(n-1) as a batch and waits for them all: from
// 16 workers that share the batch (callWorkers), or each call in its own
// goroutine at once (every other kind of callers). It must run in a
// synctest bubble: each goroutine starts once the ones before it are
// blocked, so that the calls queue in the same order on every run.
func launch(callers string, n int, call func(i int)) {
	var wg sync.WaitGroup
	if callers == callWorkers {
		var next atomic.Int64
		for range 16 {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					call(i)
				}
			})
			synctest.Wait()
		}
	} else {
		for i := range n {
			wg.Go(func() { call(i) })
			synctest.Wait()
		}
	}
	wg.Wait()
}

// atMost and atLeast hold a row's measure to its target and the
// known-miss table (misses_test.go, in package steady).
var atMost, atLeast = steady.AtMost, steady.AtLeast

// callHeader carries a batch call's number to inOrder.
const callHeader = "X-Batch-Call"

// callNumber is the request option that tells inOrder the call's number.
func callNumber(i int) option.RequestOption {
	return option.WithHeader(callHeader, strconv.Itoa(i))
}

// inOrder delays each attempt of call i by i nanoseconds on its way to
// the provider, so that attempts which would reach it at the same instant
// of fake time (and so in the scheduler's order, which varies from run to
// run) reach it one after another in the order of their calls, and their
// answers come back in that order: a row gives the same result on every
// run. The delay is at most the batch's size in nanoseconds.
type inOrder struct{ *steadytest.Provider }

func (o inOrder) RoundTrip(req *http.Request) (*http.Response, error) {
	if i, err := strconv.Atoi(req.Header.Get(callHeader)); err == nil && i > 0 {
		time.Sleep(time.Duration(i))
	}
	return o.Provider.RoundTrip(req)
}
