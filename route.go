package steady

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/steady-go/steady/internal/ascii"
	"github.com/tidwall/gjson"
)

// errNoUpstream is the error of a routed request that no upstream can
// take: every key was refused, or none comes back before its deadline.
var errNoUpstream = errors.New("steady: no upstream available")

// errReroute is admit's error when the chosen upstream became unusable
// before the attempt was sent: the attempt is routed again, uncounted.
var errReroute = errors.New("steady: upstream unusable, routing again")

// maxReroutes bounds, per upstream, how often one request is routed
// again before it is sent.
const maxReroutes = 8

// maxMoves bounds, per upstream, how often one request moves from one
// upstream's queue to another's (after that it stays where it waits), and
// moveGain is the least a move must bring its turn forward.
const (
	maxMoves = 8
	moveGain = sameMoment
)

// routing is what a routed request keeps across its attempts.
type routing struct {
	rt       *router
	t        *Transport      // the call's, for sooner and routed
	req      *http.Request   // the caller's
	ctx      context.Context // the caller's
	op       string          // the operation path, below the client's base URL
	body     []byte          // the request body; nil: none
	model    string          // the model the caller named
	stream   bool            // the body asks for a stream ("stream": true)
	est      TokenEstimate   // what pacing counts for it
	reqs     []*http.Request // the request as each upstream gets it, made when first chosen
	failed   []bool          // upstreams that failed this request (5xx, transport error, 429)
	cur      *route          // the upstream of the current attempt
	probe    bool            // the current attempt probes cur's refused key
	stop     <-chan struct{} // closed when cur becomes unusable
	reroutes int
	moveTo   *route    // where sooner found the request would go sooner
	moveAt   time.Time // when moveTo would send it
	moveLate bool      // it moves because its place was past its deadline
	moves    int       // times it moved from one upstream's queue to another's
}

// startRouting prepares c for routing: it reads the body once (the
// caller's request is never sent, only copies of it) and what pacing
// counts of it.
func (c *call) startRouting(rt *router) error {
	if c.next != nil {
		if err := rt.sameOrigin(c.req.URL); err != nil {
			closeBody(c.req)
			return err
		}
	}
	body, err := readBody(c.req)
	if err != nil {
		return fmt.Errorf("steady: reading the request body: %w", err)
	}
	rc := &routing{rt: rt, t: c.t, req: c.req, ctx: c.ctx, op: rt.operation(c.req.URL), body: body,
		reqs: make([]*http.Request, len(rt.routes)), failed: make([]bool, len(rt.routes))}
	if body != nil {
		rc.model = gjson.GetBytes(body, "model").String()
		rc.stream = gjson.GetBytes(body, "stream").Bool()
		if p := c.t.pacer; p != nil && !p.cfg.Disabled {
			tmp := c.req.WithContext(c.ctx)
			tmp.Body = http.NoBody
			tmp.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			_, rc.est = inspectRequest(tmp, p.cfg.Estimator)
		}
	}
	c.rc = rc
	c.replayable = true
	return nil
}

// candidate is an upstream a request may go to, and when.
type candidate struct {
	r    *route
	at   time.Time
	load int // requests waiting and in flight in its partition
}

// route chooses the upstream of the next attempt and addresses the
// attempt to it. When none can take it now (every circuit open, every key
// refused and not yet due for a probe), it waits for the first to come
// back, if the request's deadline allows.
func (c *call) route() error {
	if r := c.rc.moveTo; r != nil {
		if st := r.standing(time.Now(), false); st.usable && !c.rc.failed[r.idx] {
			c.moved()
			c.rc.moveTo = nil
			c.use(r)
			return nil
		}
		c.rc.moveTo = nil
	}
	for {
		now := time.Now()
		r, wake, why := c.pick(now)
		if r != nil {
			c.use(r)
			return nil
		}
		if wake.IsZero() {
			return fmt.Errorf("%w: %s", errNoUpstream, why)
		}
		if !wake.After(now) {
			wake = now.Add(rampStep) // a probe is out: its verdict is near
		}
		if dl, ok := c.ctx.Deadline(); ok && dl.Before(wake) {
			err := fmt.Errorf("%w: %s; the first is back in %v, after the deadline", errNoUpstream, why, wake.Sub(now).Round(time.Millisecond))
			if why == "circuit open" {
				err = fmt.Errorf("%w: %w", ErrCircuitOpen, err)
			}
			return err
		}
		ev := c.event(EventPace, Failure{}, nil)
		ev.Upstream, ev.Wait, ev.Reason = "", wake.Sub(now), "waiting for an upstream: "+why
		c.t.emit(ev)
		if err := retryWait(c.ctx, wake.Sub(now)); err != nil {
			return err
		}
	}
}

// pick returns the upstream the next attempt goes to, or, when none can
// take it now, when the first may come back and why none can. Upstreams
// that failed this request are chosen only when no other can be.
func (c *call) pick(now time.Time) (*route, time.Time, string) {
	rc := c.rc
	var wake time.Time
	why := ""
	cands := make([]candidate, 0, len(rc.rt.routes))
	for pass := 0; pass < 2 && len(cands) == 0; pass++ {
		for _, r := range rc.rt.routes {
			if pass == 0 && rc.failed[r.idx] {
				continue
			}
			st := r.standing(now, true)
			switch {
			case st.probe:
				// A probe (of a circuit or of a refused key) goes first:
				// it is how the upstream comes back.
				rc.probe = st.keyProbe
				return r, time.Time{}, ""
			case !st.usable:
				if !st.wake.IsZero() && (wake.IsZero() || st.wake.Before(wake)) {
					wake = st.wake
				}
				if why == "" || st.why == "circuit open" {
					why = st.why
				}
				continue
			}
			at, load, _ := c.t.pacer.plan(c.rc.routed(r), r.name, ascii.BoundName(r.model(rc.model)), rc.est, now)
			if st.rampAt.After(at) {
				at = st.rampAt
			}
			cands = append(cands, candidate{r: r, at: at, load: load})
		}
	}
	rc.probe = false
	if len(cands) == 0 {
		if allRefused(rc.rt, now) {
			// Every key was refused: nothing will come back by waiting.
			// The request goes to the one probed soonest, as it would
			// without routing, and fails there if it is still refused.
			return soonestProbe(rc.rt), time.Time{}, ""
		}
		return nil, wake, why
	}
	return rc.rt.choose(cands, c.ctx, now), time.Time{}, ""
}

// choose applies the tiers and weights: the best tier with an upstream
// that can send the request before its deadline, less a quarter of the
// time left up to a second for the answer (the soonest overall when none
// can); in it, among those that have room now, or else those planned
// soonest, the least loaded for its weight (a partition whose limits are
// not known yet plans every request for now), and among those the next by
// smooth weighted round robin.
func (rt *router) choose(cands []candidate, ctx interface{ Deadline() (time.Time, bool) }, now time.Time) *route {
	dl, hasDL := ctx.Deadline()
	if hasDL {
		// A request sent just before its deadline would fail waiting for
		// its answer: leave it some time.
		dl = dl.Add(-min(time.Second, dl.Sub(now)/4))
	}
	tier, found := -1, false
	for _, cd := range cands {
		if (!hasDL || !cd.at.After(dl)) && (!found || cd.r.tier < tier) {
			tier, found = cd.r.tier, true
		}
	}
	var soon time.Time
	for _, cd := range cands {
		if found && cd.r.tier != tier {
			continue
		}
		at := maxTime(cd.at, now)
		if soon.IsZero() || at.Before(soon) {
			soon = at
		}
	}
	tied := func(cd candidate) bool {
		return (!found || cd.r.tier == tier) && maxTime(cd.at, now).Sub(soon) <= time.Millisecond
	}
	var least *candidate
	for i, cd := range cands {
		if tied(cd) && (least == nil || cd.load*least.r.weight < least.load*cd.r.weight) {
			least = &cands[i]
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var best *route
	total := 0
	for _, cd := range cands {
		if !tied(cd) || cd.load*least.r.weight != least.load*cd.r.weight {
			continue
		}
		cd.r.cw += cd.r.weight
		total += cd.r.weight
		if best == nil || cd.r.cw > best.cw {
			best = cd.r
		}
	}
	best.cw -= total
	return best
}

// sooner reports whether another upstream would send the request before
// at, the time planned for it in the queue it waits in (or found past its
// deadline), by at least moveGain, and records the one that would send it
// soonest, of the best tier, in rc.moveTo. It considers the upstreams
// choose would: usable, not failed by the request, of the same tier or a
// better one; of a worse tier only when at is past the deadline (less the
// time left for the answer), and then only those that can send it before.
// An upstream whose limits are not known yet plans every request for now:
// it counts only when idle, or when at is past the deadline. It runs in
// the request's goroutine, while it waits, with no lock held.
func (rc *routing) sooner(at time.Time) bool {
	if rc.moves >= maxMoves*len(rc.rt.routes) {
		return false
	}
	now := time.Now()
	dl, hasDL := rc.ctx.Deadline()
	if hasDL {
		dl = dl.Add(-min(time.Second, dl.Sub(now)/4))
	}
	late := hasDL && at.After(dl)
	cur := rc.cur
	var best *route
	var bestAt time.Time
	for _, r := range rc.rt.routes {
		if r == cur || rc.failed[r.idx] || (r.tier > cur.tier && !late) {
			continue
		}
		st := r.standing(now, false)
		if !st.usable {
			continue
		}
		rat, load, known := rc.t.pacer.plan(rc.routed(r), r.name, ascii.BoundName(r.model(rc.model)), rc.est, now)
		rat = maxTime(rat, st.rampAt)
		if (!known && load > 0 && !late) || (hasDL && rat.After(dl)) || !rat.Add(moveGain).Before(at) {
			// An upstream whose limits are not known yet plans every
			// request for now: only an idle one is sure to be sooner,
			// unless the request cannot be served where it is.
			continue
		}
		if best == nil || r.tier < best.tier || (r.tier == best.tier && rat.Before(bestAt)) {
			best, bestAt = r, rat
		}
	}
	rc.moveTo, rc.moveAt, rc.moveLate = best, bestAt, late
	return best != nil
}

// use addresses the next attempt to r.
func (c *call) use(r *route) {
	rc := c.rc
	rc.cur = r
	rc.stop = r.stopChan()
	r.routed()
	c.br = r.br
	c.upstream = r.name
	c.out = c.rc.routed(r)
	c.body = bodyInfo{done: true, model: ascii.BoundName(r.model(rc.model)), est: rc.est, stream: rc.stream}
	if rc.model == "" {
		c.body.model = ""
	}
}

// routed returns the request as r gets it, made once per request.
func (rc *routing) routed(r *route) *http.Request {
	if rc.reqs[r.idx] == nil {
		rc.reqs[r.idx] = r.request(rc.req, rc.ctx, rc.op, rc.body, rc.model)
	}
	return rc.reqs[r.idx]
}

// reroute reports whether admit's err sends the request to another
// upstream before it is sent, and counts it. A key probe the attempt
// held is given back.
func (c *call) reroute(err error) bool {
	if c.rc.probe {
		r := c.rc.cur
		r.mu.Lock()
		r.probing = false
		r.mu.Unlock()
		c.rc.probe = false
	}
	if err == errMoved {
		c.rc.moves++
		return true
	}
	if err != errReroute {
		return false
	}
	c.rc.reroutes++
	return c.rc.reroutes <= maxReroutes*len(c.rc.rt.routes)
}

// moved reports, with an EventUpstream, that the request left the queue
// of the upstream it waited for (c.upstream, before use) for rc.moveTo's,
// which sends it sooner. The reason names the upstream it moves to (a configured name,
// bounded) and why; Until is when it is planned there.
func (c *call) moved() {
	rc := c.rc
	if rc.moveTo == nil || !c.t.observed() {
		return
	}
	why := ": would go sooner"
	if rc.moveLate {
		why = ": its turn here was past its deadline"
	}
	ev := c.event(EventUpstream, Failure{}, nil)
	ev.Until, ev.Reason = rc.moveAt, "moved to "+rc.moveTo.name+why
	c.t.emit(ev)
}

// unroutable ends a request that no upstream can take.
func (c *call) unroutable(err error) (*http.Response, error) {
	reason := strings.TrimPrefix(err.Error(), "steady: ")
	if c.attempt > 1 && c.ctx.Err() == nil {
		return c.giveUpLast(reason)
	}
	if c.ctx.Err() != nil && c.attempt > 1 {
		return c.canceled(err)
	}
	ev := c.event(EventRejected, Failure{}, err)
	ev.Reason = reason
	c.t.emit(ev)
	return fail(c.req, c.next, err, reason)
}

// routeDecide is decide for a routed request: a refused key takes its
// upstream out of the rotation and moves the request to another at once,
// uncounted; a failure worth retrying moves the retry to an upstream that
// has not failed this request, at once, and so does one steady would
// otherwise give up on (retries exhausted, a hint too long, the budget
// spent) while such an upstream is left.
func (c *call) routeDecide(f Failure) (time.Duration, string) {
	rc := c.rc
	r := rc.cur
	now := time.Now()
	if keyRefused(f) {
		r.refuse(f.Reason, rc.probe, now)
		rc.failed[r.idx] = true
		if c.alternative(r) {
			c.uncounted++
			return 0, ""
		}
		return c.decide(f)
	}
	switch {
	case f.Status != 0 && (rc.probe || r.isDead()):
		r.accept(now) // the key authenticates again
	case rc.probe:
		r.mu.Lock()
		r.probing = false // no answer: the next request probes again
		r.mu.Unlock()
	}
	rc.probe = false
	if !f.Retryable {
		return c.decide(f)
	}
	rc.failed[r.idx] = true
	alt := c.alternative(r)
	wait, reason := c.decide(f)
	switch {
	case reason == "" && (alt || f.Status == http.StatusTooManyRequests):
		// The pacer holds r's partition for a 429's hint; another
		// upstream needs no wait at all.
		return 0, ""
	case reason != "" && alt && c.ctx.Err() == nil:
		// Retries exhausted, a hint too long, the retry budget spent, a
		// wait past the deadline: another upstream may serve it now.
		c.uncounted = c.attempt // the next upstream gets retries of its own
		return 0, ""
	}
	return wait, reason
}

// alternative reports whether an upstream other than r, not yet failed by
// this request, may take it.
func (c *call) alternative(r *route) bool {
	now := time.Now()
	for _, o := range c.rc.rt.routes {
		if o != r && !c.rc.failed[o.idx] {
			if st := o.standing(now, false); st.usable || st.probe {
				return true
			}
		}
	}
	return false
}

// routeSucceeded records a routed attempt that succeeded.
func (c *call) routeSucceeded() {
	if r := c.rc.cur; c.rc.probe || r.isDead() {
		r.accept(time.Now())
	}
}

// keyRefused reports whether f says the upstream's key cannot serve: 401,
// 402, 403, insufficient quota, billing, a spend limit.
func keyRefused(f Failure) bool {
	switch f.Status {
	case http.StatusUnauthorized, http.StatusPaymentRequired, http.StatusForbidden:
		return true
	}
	switch f.Reason {
	case "billing error", "insufficient quota", "spend limit reached":
		return true
	}
	return false
}

// standing is what a request sees of an upstream.
type standing struct {
	usable   bool
	probe    bool      // the request may probe it now, ahead of the others
	keyProbe bool      // the probe is of a refused key
	wake     time.Time // when an unusable upstream may come back; zero if not known
	why      string    // why it is unusable
	rampAt   time.Time // a recovering upstream's next free slot in its ramp
}

// standing returns r's standing now. With take, a key probe it offers is
// taken: the request that sees it must send it.
func (r *route) standing(now time.Time, take bool) standing {
	v := r.br.look()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		if (!r.probing || now.Sub(r.probeSent) > probeLost) && !now.Before(r.probeAt) && v.state == BreakerClosed {
			if take {
				r.probing, r.probeSent = true, now
			}
			return standing{probe: true, keyProbe: true}
		}
		return standing{wake: r.probeAt, why: "key refused"}
	}
	switch {
	case v.state == BreakerOpen:
		return standing{wake: v.until, why: "circuit open"}
	case v.probeFree:
		return standing{probe: true}
	case v.state == BreakerHalfOpen:
		return standing{wake: now.Add(rampStep), why: "circuit half-open"}
	}
	st := standing{usable: true}
	if !r.healed.IsZero() {
		if e := now.Sub(r.healed); e >= rampSteps*rampStep {
			r.healed = time.Time{}
		} else if step := int(e / rampStep); r.rampN >= 1<<step {
			st.rampAt = r.healed.Add(time.Duration(step+1) * rampStep)
		}
	}
	return st
}

// routed counts a request routed to r, for its ramp.
func (r *route) routed() {
	r.mu.Lock()
	if !r.healed.IsZero() {
		r.rampN++
	}
	r.mu.Unlock()
}

// stopChan returns the channel closed when r next becomes unusable.
func (r *route) stopChan() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone == nil {
		r.gone = make(chan struct{})
	}
	return r.gone
}

// goneLocked closes r's stop channel: requests waiting to be sent to r
// are routed again.
func (r *route) goneLocked() {
	if r.gone != nil {
		close(r.gone)
		r.gone = nil
	}
}

func (r *route) isDead() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dead
}

// refuse records that r's key was refused: no request goes to it but a
// probe, one at a time, after a growing interval.
func (r *route) refuse(why string, probe bool, now time.Time) {
	r.mu.Lock()
	was := r.dead
	switch {
	case !r.dead:
		r.dead, r.probeEvery = true, firstKeyProbe
	case probe:
		r.probeEvery = min(2*r.probeEvery, maxKeyProbe)
	}
	if probe {
		r.probing = false
	}
	if !was || probe {
		r.probeAt = now.Add(r.probeEvery)
	}
	r.deadWhy = why
	r.goneLocked()
	until := r.probeAt
	r.mu.Unlock()
	if !was {
		r.emit(Event{Kind: EventUpstream, Time: now, Upstream: r.name, Until: until, Reason: "key refused (" + why + "): skipped until a probe succeeds"})
	}
}

// accept records that r's key was accepted again: r is back, ramped.
func (r *route) accept(now time.Time) {
	r.mu.Lock()
	was := r.dead
	r.dead, r.probing, r.deadWhy = false, false, ""
	if was {
		r.healed, r.rampN = now, 0
	}
	r.mu.Unlock()
	if was {
		r.emit(Event{Kind: EventUpstream, Time: now, Upstream: r.name, Reason: "key accepted again: ramped back"})
	}
}

// breakerChanged follows r's circuit: an open one makes r unusable, a
// closed one after that ramps it back.
func (r *route) breakerChanged(ev Event) {
	if ev.Kind != EventBreakerState {
		return
	}
	r.mu.Lock()
	switch ev.To {
	case BreakerOpen:
		r.goneLocked()
	case BreakerClosed:
		r.healed, r.rampN = ev.Time, 0
	}
	r.mu.Unlock()
}

// skipped reports why routing passes the upstream called name by, and
// until when (zero: not known), or "" when it is usable as far as its key
// and circuit go.
func (rt *router) skipped(name string, now time.Time) (string, time.Time) {
	for _, r := range rt.routes {
		if r.name != name {
			continue
		}
		r.mu.Lock()
		dead, why, at := r.dead, r.deadWhy, r.probeAt
		r.mu.Unlock()
		if dead {
			return "key refused (" + why + ")", at
		}
		switch v := r.br.look(); {
		case v.state == BreakerOpen:
			return "circuit open", v.until
		case v.state == BreakerHalfOpen:
			return "circuit half-open", time.Time{}
		}
		return "", time.Time{}
	}
	return "", time.Time{}
}

// allRefused reports whether every upstream's key is refused.
func allRefused(rt *router, now time.Time) bool {
	for _, r := range rt.routes {
		if !r.isDead() {
			return false
		}
	}
	return true
}

// soonestProbe returns the refused upstream whose probe is due first.
func soonestProbe(rt *router) *route {
	var best *route
	var at time.Time
	for _, r := range rt.routes {
		r.mu.Lock()
		p := r.probeAt
		r.mu.Unlock()
		if best == nil || p.Before(at) {
			best, at = r, p
		}
	}
	return best
}

// named returns a breaker of its own for the upstream called name, kept
// outside the per-host map; changed sees its state changes first. Its
// circuit stays open at most half as long as BreakerConfig.OpenTimeout
// says (5 s by default): a routed request that probes it and fails
// moves to another upstream, so that probing costs it little, and the
// upstream is found healed twice as soon.
func (bs *breakers) named(name string, changed func(Event)) *breaker {
	if bs == nil {
		return nil
	}
	pol := bs.pol
	pol.maxOpen = max(pol.maxOpen/2, firstOpenPeriod)
	b := &breaker{upstream: name, pol: &pol, emit: bs.emit}
	b.act = func(ev Event) {
		changed(ev)
		if bs.act != nil {
			bs.act(ev)
		}
	}
	st := bs.pol.gobreaker
	st.Name = name
	st.OnStateChange = b.onStateChange
	st.ReadyToTrip = b.readyToTrip
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](st)
	return b
}

// UpstreamOrigin returns the origin, "scheme://host[:port]", of the
// BaseURL of the [Upstream] called name in [Config.Upstreams], or "" when
// t routes to none of that name. It is where the requests routed to that
// upstream go, for integrations that label them by host (steadyotel's
// server.address); an origin holds no credential (a BaseURL's user
// information is refused, and Google's ?key= is in its query).
func (t *Transport) UpstreamOrigin(name string) string {
	if t == nil || t.router == nil {
		return ""
	}
	for _, r := range t.router.routes {
		if r.name == name {
			return r.base.Scheme + "://" + r.base.Host
		}
	}
	return ""
}

// breakerState reports the state of upstream's circuit: one of the
// routed upstreams, by name, or a host.
func (t *Transport) breakerState(upstream string) BreakerState {
	if t.router != nil {
		for _, r := range t.router.routes {
			if r.name == upstream {
				return r.br.look().state
			}
		}
	}
	return t.breakers.state(upstream)
}

// plan returns when a request of est, sent as req in upstream's
// partition for model, would go, as its queue is planned now, how many
// requests wait and are in flight there, and whether its limits are known
// (a partition not made yet has none: it plans every request for now).
func (p *pacer) plan(req *http.Request, upstream, model string, est TokenEstimate, now time.Time) (time.Time, int, bool) {
	if p == nil || p.cfg.Disabled {
		return now, 0, true
	}
	key, _ := p.partitionKey(req, model, upstream)
	pt, ok := p.parts.get(key)
	if !ok {
		return now, 0, false
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.advanceLocked(p, now)
	at := pt.readyAtLocked(p, now, pt.queued, est, true)
	if pt.hintUntil.After(at) {
		at = pt.hintUntil
	}
	return at, pt.q.n + pt.inflight, pt.known
}

// sameOrigin checks that every upstream has u's origin (scheme, host and
// port): the OpenAI SDK refuses a request its middleware sent elsewhere
// than its base URL's origin.
func (rt *router) sameOrigin(u *url.URL) error {
	for _, r := range rt.routes {
		if !strings.EqualFold(r.base.Scheme, u.Scheme) || !strings.EqualFold(r.base.Hostname(), u.Hostname()) || effectivePort(r.base) != effectivePort(u) {
			return fmt.Errorf("steady: Config.Upstreams[%d] (%q) is on another origin than the request (%s://%s): the OpenAI SDK refuses a request its middleware sends to another origin; use the Transport as the HTTP client's transport (option.WithHTTPClient) to route across origins", r.idx, r.name, u.Scheme, u.Host)
		}
	}
	return nil
}

// effectivePort is u's port, or its scheme's.
func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "http") {
		return "80"
	}
	return "443"
}
