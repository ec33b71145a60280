package bench

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Upstream is a simulated provider: it answers requests in memory,
// switches an outage on and off, and says the most requests it ever
// admitted in one window.
type Upstream interface {
	http.RoundTripper
	SetOutage(on bool)
	MaxInWindow() int64
}

// NewUpstream returns a simulated provider with sc's limits.
func NewUpstream(sc Scenario) (Upstream, error) {
	if sc.Requests <= 0 || sc.Window <= 0 {
		return nil, fmt.Errorf("bench: provider needs a positive limit and window")
	}
	return &miniProvider{cfg: sc}, nil
}

// miniProvider is a small OpenAI-compatible chat completions endpoint with a
// sliding-window requests limit, OpenAI-style rate-limit headers and a
// switchable outage. Safe for concurrent use.
type miniProvider struct {
	cfg Scenario

	mu      sync.Mutex
	admits  []time.Time // admission times inside the current window
	outage  bool
	maxSeen int64
}

// SetOutage switches the outage on or off.
func (p *miniProvider) SetOutage(on bool) {
	p.mu.Lock()
	p.outage = on
	p.mu.Unlock()
}

// MaxInWindow returns the most requests admitted in one window.
func (p *miniProvider) MaxInWindow() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxSeen
}

// RoundTrip answers req in memory.
func (p *miniProvider) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	now := time.Now()
	p.mu.Lock()
	cut := now.Add(-p.cfg.Window)
	i := 0
	for i < len(p.admits) && !p.admits[i].After(cut) {
		i++
	}
	p.admits = p.admits[i:]
	outage := p.outage
	var status int
	var reset time.Duration
	switch {
	case outage:
		status = http.StatusInternalServerError
	case len(p.admits) >= p.cfg.Requests:
		status = http.StatusTooManyRequests
		reset = p.admits[0].Add(p.cfg.Window).Sub(now)
	default:
		status = http.StatusOK
		p.admits = append(p.admits, now)
		if n := int64(len(p.admits)); n > p.maxSeen {
			p.maxSeen = n
		}
		if len(p.admits) > 0 {
			reset = p.admits[0].Add(p.cfg.Window).Sub(now)
		}
	}
	remaining := p.cfg.Requests - len(p.admits)
	p.mu.Unlock()

	if status == http.StatusOK && p.cfg.Latency > 0 {
		t := time.NewTimer(p.cfg.Latency)
		select {
		case <-req.Context().Done():
			t.Stop()
			return nil, req.Context().Err()
		case <-t.C:
		}
	}

	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Request-Id", "req_demo")
	h.Set("X-Ratelimit-Limit-Requests", strconv.Itoa(p.cfg.Requests))
	h.Set("X-Ratelimit-Remaining-Requests", strconv.Itoa(max(remaining, 0)))
	h.Set("X-Ratelimit-Reset-Requests", reset.Round(time.Millisecond).String())
	var body string
	switch status {
	case http.StatusOK:
		body = `{"id":"chatcmpl-demo","object":"chat.completion","created":0,"model":"gpt-4o-mini",` +
			`"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"ok"}}],` +
			`"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}`
	case http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.Itoa(int((reset+time.Second-1)/time.Second)))
		body = `{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}`
	default:
		body = `{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}`
	}
	return &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}
