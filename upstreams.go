package steady

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/steady-go/steady/internal/ascii"
	"github.com/tidwall/gjson"
)

// Upstream is one endpoint a [Transport] routes requests to: an API key,
// an Azure OpenAI deployment, another provider's OpenAI-compatible API.
// See [Config.Upstreams]. Each upstream has its own pacing partitions,
// circuit breaker and discovered rates, as a host of its own would.
type Upstream struct {
	// Name labels the upstream in events ([Event.Upstream]), snapshots
	// ([PartitionSnapshot.Upstream]), logs and metrics, and names it to
	// [Transport.BreakerState]; it must not hold a secret. Empty means
	// the BaseURL's host and the upstream's place in the list, from 1
	// ("api.openai.com#2"). Names must differ.
	Name string

	// BaseURL is where the upstream's API lives, such as
	// "https://api.openai.com/v1" or, for Azure OpenAI,
	// "https://east.openai.azure.com/openai/v1" (model names the
	// deployment) or
	// "https://east.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21".
	// A request's path below its client's base URL is appended to it, and
	// its query is added to the request's.
	BaseURL string

	// Key is the upstream's credential, sent in place of the one the
	// client set (which is never sent to an upstream: its Authorization,
	// Api-Key, X-Api-Key and X-Goog-Api-Key headers and its "key" query
	// parameter are removed). Empty means none is sent but what BaseURL
	// holds (Google's "?key=").
	Key string

	// KeyHeader is the header that carries Key. Empty means
	// "Authorization: Bearer <Key>"; any other name (Azure's "api-key",
	// Anthropic's "x-api-key") carries Key as it is.
	KeyHeader string

	// Models maps the model a request names to the one this upstream
	// serves it as (an Azure deployment name, another provider's model
	// id); the body's "model" is rewritten on the attempt's copy, never
	// on the caller's request. The entry "" maps every model not listed.
	// A model that maps to nothing is sent as it is.
	Models map[string]string

	// Weight is the upstream's share among upstreams of its tier that all
	// have room: with weights 3 and 1, three requests in four go to the
	// first. Zero means 1; negative is an error.
	Weight int

	// Tier orders upstreams: 0 is primary, 1 overflow, 2 fallback (any
	// larger number is a later fallback still). A request goes to a higher
	// tier only when no upstream of a lower one can send it before its
	// context's deadline (a request without one waits in the best tier),
	// or when every upstream of the lower tiers is unusable (circuit open,
	// key refused). Negative is an error.
	Tier int
}

// router holds a Transport's upstreams; nil without Config.Upstreams.
type router struct {
	routes []*route
	err    error // a configuration error: every request fails with it

	mu sync.Mutex // guards every route's cw
}

// route is one upstream and what steady learned of it.
type route struct {
	idx    int
	name   string
	base   *url.URL
	header string // canonical header name carrying cred; "" sends none
	cred   string
	models map[string]string
	weight int
	tier   int
	br     *breaker // nil: breakers disabled
	emit   func(Event)

	cw int // smooth weighted round-robin counter; guarded by router.mu

	mu sync.Mutex
	// Guarded by mu:
	dead       bool          // its key was refused; only probes go
	deadWhy    string        // the refusal's reason
	probeAt    time.Time     // when the next probe of a dead key may go
	probeEvery time.Duration // the interval after the next failed probe
	probing    bool          // a probe is out
	probeSent  time.Time     // when it went: one out longer than probeLost is forgotten
	healed     time.Time     // when it came back (key accepted, circuit closed): the ramp's start
	rampN      int           // requests routed to it since healed
	gone       chan struct{} // closed when it becomes unusable (key refused, circuit open)
}

// Dead-key probing and the ramp of a recovered upstream.
const (
	firstKeyProbe = 30 * time.Second // after a key is refused
	maxKeyProbe   = 10 * time.Minute // the longest interval between probes
	rampStep      = 250 * time.Millisecond
	rampSteps     = 12 // the ramp ends after rampSteps*rampStep: 3 s
	probeLost     = 2 * time.Minute
)

// newRouter checks and resolves ups; bs makes each upstream's breaker.
func newRouter(ups []Upstream, bs *breakers, emit func(Event)) *router {
	if len(ups) == 0 {
		return nil
	}
	rt := &router{}
	names := make(map[string]bool, len(ups))
	for i, u := range ups {
		r, err := newRoute(i, u)
		if err == nil && names[r.name] {
			err = fmt.Errorf("name %q used twice", r.name)
		}
		if err != nil {
			rt.err = fmt.Errorf("steady: Config.Upstreams[%d]: %w", i, err)
			return rt
		}
		names[r.name] = true
		r.emit = emit
		r.br = bs.named(r.name, r.breakerChanged)
		rt.routes = append(rt.routes, r)
	}
	return rt
}

func newRoute(i int, u Upstream) (*route, error) {
	base, err := url.Parse(strings.TrimSpace(u.BaseURL))
	switch {
	case err != nil:
		return nil, fmt.Errorf("BaseURL: %w", err)
	case base.Scheme != "http" && base.Scheme != "https":
		return nil, fmt.Errorf("BaseURL %q: want an http or https URL", u.BaseURL)
	case base.Host == "":
		return nil, fmt.Errorf("BaseURL %q has no host", u.BaseURL)
	case base.User != nil:
		return nil, errors.New("BaseURL holds user information: put the credential in Key")
	case u.Weight < 0:
		return nil, fmt.Errorf("negative Weight %d", u.Weight)
	case u.Tier < 0:
		return nil, fmt.Errorf("negative Tier %d", u.Tier)
	case strings.ContainsAny(u.Key, "\r\n"):
		return nil, errors.New("the Key holds a line break")
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	base.RawPath = ""
	base.Fragment = ""
	r := &route{idx: i, base: base, models: u.Models, weight: max(u.Weight, 1), tier: u.Tier, cred: u.Key}
	r.name = strings.TrimSpace(u.Name)
	if r.name == "" {
		r.name = base.Host + "#" + strconv.Itoa(i+1)
	}
	r.name = ascii.BoundName(r.name)
	if u.Key != "" {
		r.header = "Authorization"
		r.cred = "Bearer " + u.Key
		if h := strings.TrimSpace(u.KeyHeader); h != "" {
			r.header = textproto.CanonicalMIMEHeaderKey(h)
			r.cred = u.Key
		}
	}
	return r, nil
}

// model returns the model this upstream serves m as.
func (r *route) model(m string) string {
	if to, ok := r.models[m]; ok && to != "" {
		return to
	}
	if to, ok := r.models[""]; ok && to != "" && m != "" {
		return to
	}
	return m
}

// operation returns the part of u's path that names the operation, below
// the client's base URL: what follows an upstream's base URL the request
// is addressed to, else what follows a leading "/v1" (the OpenAI SDK's
// default base), else the whole path.
func (rt *router) operation(u *url.URL) string {
	p := u.Path
	for _, r := range rt.routes {
		if strings.EqualFold(u.Scheme, r.base.Scheme) && strings.EqualFold(u.Host, r.base.Host) {
			if rest, ok := strings.CutPrefix(p, r.base.Path); ok && (rest == "" || rest[0] == '/') {
				return rest
			}
		}
	}
	if rest, ok := strings.CutPrefix(p, "/v1"); ok && (rest == "" || rest[0] == '/') {
		return rest
	}
	return p
}

// request returns req addressed to r: URL, credential header and body
// (with its model mapped) rewritten on a clone; req is not modified. op is
// the request's operation path, body its bytes (nil: none). Whatever
// credential the client sent (every header of keyHeaders, Google's "key"
// query parameter) is removed: an upstream gets its own Key, or none,
// never the client's or another upstream's. A "key" in the upstream's own
// BaseURL stays.
func (r *route) request(req *http.Request, ctx context.Context, op string, body []byte, model string) *http.Request {
	out := req.Clone(ctx)
	u := *r.base
	u.Path = r.base.Path + op
	u.RawPath = ""
	if q := mergeQuery(r.base.RawQuery, withoutKeyParam(req.URL.RawQuery)); q != "" {
		u.RawQuery = q
	} else {
		u.RawQuery = ""
	}
	out.URL = &u
	out.Host = ""
	for _, h := range keyHeaders {
		out.Header.Del(h)
	}
	if r.header != "" {
		out.Header.Set(r.header, r.cred)
	}
	if body == nil {
		out.Body, out.GetBody, out.ContentLength = http.NoBody, nil, 0
		return out
	}
	if to := r.model(model); to != model {
		body = withModel(body, to)
	}
	out.ContentLength = int64(len(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.Body, _ = out.GetBody()
	return out
}

// withoutKeyParam returns the query q without its "key" parameters (a
// credential, as Google's API takes it), the others as they were written.
func withoutKeyParam(q string) string {
	if !strings.Contains(q, "key") {
		return q
	}
	var b strings.Builder
	for part := range strings.SplitSeq(q, "&") {
		name, _, _ := strings.Cut(part, "=")
		if n, err := url.QueryUnescape(name); err == nil && n == "key" || name == "key" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String()
}

// mergeQuery adds the upstream's query values to the request's; the
// request's win.
func mergeQuery(base, req string) string {
	if base == "" {
		return req
	}
	if req == "" {
		return base
	}
	bq, _ := url.ParseQuery(base)
	rq, _ := url.ParseQuery(req)
	for k, vv := range bq {
		if _, ok := rq[k]; !ok {
			rq[k] = vv
		}
	}
	return rq.Encode()
}

// withModel returns body with its top-level "model" string replaced by
// model; body itself is not modified. A body without one is returned as
// it is.
func withModel(body []byte, model string) []byte {
	res := gjson.GetBytes(body, "model")
	if res.Type != gjson.String || res.Index <= 0 || res.Index+len(res.Raw) > len(body) {
		return body
	}
	q, err := json.Marshal(model)
	if err != nil {
		return body
	}
	out := make([]byte, 0, len(body)-len(res.Raw)+len(q))
	out = append(out, body[:res.Index]...)
	out = append(out, q...)
	return append(out, body[res.Index+len(res.Raw):]...)
}

// readBody returns req's body bytes for routing, read once (through
// GetBody when set), and closes req.Body: no attempt sends it. ok is false
// when the body could not be read.
func readBody(req *http.Request) (b []byte, err error) {
	if !hasBody(req) {
		return nil, nil
	}
	defer req.Body.Close()
	rc := req.Body
	if req.GetBody != nil {
		if rc2, err := req.GetBody(); err == nil && rc2 != nil {
			if !sameBody(rc2, req.Body) {
				defer rc2.Close()
			}
			rc = rc2
		}
	}
	b, err = io.ReadAll(rc)
	if b == nil {
		b = []byte{}
	}
	return b, err
}
