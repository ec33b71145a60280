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

// inOrder orders the attempts that reach the provider by when they were
// sent and, for those sent in the same microsecond of fake time, by the
// number of their call: each attempt of call i (0 <= i < 1000) reaches it
// at the next whole microsecond plus i nanoseconds. So no two attempts
// reach it, and are answered, at one instant (at one instant they would
// be taken in the scheduler's order, which varies from run to run), and
// those sent at one instant, by several callers or several Transports,
// reach it in the order of their calls: a row gives the same result on
// every run. Delaying call i by i nanoseconds alone was not enough: call
// 32 sent 16 ns after call 36 reached the provider at the same instant
// (TestPacingMatrix's three-process rows varied). The delay is under 2 µs.
type inOrder struct{ *steadytest.Provider }

// orderGrid is inOrder's grid: the call numbers it orders are below it,
// in nanoseconds.
const orderGrid = int64(time.Microsecond)

func (o inOrder) RoundTrip(req *http.Request) (*http.Response, error) {
	if i, err := strconv.ParseInt(req.Header.Get(callHeader), 10, 64); err == nil {
		if i < 0 || i >= orderGrid {
			panic("inOrder: call number " + strconv.FormatInt(i, 10) + " out of [0, 1000)")
		}
		time.Sleep(toGrid(time.Now().UnixNano(), i))
	}
	return o.Provider.RoundTrip(req)
}

// sleepInOrder sleeps for d, then on to the next whole microsecond of fake
// time plus i+1 nanoseconds (0 <= i < 999): callers that would wake at one
// instant, such as those a re-plan refused together that try again a
// second later, wake one after another in the order of their numbers, as
// inOrder orders attempts (at one instant they would queue in the
// scheduler's order, which varies from run to run); and none wakes at a
// whole microsecond, where a reset or another caller's attempt may fall.
// It sleeps at most d plus 2 µs.
func sleepInOrder(d time.Duration, i int) {
	if i < 0 || int64(i)+1 >= orderGrid {
		panic("sleepInOrder: caller number " + strconv.Itoa(i) + " out of [0, 999)")
	}
	time.Sleep(d + toGrid(time.Now().Add(d).UnixNano(), int64(i)+1))
}

// toGrid is how long from at (Unix nanoseconds) until the next whole
// microsecond after it plus off nanoseconds: inOrder's and sleepInOrder's
// grid.
func toGrid(at, off int64) time.Duration {
	return time.Duration(orderGrid - at%orderGrid + off)
}
