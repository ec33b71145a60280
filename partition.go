package steady

import (
	"hash/fnv"
	"hash/maphash"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// maxWindows is how many rate-limit windows a partition tracks: the two
// configured ones and up to four announced by headers (per minute and per
// day, requests and tokens). Further announced windows are ignored.
const maxWindows = 6

// Bounds on what is believed from headers, so that nothing a server sends
// can make a wait unbounded.
const (
	minPeriod = time.Second
	// shortPeriod is the longest window length inferred from headers that
	// is believed over the default of one minute.
	shortPeriod = 45 * time.Second
	maxPeriod   = 31 * 24 * time.Hour
	// minRate is the slowest a window is ever paced: one unit a day.
	minRate = rate.Limit(1.0 / (24 * 60 * 60))
	// maxBurst keeps every burst and cost within an int on any platform.
	maxBurst = math.MaxInt32
)

// window is one rate-limit window of a partition and the limiter that
// paces it. All fields are guarded by the partition's mu.
type window struct {
	lim    *rate.Limiter // nil until the window's quota is known
	unit   Unit
	config bool   // stated by PacingConfig rather than announced
	name   string // announced window name, if any
	limit  int64  // announced or configured quota; -1 unknown
	// remaining and reset are the latest announced values.
	remaining int64
	reset     time.Time
	period    time.Duration
	maxSeen   int64 // largest remaining ever announced: a quota estimate
	// What the headers imply of a window whose length they do not state
	// (see inferLocked): the longest reset announced, the remaining count
	// announced with it, and whether the resets show a sliding window.
	maxReset time.Duration
	remAtMax int64
	sliding  bool
}

// partition holds the pacing state of one key: upstream host, credential
// fingerprint and model, or a user key.
type partition struct {
	key      uint64
	label    string
	upstream string // scheme://host, for the breaker state
	host     string
	model    string

	// users counts acquires in progress and permits not yet settled; a
	// partition with users is never dropped. lastUsed is in Unix
	// nanoseconds. Both are written under pacer.mu's read lock.
	users    atomic.Int32
	lastUsed atomic.Int64

	mu sync.Mutex
	// Guarded by mu:
	windows  [maxWindows]window
	nwin     int
	known    bool      // limits are configured, announced, or will not be
	probing  bool      // after a 429: few in flight until a success
	probeSeq uint64    // permits up to this one were issued before the 429
	cooldown time.Time // no request is sent before this time
	inflight int       // sent and not yet settled
	reserved int       // holding a reservation, waiting for its time
	waiting  int       // goroutines waiting in acquire
	// Cumulative costs of every permit issued (reserved) and sent, and
	// the sequence number of the newest permit whose response updated the
	// windows.
	issued, sent  costs
	seq, observed uint64
	wake          chan struct{} // closed when a cold slot frees
	// For a provider that announces no limits: successes per minute, and
	// when the inferred quota last met a 429 or was raised.
	ok                   successes
	okTotal, okAtLimited int64
	last429, raised      time.Time
	limitedSince         time.Time
}

// credential returns the request's credential header value: Authorization,
// Api-Key (Azure) or X-Api-Key (Anthropic). It is only hashed.
func credential(h http.Header) string {
	if v := h["Authorization"]; len(v) > 0 {
		return v[0]
	}
	if v := h["Api-Key"]; len(v) > 0 {
		return v[0]
	}
	if v := h["X-Api-Key"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// fingerprint is a short, stable, one-way mark of a credential for labels.
func fingerprint(cred string) string {
	if cred == "" {
		return "-"
	}
	h := fnv.New64a()
	h.Write([]byte(cred))
	return strconv.FormatUint(h.Sum64()>>40, 16)
}

func requestHost(req *http.Request) string {
	if req.URL != nil && req.URL.Host != "" {
		return req.URL.Host
	}
	return req.Host
}

// partitionFor returns req's partition, creating it if needed, with one
// user counted for the caller.
func (p *pacer) partitionFor(req *http.Request, model []byte, now time.Time) *partition {
	host := requestHost(req)
	var userKey string
	var h maphash.Hash
	h.SetSeed(p.seed)
	if p.cfg.Key != nil {
		userKey = p.cfg.Key(req, string(model))
		h.WriteString(userKey)
	} else {
		h.WriteString(host)
		h.WriteByte(0)
		h.WriteString(credential(req.Header))
		h.WriteByte(0)
		h.Write(model)
	}
	key := h.Sum64()

	p.mu.RLock()
	pt := p.parts[key]
	if pt != nil {
		pt.users.Add(1)
		pt.lastUsed.Store(now.UnixNano())
	}
	p.mu.RUnlock()
	if pt != nil {
		return pt
	}

	pt = p.newPartition(req, host, model, userKey, key, now)
	p.mu.Lock()
	if old := p.parts[key]; old != nil {
		pt = old // another goroutine made it first
	} else {
		p.inserts++
		if len(p.parts) >= p.maxParts || p.inserts%sweepEvery == 0 {
			p.evictLocked(now)
		}
		p.parts[key] = pt
	}
	pt.users.Add(1)
	pt.lastUsed.Store(now.UnixNano())
	p.mu.Unlock()
	return pt
}

func (p *pacer) newPartition(req *http.Request, host string, model []byte, userKey string, key uint64, now time.Time) *partition {
	pt := &partition{key: key, host: host, model: string(model)}
	scheme := "https"
	if req.URL != nil && req.URL.Scheme != "" {
		scheme = req.URL.Scheme
	}
	pt.upstream = scheme + "://" + host
	if userKey != "" || p.cfg.Key != nil {
		pt.label = userKey
	} else {
		var b strings.Builder
		b.WriteString(host)
		if len(model) > 0 {
			b.WriteByte('/')
			b.WriteString(pt.model)
		}
		b.WriteByte('#')
		b.WriteString(fingerprint(credential(req.Header)))
		pt.label = b.String()
	}
	if p.cfg.RequestsPerMinute > 0 {
		pt.addConfigWindow(p, UnitRequests, p.cfg.RequestsPerMinute, now)
	}
	if p.cfg.TokensPerMinute > 0 {
		pt.addConfigWindow(p, UnitTokens, p.cfg.TokensPerMinute, now)
	}
	pt.known = pt.nwin > 0 || p.coldStart <= 0
	return pt
}

func (pt *partition) addConfigWindow(p *pacer, u Unit, perMinute int64, now time.Time) {
	w := &pt.windows[pt.nwin]
	pt.nwin++
	*w = window{unit: u, config: true, limit: perMinute, remaining: -1, period: time.Minute, maxSeen: -1}
	r, b := p.pace(float64(perMinute), time.Minute)
	w.lim = rate.NewLimiter(r, b)
}

// sweepEvery is how many new partitions are made between two sweeps of
// the idle ones when the map is not full.
const sweepEvery = 256

// evictLocked drops idle partitions: every one unused for IdleTimeout, and
// if the map is still full, the least recently used one. Partitions with
// requests in flight or waiting are kept. p.mu is held for writing.
func (p *pacer) evictLocked(now time.Time) {
	cutoff := now.Add(-p.idle).UnixNano()
	var lru *partition
	for k, pt := range p.parts {
		if pt.users.Load() != 0 {
			continue
		}
		last := pt.lastUsed.Load()
		if last <= cutoff {
			delete(p.parts, k)
			continue
		}
		if lru == nil || last < lru.lastUsed.Load() {
			lru = pt
		}
	}
	if len(p.parts) >= p.maxParts && lru != nil {
		delete(p.parts, lru.key)
	}
}

// release gives back the user a partitionFor call counted.
func (pt *partition) release() { pt.users.Add(-1) }

// cost returns what a request of estimate est counts in a window of unit u.
func cost(u Unit, est TokenEstimate) int64 {
	switch u {
	case UnitRequests:
		return 1
	case UnitTokens:
		return est.Input + est.Output
	case UnitInputTokens:
		return est.Input
	case UnitOutputTokens:
		return est.Output
	}
	return 0
}

// delayLocked returns how long a request of estimate est must wait for
// every window to have room: the binding window wins.
func (pt *partition) delayLocked(now time.Time, est TokenEstimate) time.Duration {
	var d time.Duration
	for i := range pt.nwin {
		w := &pt.windows[i]
		n := min(cost(w.unit, est), maxBurst)
		if n <= 0 || w.lim == nil {
			continue
		}
		tok := w.lim.TokensAt(now)
		if tok >= float64(n) {
			continue
		}
		r := float64(w.lim.Limit())
		if r <= 0 {
			return maxDuration
		}
		secs := (float64(n) - tok) / r
		if secs >= maxDuration.Seconds() {
			return maxDuration
		}
		d = max(d, time.Duration(secs*float64(time.Second)))
	}
	return d
}

const maxDuration = time.Duration(math.MaxInt64)

// takeLocked reserves est in every window. Far from the limits it only
// calls AllowN, which does not allocate.
func (pt *partition) takeLocked(now time.Time, est TokenEstimate) {
	for i := range pt.nwin {
		w := &pt.windows[i]
		n := int(min(cost(w.unit, est), maxBurst))
		if n <= 0 || w.lim == nil || w.lim.AllowN(now, n) {
			continue
		}
		debit(w.lim, now, n)
	}
	pt.seq++
	pt.issued.add(est)
}

// costs are cumulative costs in every unit.
type costs struct{ req, in, out int64 }

func (c *costs) add(est TokenEstimate) {
	c.req++
	c.in += est.Input
	c.out += est.Output
}

// of returns the cost in unit u.
func (c costs) of(u Unit) int64 {
	switch u {
	case UnitRequests:
		return c.req
	case UnitTokens:
		return c.in + c.out
	case UnitInputTokens:
		return c.in
	case UnitOutputTokens:
		return c.out
	}
	return 0
}

// debit takes n from lim now, going into debt if needed, even when n is
// larger than the burst: later reservations wait for the debt to be repaid.
func debit(lim *rate.Limiter, now time.Time, n int) {
	b := lim.Burst()
	if n > b {
		lim.SetBurstAt(now, n)
		lim.ReserveN(now, n)
		lim.SetBurstAt(now, b)
		return
	}
	lim.ReserveN(now, n)
}

// windowFor returns the announced window of unit u and name, adding it if
// there is room; nil if there is none.
func (pt *partition) windowFor(u Unit, name string) *window {
	for i := range pt.nwin {
		w := &pt.windows[i]
		if !w.config && w.unit == u && w.name == name {
			return w
		}
	}
	if pt.nwin == maxWindows {
		return nil
	}
	w := &pt.windows[pt.nwin]
	pt.nwin++
	*w = window{unit: u, name: name, limit: -1, remaining: -1, maxSeen: -1}
	return w
}

// namedPeriod reads a window name such as "minute" or "day".
func namedPeriod(name string) time.Duration {
	switch strings.ToLower(name) {
	case "second", "sec", "s", "1s":
		return time.Second
	case "minute", "min", "m", "1m":
		return time.Minute
	case "hour", "h", "1h":
		return time.Hour
	case "day", "d", "1d", "daily":
		return 24 * time.Hour
	}
	return 0
}

// inferLocked learns from one announced window whether it is a sliding
// window and how long, when the headers do not say. A reset is the time
// until the quota is fully back. In a sliding window that is the window's
// length whatever is used, since the newest request leaves the window last:
// two samples whose remaining counts differ by a tenth of the limit or more
// and whose resets are within 5% of each other show one, and the longest
// reset is its length. (In a token bucket the reset shrinks with what is
// left; the spread of what remains over the reset paces it well enough.)
func (w *window) inferLocked(limit, remaining int64, untilReset time.Duration) {
	if limit <= 0 || remaining < 0 || untilReset <= 0 || untilReset > maxPeriod {
		return
	}
	if w.maxReset > 0 && abs64(remaining-w.remAtMax) >= max(limit/10, 1) &&
		untilReset >= w.maxReset-w.maxReset/20 && untilReset <= w.maxReset+w.maxReset/20 {
		w.sliding = true
	}
	if untilReset > w.maxReset {
		w.maxReset, w.remAtMax = untilReset, remaining
	}
}

// inferred is the length of a window found to be sliding, 2% longer for
// the time a response takes to arrive, or 0.
func (w *window) inferred() time.Duration {
	if w.sliding {
		return max(w.maxReset+w.maxReset/50, minPeriod)
	}
	return 0
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// roundPeriod rounds d up to a whole second, minute, hour or day.
func roundPeriod(d time.Duration) time.Duration {
	for _, p := range [...]time.Duration{time.Minute, time.Hour, 24 * time.Hour} {
		if d <= p {
			return p
		}
	}
	return maxPeriod
}

// observeLocked applies one announced window, seen in the response to pm
// at now. fresh is false for a response older than one already applied:
// its remaining count is stale and only its quota is used.
func (pt *partition) observeLocked(p *pacer, pm *permit, a Window, now time.Time, fresh bool) {
	if a.Unit < UnitRequests || a.Unit > UnitOutputTokens {
		return
	}
	w := pt.windowFor(a.Unit, a.Name)
	if w == nil {
		return
	}
	if a.Limit > 0 {
		w.limit = a.Limit
	}
	untilReset := time.Duration(-1)
	if !a.Reset.IsZero() {
		untilReset = min(max(a.Reset.Sub(now), 0), maxPeriod)
		if fresh {
			w.reset = now.Add(untilReset)
		}
	}
	if a.Remaining >= 0 {
		if fresh {
			w.remaining = a.Remaining
		}
		w.maxSeen = max(w.maxSeen, a.Remaining)
	}

	// The window's length: announced, named, configured, or one minute,
	// and never shorter than a reset it announced.
	period := a.Period
	if period <= 0 {
		period = namedPeriod(a.Name)
	}
	if period <= 0 {
		// A reset well beyond the period believed so far shows a longer
		// window (per hour, per day); resets are rounded to the second,
		// so a little beyond is not. A reset more than a day away is not
		// believed: it is more likely misread than a longer window.
		if fresh {
			w.inferLocked(a.Limit, a.Remaining, untilReset)
		}
		period = max(w.period, time.Minute)
		if d := w.inferred(); d > 0 && d < shortPeriod && w.period <= time.Minute {
			// A window clearly shorter than a minute, such as ten
			// seconds. Near a minute, the minute is believed.
			period = d
		}
		if untilReset > period+period/4 && untilReset <= 24*time.Hour {
			period = roundPeriod(untilReset)
		}
	}
	w.period = min(max(period, minPeriod), maxPeriod)

	limit := w.limit
	if limit <= 0 {
		limit = w.maxSeen
	}
	if limit <= 0 {
		return
	}
	r, b := p.pace(float64(limit), w.period)
	// Spread what remains over the time to the reset when that is faster
	// than the window's steady rate (a fixed window with quota left). What
	// was sent after this request may not be counted in what remains;
	// what is still waiting for its turn will be paced at the new rate.
	after := pt.issued.of(a.Unit) - pm.issued.of(a.Unit)
	sentAfter := pt.sent.of(a.Unit) - pm.sent.of(a.Unit)
	// The time is taken as at least a second, so that a reset a few
	// milliseconds away does not let everything go at once.
	if fresh && a.Remaining >= 0 && untilReset > 0 {
		spare := float64(a.Remaining-sentAfter) - p.headroom*float64(limit)
		if spread := rate.Limit(spare / max(untilReset.Seconds(), 1)); spread > r {
			r = spread
		}
	}
	created := w.lim == nil
	if created {
		w.lim = rate.NewLimiter(r, b)
	} else {
		if w.lim.Limit() != r {
			w.lim.SetLimitAt(now, r)
		}
		if w.lim.Burst() != b {
			w.lim.SetBurstAt(now, b)
		}
	}
	if !fresh || a.Remaining < 0 {
		return
	}
	// What the server says remains, less what it has not seen yet (sent
	// or still waiting: the limiter's tokens already count both), caps
	// the limiter's tokens; a debt is repaid before the reset at most.
	target := float64(a.Remaining - after)
	if created {
		// What this partition sent before the window was known (the cold
		// start) still counts in it: start the limiter in debt by that
		// much, as far as the server's count confirms it.
		used := min(pt.issued.of(a.Unit), max(limit-a.Remaining, 0)+after)
		target = min(target, float64(int64(b)-used))
	}
	floor := -float64(b)
	if untilReset >= 0 {
		floor = -float64(r) * untilReset.Seconds()
	}
	target = max(target, floor)
	if cur := w.lim.TokensAt(now); cur > target {
		if n := min(math.Ceil(cur-target), maxBurst); n >= 1 {
			debit(w.lim, now, int(n))
		}
	}
}

// exhaustedResetLocked returns the earliest reset among windows with
// nothing remaining, or the zero time.
func (pt *partition) exhaustedResetLocked(now time.Time) time.Time {
	var t time.Time
	for i := range pt.nwin {
		w := &pt.windows[i]
		if w.remaining == 0 && w.reset.After(now) && (t.IsZero() || w.reset.Before(t)) {
			t = w.reset
		}
	}
	return t
}

// wakeLocked wakes goroutines waiting for a cold-start slot.
func (pt *partition) wakeLocked() {
	if pt.wake != nil {
		close(pt.wake)
		pt.wake = nil
	}
}

// inferredName names the requests window a partition infers from its own
// successes when its provider announces no limits and none are configured.
const inferredName = "inferred"

// minInferred is the fewest successes in a minute a quota is inferred from.
const minInferred = 10

// successes counts a partition's successful responses per minute, in two
// buckets, so that the count over the last minute can be estimated.
type successes struct {
	start     time.Time // start of the current bucket
	cur, prev int64
}

func (s *successes) roll(now time.Time) {
	if s.start.IsZero() {
		s.start = now
		return
	}
	if d := now.Sub(s.start); d >= time.Minute {
		if d >= 2*time.Minute {
			s.prev = 0
		} else {
			s.prev = s.cur
		}
		s.cur = 0
		s.start = now
	}
}

func (s *successes) add(now time.Time) {
	s.roll(now)
	s.cur++
}

// lastMinute estimates the successes of the last minute.
func (s *successes) lastMinute(now time.Time) int64 {
	s.roll(now)
	f := 1 - float64(now.Sub(s.start))/float64(time.Minute)
	return s.cur + int64(math.Round(f*float64(s.prev)))
}

// inferLocked adjusts the inferred requests window after a response, for a
// partition whose provider announces no limits and that has none
// configured. The first 429 sets the quota to what succeeded in the last
// minute, if that is at least minInferred. Later 429s set it to the rate of successes since the 429s began:
// while a provider refuses some requests, what it accepts is its limit. A
// minute without 429 while requests wait for their turn raises the quota
// by 2%, so that it is found again if it grows.
func (pt *partition) inferLocked(p *pacer, status int, now time.Time) {
	var w *window
	for i := range pt.nwin {
		if pt.windows[i].name != inferredName || pt.windows[i].config {
			return // limits are configured or announced
		}
		w = &pt.windows[i]
	}
	switch {
	case status == http.StatusTooManyRequests:
		if now.Sub(pt.last429) >= time.Minute {
			pt.limitedSince, pt.okAtLimited = now, pt.okTotal
		}
		pt.last429 = now
		if w == nil {
			n := pt.ok.lastMinute(now)
			if n < minInferred {
				return // too few successes to tell a quota
			}
			w = pt.windowFor(UnitRequests, inferredName)
			*w = window{unit: UnitRequests, name: inferredName, limit: n, remaining: -1, period: time.Minute, maxSeen: -1}
			r, b := p.pace(float64(n), time.Minute)
			w.lim = rate.NewLimiter(r, b)
			debit(w.lim, now, b) // the window is full now
			return
		}
		d := now.Sub(pt.limitedSince)
		if d < 10*time.Second {
			return
		}
		perMinute := int64(float64(pt.okTotal-pt.okAtLimited) * float64(time.Minute) / float64(d))
		if perMinute >= w.limit {
			return
		}
		w.limit = max(perMinute, 1)
	case status < 400 && w != nil && pt.waiting > 0 && now.Sub(pt.last429) >= time.Minute && now.Sub(pt.raised) >= time.Minute:
		pt.raised = now
		w.limit += max(w.limit/50, 1)
	default:
		return
	}
	r, b := p.pace(float64(w.limit), time.Minute)
	w.lim.SetLimitAt(now, r)
	w.lim.SetBurstAt(now, b)
}
