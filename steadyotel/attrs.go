package steadyotel

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/ratelimit"
)

// host is what steadyotel records of one upstream: its address, port and
// GenAI provider, and the attributes they make; for a request routed to
// one of [steady.Config.Upstreams], the upstream's Name beside the
// address, port and provider of its BaseURL.
type host struct {
	address  string
	port     int
	provider string // "" when not known
	name     string // the routed Upstream's Name; "" when not routed
	id       attribute.KeyValue
	attrs    []attribute.KeyValue
}

// labels turns what events carry into bounded attribute values: at most
// maxHosts upstreams, maxModels models and maxWindows window names are
// told apart, and the rest are recorded as otherValue.
type labels struct {
	// hosts maps upstreams ("scheme://host") to hosts. Reads take no
	// lock: the map is replaced, never changed, under mu.
	hosts   atomic.Pointer[map[string]*host]
	mu      sync.RWMutex
	models  map[string]string // model → itself, while under the cap; guarded by mu
	windows map[string]string // window name → itself; guarded by mu
	other   *host             // stands for every upstream past the cap
	// origin returns the origin ("scheme://host") of a routed Upstream's
	// BaseURL, by Name; "" when none. nil: none known.
	origin func(name string) string
}

func newLabels() *labels {
	l := &labels{
		models:  make(map[string]string),
		windows: make(map[string]string),
		other:   &host{address: otherValue, id: attribute.String(attrAddress, otherValue), attrs: []attribute.KeyValue{attribute.String(attrAddress, otherValue)}},
	}
	l.hosts.Store(&map[string]*host{})
	return l
}

// host returns the host of upstream, written "scheme://host[:port]", or
// the Name of a routed Upstream (an Event.Upstream without a scheme).
func (l *labels) host(upstream string) *host {
	cur := *l.hosts.Load()
	if h := cur[upstream]; h != nil {
		return h
	}
	if len(cur) >= maxHosts {
		return l.other
	}
	h := parseHost(upstream)
	if h.name != "" && l.origin != nil {
		h = routedHost(h.name, l.origin(h.name))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur = *l.hosts.Load()
	if old := cur[upstream]; old != nil {
		return old
	}
	if len(cur) >= maxHosts {
		return l.other
	}
	next := make(map[string]*host, len(cur)+1)
	maps.Copy(next, cur)
	next[upstream] = h
	l.hosts.Store(&next)
	return h
}

// routedHost is the host of the routed Upstream called name, whose
// BaseURL has origin: steady.upstream.name, and the origin's
// server.address, server.port and provider ("" origin: the name alone).
// Like every host it counts once against maxHosts.
func routedHost(name, origin string) *host {
	id := attribute.String(attrUpstream, name)
	h := &host{name: name, id: id, attrs: []attribute.KeyValue{id}}
	if !strings.Contains(origin, "://") {
		return h
	}
	o := parseHost(origin)
	h.address, h.port, h.provider = o.address, o.port, o.provider
	h.attrs = append(h.attrs, o.attrs...)
	return h
}

// parseHost splits upstream into address and port (the scheme's when none
// is written) and names its provider. An upstream without a scheme is the
// Name of a routed Upstream ([steady.Config.Upstreams]): its attribute is
// steady.upstream.name, and parseHost gives it no address (its Name is
// not one; labels.host adds its BaseURL's, see routedHost). steady never
// puts a credential in a Name, and bounds its length.
func parseHost(upstream string) *host {
	if upstream != "" && !strings.Contains(upstream, "://") {
		id := attribute.String(attrUpstream, upstream)
		return &host{name: upstream, id: id, attrs: []attribute.KeyValue{id}}
	}
	scheme, hp, ok := strings.Cut(upstream, "://")
	if !ok {
		scheme, hp = "https", upstream
	}
	address, port := hp, 0
	if a, p, err := net.SplitHostPort(hp); err == nil {
		address = a
		port, _ = strconv.Atoi(p)
	}
	if port == 0 {
		port = 443
		if scheme == "http" {
			port = 80
		}
	}
	address = strings.ToLower(strings.TrimSuffix(address, "."))
	h := &host{address: address, port: port, provider: providerOf(address), id: attribute.String(attrAddress, address)}
	h.attrs = []attribute.KeyValue{h.id, attribute.Int(attrPort, port)}
	if h.provider != "" {
		h.attrs = append(h.attrs, attribute.String(attrProvider, h.provider))
	}
	return h
}

// providerOf returns the gen_ai.provider.name of a host, or "".
func providerOf(address string) string {
	switch address {
	case "api.openai.com":
		return providerOpenAI
	case "api.anthropic.com":
		return providerAnthropic
	case "api.groq.com":
		return providerGroq
	case "api.deepseek.com":
		return providerDeepSeek
	case "api.mistral.ai":
		return providerMistral
	case "api.x.ai":
		return providerXAI
	case "api.perplexity.ai":
		return providerPerplexity
	case "generativelanguage.googleapis.com":
		return providerGemini
	case "api.cohere.com", "api.cohere.ai":
		return providerCohere
	case "inference.heroku.com", "us.inference.heroku.com", "eu.inference.heroku.com":
		return providerHeroku
	}
	switch {
	case strings.HasSuffix(address, ".openai.azure.com"), strings.HasSuffix(address, ".cognitiveservices.azure.com"):
		return providerAzureOpenAI
	case strings.HasSuffix(address, ".inference.heroku.com"):
		return providerHeroku
	}
	return ""
}

// operationOf returns the gen_ai.operation.name of a request path, or "".
func operationOf(path string) string {
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return operationChat
	case strings.HasSuffix(path, "/completions"):
		return operationText
	case strings.HasSuffix(path, "/embeddings"):
		return operationEmbeddings
	case strings.HasSuffix(path, "/responses"), strings.HasSuffix(path, "/messages"):
		// The Responses API and Anthropic's Messages API are chats in
		// the GenAI conventions.
		return operationChat
	}
	return ""
}

// model returns m itself while fewer than maxModels models were seen, and
// otherValue past the cap; "" stays "".
func (l *labels) model(m string) string {
	return l.capped(l.models, m, maxModels)
}

// window returns the bounded name of a rate-limit window.
func (l *labels) window(name string) string {
	return l.capped(l.windows, name, maxWindows)
}

func (l *labels) capped(m map[string]string, v string, limit int) string {
	if v == "" {
		return ""
	}
	l.mu.RLock()
	got, ok := m[v]
	full := len(m) >= limit
	l.mu.RUnlock()
	if ok {
		return got
	}
	if full {
		return otherValue
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if got, ok := m[v]; ok {
		return got
	}
	if len(m) >= limit {
		return otherValue
	}
	m[v] = v
	return v
}

// method returns the HTTP method as the conventions record it: one of the
// known methods, or otherValue.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch,
		http.MethodHead, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	case "":
		return http.MethodGet
	}
	return otherValue
}

// errorType returns error.type for an attempt: the status code when it is
// an error status, a short name of the transport failure, or "".
func errorType(status int, err error) string {
	if err == nil {
		if status >= 400 {
			return strconv.Itoa(status)
		}
		return ""
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return errCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return errTimeout
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return errDNS
	case errors.As(err, &opErr):
		return errConnection
	}
	f := steady.ClassifyError(err)
	if strings.HasPrefix(f.Reason, "connection failure") {
		return errConnection
	}
	if strings.HasPrefix(f.Reason, "tls") {
		return errTLS
	}
	return otherValue
}

// reason maps what an event says (its Reason, Status and Err) to the
// bounded set of steady.reason values. It is the one place that reads
// reason texts, so that new wordings in steady need a change here only.
func reason(ev steady.Event) string {
	r := strings.ToLower(ev.Reason)
	switch {
	case strings.Contains(r, "budget"):
		return reasonBudget
	case strings.Contains(r, "circuit"):
		return reasonCircuitOpen
	case strings.Contains(r, "pacing"):
		return reasonPacingWait
	case strings.Contains(r, "store"), strings.Contains(r, "fallback"):
		return reasonStoreFallback
	case strings.Contains(r, "retries exhausted"), strings.Contains(r, "exhausted"):
		return reasonRetriesDone
	case strings.Contains(r, "above cap"), strings.Contains(r, "too long") && strings.Contains(r, "retry"):
		return reasonHintTooLong
	case strings.Contains(r, "deadline"):
		return reasonDeadline
	case strings.Contains(r, "cancel"), strings.Contains(r, "context done"):
		return reasonCanceled
	case strings.Contains(r, "replay"), strings.Contains(r, "rewound"):
		return reasonNotReplayable
	case strings.Contains(r, "quota"), strings.Contains(r, "billing"), strings.Contains(r, "spend limit"), strings.Contains(r, "payment"):
		return reasonQuota
	case strings.Contains(r, "429"), strings.Contains(r, "rate limit"):
		return reasonRateLimited
	case strings.Contains(r, "529"), strings.Contains(r, "overloaded"):
		return reasonOverloaded
	case strings.Contains(r, "timeout"), strings.Contains(r, "timed out"):
		return reasonTimeout
	case strings.Contains(r, "connection"), strings.Contains(r, "dns"), strings.Contains(r, "unknown host"):
		return reasonConnection
	}
	switch {
	case ev.Status == http.StatusTooManyRequests:
		return reasonRateLimited
	case ev.Status == 529:
		return reasonOverloaded
	case ev.Status >= 500:
		return reasonServerError
	case ev.Status >= 400:
		return reasonClientError
	case strings.Contains(r, "not to retry"), strings.Contains(r, "not retry"), strings.Contains(r, "should-retry"):
		return reasonNotRetryable
	}
	if ev.Err != nil {
		switch errorType(0, ev.Err) {
		case errTimeout:
			return reasonTimeout
		case errCanceled:
			return reasonCanceled
		case errConnection, errDNS:
			return reasonConnection
		}
	}
	return reasonOther
}

// breakerStateName returns the steady.breaker.state value of s.
func breakerStateName(s steady.BreakerState) string {
	if int(s) < len(breakerStateNames) {
		return breakerStateNames[s]
	}
	return otherValue
}

// unitName returns the steady.rate_limit.unit value of u.
func unitName(u ratelimit.Unit) string {
	if u == ratelimit.UnitTokens {
		return unitNameTokens
	}
	return unitNameRequests
}
