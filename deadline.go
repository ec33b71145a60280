package steady

import (
	"errors"
	"time"
)

// A request waits only for what will be served before its deadline. The
// plans that decide it are re-made as news arrives, and some rest on
// guesses (the in-flight bound of a cold start, a window of unknown kind);
// so a request still waiting just before its deadline fails then, with a
// *WaitError or ErrCircuitOpen, rather than a moment later with its
// context's bare error: the OpenAI SDK checks the context when steady
// returns and would replace any error of steady's with it.

// lastMomentMargin is how long before its deadline a request still
// waiting (for its pacing turn, or a probe's verdict) gives up.
const lastMomentMargin = time.Millisecond

// errLastMoment is waitTurn's report that a waiter's last moment came.
var errLastMoment = errors.New("steady: deadline at hand")

// lastMoment returns how long a request whose context ends at dl may still
// wait: until lastMomentMargin before dl (at least zero); -1 without a
// deadline.
func lastMoment(dl time.Time) time.Duration {
	if dl.IsZero() {
		return -1
	}
	return max(time.Until(dl)-lastMomentMargin, 0)
}
