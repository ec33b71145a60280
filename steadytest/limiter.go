package steadytest

import (
	"math"
	"time"
)

// admitted is one request admitted by the provider.
type admitted struct {
	t      int64 // Unix nanoseconds: half the size of a time.Time
	tokens int64
}

// window holds the requests admitted in the last window-long span, oldest
// first. It backs the sliding-window algorithm and the in-window maxima of
// Stats, whatever the algorithm.
type window struct {
	ev         []admitted // ev[head:] are in the window
	head       int
	tokens     int64 // sum of ev[head:].tokens
	lastTokens int64 // newest admission with tokens > 0, Unix nanoseconds
}

// prune drops admissions at or before now-length: a window is the
// half-open span (now-length, now].
func (w *window) prune(now time.Time, length time.Duration) {
	cut := now.Add(-length).UnixNano()
	for w.head < len(w.ev) && w.ev[w.head].t <= cut {
		w.tokens -= w.ev[w.head].tokens
		w.ev[w.head] = admitted{}
		w.head++
	}
	if w.head == len(w.ev) {
		w.ev, w.head = w.ev[:0], 0
	} else if w.head > 64 && w.head > len(w.ev)/2 {
		n := copy(w.ev, w.ev[w.head:])
		w.ev, w.head = w.ev[:n], 0
	}
}

func (w *window) requests() int64 { return int64(len(w.ev) - w.head) }

func (w *window) add(now time.Time, tokens int64) {
	w.ev = append(w.ev, admitted{t: now.UnixNano(), tokens: tokens})
	w.tokens += tokens
	if tokens > 0 {
		w.lastTokens = now.UnixNano()
	}
}

// waitRequests is how long until one more request fits under limit.
func (w *window) waitRequests(now time.Time, length time.Duration, limit int64) time.Duration {
	n := w.requests()
	if n < limit {
		return 0
	}
	// The (n-limit+1) oldest must leave the window.
	return until(w.ev[w.head+int(n-limit)].t, length, now)
}

// waitTokens is how long until cost more tokens fit under limit.
func (w *window) waitTokens(now time.Time, length time.Duration, limit, cost int64) time.Duration {
	excess := w.tokens + cost - limit
	if excess <= 0 {
		return 0
	}
	for _, e := range w.ev[w.head:] {
		excess -= e.tokens
		if excess <= 0 {
			return until(e.t, length, now)
		}
	}
	return length // unreachable while cost <= limit
}

// resetRequests is when the window is free of requests again.
func (w *window) resetRequests(now time.Time, length time.Duration) time.Duration {
	if w.requests() == 0 {
		return 0
	}
	return until(w.ev[len(w.ev)-1].t, length, now)
}

// resetTokens is when the window is free of tokens again.
func (w *window) resetTokens(now time.Time, length time.Duration) time.Duration {
	if w.tokens <= 0 {
		return 0
	}
	return max(until(w.lastTokens, length, now), 0)
}

// until is how long from now until length after the Unix-nanosecond time t.
func until(t int64, length time.Duration, now time.Time) time.Duration {
	return time.Duration(t + int64(length) - now.UnixNano())
}

// bucket is a token bucket holding up to capacity units, refilled
// continuously at capacity per length.
type bucket struct {
	level float64
	last  time.Time
	init  bool
}

func (b *bucket) refill(now time.Time, capacity int64, length time.Duration) {
	if !b.init {
		b.level, b.last, b.init = float64(capacity), now, true
		return
	}
	if el := now.Sub(b.last); el > 0 {
		b.level = math.Min(float64(capacity), b.level+float64(capacity)*el.Seconds()/length.Seconds())
		b.last = now
	}
}

// wait is how long until n units are in the bucket.
func (b *bucket) wait(n, capacity int64, length time.Duration) time.Duration {
	short := float64(n) - b.level
	if short <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(short * float64(length) / float64(capacity)))
}

// full is how long until the bucket is full again.
func (b *bucket) full(capacity int64, length time.Duration) time.Duration {
	return time.Duration(math.Ceil((float64(capacity) - b.level) * float64(length) / float64(capacity)))
}

func (b *bucket) remaining() int64 { return int64(math.Floor(b.level + 1e-9)) }

// quota is one limit's state as the headers announce it.
type quota struct {
	limit     int64 // 0: unlimited, no headers
	remaining int64
	reset     time.Duration // until fully replenished
}

// decision is the limiter's answer for one request.
type decision struct {
	admit    bool
	tooLarge bool          // the request can never fit
	wait     time.Duration // until it would fit, when not admitted
	which    string        // "requests" or "tokens": the binding limit when not admitted
	req, tok quota
	length   time.Duration // the window's length
}

// fixed is the count of the current window of a FixedWindow limit.
type fixed struct {
	end       time.Time // when the current window ends
	req, toks int64
}

// roll starts a new window when the current one has ended.
func (f *fixed) roll(now time.Time, length time.Duration) {
	if now.Before(f.end) {
		return
	}
	ns, l := now.UnixNano(), int64(length)
	start := ns - ((ns%l)+l)%l
	f.end, f.req, f.toks = time.Unix(0, start+l), 0, 0
}

// limits enforces a ProviderConfig's requests and tokens limits.
type limits struct {
	win            window
	reqB, tokB     bucket
	fix            fixed
	maxReq, maxTok int64
}

// count records an admission a Limiter decided, for the most admitted in
// a span of length. It is called with the provider's lock held.
func (l *limits) count(now time.Time, length time.Duration, cost int64) {
	l.win.prune(now, length)
	l.win.add(now, cost)
	l.maxReq = max(l.maxReq, l.win.requests())
	l.maxTok = max(l.maxTok, l.win.tokens)
}

// limiterWindow is the span over which a Limiter's admissions are counted:
// its own Window when it has one, else the configured window.
func limiterWindow(cfg *ProviderConfig) time.Duration {
	if w, ok := cfg.Limiter.(interface{ Window() time.Duration }); ok {
		if d := w.Window(); d > 0 {
			return d
		}
	}
	return cfg.window()
}

// decide admits a request costing cost tokens, or says how long until it
// would fit. With try false it only reports the quotas (for responses that
// are not served). It is called with the provider's lock held.
func (l *limits) decide(now time.Time, cfg *ProviderConfig, cost int64, try bool) decision {
	length := cfg.window()
	rl, tl := int64(cfg.RequestsPerWindow), int64(cfg.TokensPerWindow)
	l.win.prune(now, length)
	d := decision{length: length}
	d.req.limit, d.tok.limit = max(rl, 0), max(tl, 0)

	if !try {
		// Only report.
	} else if tl > 0 && cost > tl {
		d.tooLarge, d.which = true, "tokens"
	} else if cfg.Algorithm == FixedWindow {
		l.fix.roll(now, length)
		if rl > 0 && l.fix.req+1 > rl {
			d.wait, d.which = l.fix.end.Sub(now), "requests"
		}
		if tl > 0 && l.fix.toks+cost > tl && d.wait <= 0 {
			d.wait, d.which = l.fix.end.Sub(now), "tokens"
		}
		d.admit = d.wait <= 0
		if d.admit {
			l.fix.req++
			l.fix.toks += cost
		}
	} else if cfg.Algorithm == TokenBucket {
		if rl > 0 {
			l.reqB.refill(now, rl, length)
			if w := l.reqB.wait(1, rl, length); w > d.wait {
				d.wait, d.which = w, "requests"
			}
		}
		if tl > 0 {
			l.tokB.refill(now, tl, length)
			if w := l.tokB.wait(cost, tl, length); w > d.wait {
				d.wait, d.which = w, "tokens"
			}
		}
		d.admit = d.wait <= 0
		if d.admit {
			if rl > 0 {
				l.reqB.level--
			}
			if tl > 0 {
				l.tokB.level -= float64(cost)
			}
		}
	} else {
		if rl > 0 {
			if w := l.win.waitRequests(now, length, rl); w > d.wait {
				d.wait, d.which = w, "requests"
			}
		}
		if tl > 0 {
			if w := l.win.waitTokens(now, length, tl, cost); w > d.wait {
				d.wait, d.which = w, "tokens"
			}
		}
		d.admit = d.wait <= 0
	}

	if d.admit {
		l.win.add(now, cost)
		l.maxReq = max(l.maxReq, l.win.requests())
		l.maxTok = max(l.maxTok, l.win.tokens)
	}

	if cfg.Algorithm == FixedWindow {
		l.fix.roll(now, length)
		reset := l.fix.end.Sub(now)
		if rl > 0 {
			d.req.remaining, d.req.reset = max(rl-l.fix.req, 0), reset
		}
		if tl > 0 {
			d.tok.remaining, d.tok.reset = max(tl-l.fix.toks, 0), reset
		}
	} else if cfg.Algorithm == TokenBucket {
		if rl > 0 {
			l.reqB.refill(now, rl, length)
			d.req.remaining, d.req.reset = l.reqB.remaining(), l.reqB.full(rl, length)
		}
		if tl > 0 {
			l.tokB.refill(now, tl, length)
			d.tok.remaining, d.tok.reset = max(l.tokB.remaining(), 0), l.tokB.full(tl, length)
		}
	} else {
		d.req.remaining = max(rl-l.win.requests(), 0)
		d.req.reset = l.win.resetRequests(now, length)
		d.tok.remaining = max(tl-l.win.tokens, 0)
		d.tok.reset = l.win.resetTokens(now, length)
	}
	return d
}
