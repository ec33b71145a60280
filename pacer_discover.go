package steady

import (
	"net/http"
	"time"

	"github.com/steady-go/steady/ratelimit"
)

// Pacing of partitions whose provider announces no limits: a gateway's
// leaky bucket, a proxy's window, a bare 429. When neither the
// configuration nor any response gives a partition a window, its requests
// go at the pace its discoverer finds (see discover.go):
//
//   - A partition without configured limits gets a discoverer at its
//     first answer (a success or a 429) that announces nothing, and
//     partitions that announce their limits never carry one. It is paced
//     by it from its first success that announces nothing: until then,
//     a 429 may come from a provider that announces its limits on
//     successes, and is paused for as any 429 is (the discoverer still
//     counts it).
//   - It stays cold (ColdStart requests in flight) until the discoverer
//     has evidence of the rate: a 429, or enough acceptances. The first
//     success does not release the whole queue.
//   - The head of the queue goes at the discoverer's next slot. Only
//     what is certain (that slot, a window's pause the server asked for)
//     counts when deciding to refuse a request: a request is never
//     refused because of the guessed rate, only when its context ends or
//     its deadline passes while it waits.
//   - Successes raise the pace, 429s cut it; 5xx and connection errors
//     say nothing of the rate. The discoverer holds the pauses: the
//     partition's generic cooldown is not used.

// discovering reports whether pt is paced by its discoverer: it has
// succeeded without announcing any limit, and has no configured one.
func (pt *partition) discovering() bool {
	return pt.disc != nil && pt.disc.n > 0 && len(pt.windows) == 0
}

// discoverReadyLocked returns when the request at the head of a
// header-less partition's queue may go, given t, when it may go by
// everything else. ahead (requests queued before it) is not counted: the
// pace is a guess, and a guess never refuses a request.
func (pt *partition) discoverReadyLocked(now, t time.Time) time.Time {
	return maxTime(t, pt.disc.next(now))
}

// discoverSentLocked records a request of a header-less partition sent at
// now.
func (pt *partition) discoverSentLocked(now time.Time) {
	if pt.disc != nil {
		pt.disc.sent(now)
	}
}

// discoverObserveLocked applies an answer to the discoverer, making it at
// the partition's first answer that announces nothing. It reports whether
// the partition is paced by its discoverer, in which case the generic
// cooldown after a 429 does not apply, and returns a cooldown event when a
// 429 made the discoverer pause the partition.
func (pt *partition) discoverObserveLocked(p *pacer, pm *permit, responded bool, status int, rl ratelimit.Limits, now time.Time) (bool, Event, bool) {
	if !responded || len(pt.windows) > 0 {
		return false, Event{}, false
	}
	if pt.disc == nil {
		if status >= 400 && status != http.StatusTooManyRequests {
			return false, Event{}, false // a 5xx without headers tells nothing
		}
		// Requests sent before this answer went out unpaced, together
		// (the cold start): their 429s say that they were too many at
		// once, not what rate the server accepts. The discoverer takes
		// them as it takes 429s to requests sent before a cut: only a
		// Retry-After long enough to mean a window counts.
		pt.disc = &discoverer{epoch: now.UnixNano()}
	}
	was := pt.discovering()
	var ev Event
	emit := false
	switch {
	case status < 400:
		pt.disc.onAccepted(now)
	case status == http.StatusTooManyRequests:
		// A hint longer than the pacer honours at once pauses for
		// maxHintWait, then a request asks again; a request whose
		// deadline comes before the hint is refused at once (as for
		// every partition: see refuseLocked).
		hint := min(max(rl.RetryAfter, 0), maxHint)
		if rl.HasRetryAfter && hint > maxHintWait {
			if until := now.Add(hint); until.After(pt.hintUntil) {
				pt.hintUntil = until
			}
			hint = maxHintWait
		}
		before := pt.disc.gate
		pt.disc.onThrottled(pm.sentAt, now, hint, rl.HasRetryAfter)
		if g := pt.disc.gate; g > before && g > now.UnixNano() {
			emit = true
			ev = Event{Kind: EventCooldown, Time: now, Upstream: pt.upstream, Partition: pt.label, Model: pt.model, Status: status, Until: time.Unix(0, g), Reason: "rate limited"}
		}
	}
	if !pt.discovering() {
		return false, Event{}, false
	}
	if !was {
		// From now on the discoverer holds the pauses: a cooldown taken
		// from a 429 of the cold start ends.
		pt.cooldown, pt.probing = time.Time{}, false
	}
	pt.known = pt.disc.warm() || p.coldStart <= 0
	return true, ev, emit
}

// discoverSnapshotLocked describes the discovered pace as a window, and
// returns when the pause the discoverer holds ends (zero: none).
func (pt *partition) discoverSnapshotLocked(now time.Time) (WindowSnapshot, time.Time) {
	rate, _ := pt.disc.estimate()
	ws := WindowSnapshot{Unit: ratelimit.UnitRequests, Name: discoveredName, Kind: discoveredName, Limit: -1, Remaining: -1, Period: time.Second, Rate: rate, Share: 1}
	var pause time.Time
	if g := time.Unix(0, pt.disc.gate); pt.disc.gate != 0 && g.After(now) {
		pause = g
	}
	return ws, pause
}

// discoveredName names the window of a header-less partition's discovered
// pace in snapshots, and its kind.
const discoveredName = "discovered"

// paces reports whether p paces requests: a 429's retry then waits its
// turn in the partition's queue (see pacedRetryWait).
func (p *pacer) paces() bool { return p != nil && !p.cfg.Disabled }

// discoveredPace reports whether pm's partition was paced by a discovered
// rate when pm's answer was applied (see pacedRetryWait). nil-safe; call
// it after settle, from the goroutine that settled pm.
func (pm *permit) discoveredPace() bool { return pm != nil && pm.disc }
