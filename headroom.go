package steady

import "github.com/steady-go/steady/ratelimit"

// The headroom spent last. A window keeps a margin unused (the headroom)
// against what it cannot see: others on the same key, requests the server
// counts in another order. Alone on its key, a process would lose that
// margin in every window: a batch of whole windows' worth takes one window
// more than the quota needs. So a requests window alone on its key spends
// the margin last, one request at a time, each when the previous response
// has confirmed what remains: nothing of this process is then unseen by
// the server, and the count is exact.

// lastUnits is what a window may use beyond its headroom when unseen of
// this process's uses are not yet in the latest remaining: one request
// while the server counts one or more remaining and has seen every use,
// else nothing. Only a requests window whose key shows no other user
// spends its margin: a token count is an estimate, and a shared window is
// paced evenly.
func (w *window) lastUnits(unseen int64) float64 {
	if w.unit != ratelimit.UnitRequests || w.shared() || unseen > 0 || w.obsRem < 1 {
		return 0
	}
	return 1
}
