package bench

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/steady-go/steady/steadytest"
)

// gate is a rate limiter in front of an unlimited simulated provider: the
// limit kinds steadytest does not count itself (fixed windows and a leaky
// bucket). It decides when a request arrives, as a gateway does: a refused
// request is answered 429 at once, an admitted one goes to the provider
// and takes its latency. It is both an in-memory http.RoundTripper and an
// http.Handler for a loopback server. Time is read with time.Now, so inside
// a testing/synctest bubble it is fake.
type gate struct {
	lim  limitSpec
	next *steadytest.Provider

	mu   sync.Mutex
	win  int64     // guarded by mu; fixed windows: index of the current window since the Unix epoch
	used int       // guarded by mu; fixed windows: requests admitted in it
	tat  time.Time // guarded by mu; leaky bucket: theoretical arrival time (GCRA)
}

var (
	_ http.RoundTripper = (*gate)(nil)
	_ http.Handler      = (*gate)(nil)
)

func newGate(l limitSpec) *gate {
	return &gate{lim: l, next: steadytest.NewProvider(steadytest.ProviderConfig{
		Dialect: l.Dialect, Latency: l.Latency,
	})}
}

// SetOutage switches a sustained outage (every admitted request answered
// 503) on or off.
func (g *gate) SetOutage(on bool) { g.next.SetFaults(steadytest.Faults{Outage: on}) }

// verdict is the gate's answer for one request.
type verdict struct {
	admit     bool
	remaining int           // requests left in the window
	reset     time.Duration // until the window ends
	retry     time.Duration // until a refused request would fit
}

// decide admits one request arriving at now, or says how long until one
// would fit.
func (g *gate) decide(now time.Time) verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.lim.Window
	switch g.lim.Kind {
	case kindFixed:
		idx := now.UnixNano() / int64(w)
		if idx != g.win {
			g.win, g.used = idx, 0
		}
		v := verdict{reset: time.Unix(0, (idx+1)*int64(w)).Sub(now)}
		if g.used < g.lim.Requests {
			g.used++
			v.admit = true
		} else {
			v.retry = v.reset
		}
		v.remaining = g.lim.Requests - g.used
		return v
	case kindLeaky:
		// GCRA: one request per interval, up to Burst more at once.
		interval := w / time.Duration(g.lim.Requests)
		tolerance := interval * time.Duration(g.lim.Burst)
		tat := g.tat
		if tat.Before(now) {
			tat = now
		}
		if early := tat.Sub(now) - tolerance; early > 0 {
			return verdict{retry: early}
		}
		g.tat = tat.Add(interval)
		return verdict{admit: true}
	}
	panic(fmt.Sprintf("bench: gate cannot count %s limits", g.lim.Kind))
}

// setHeaders writes the limit's headers in the gate's dialect. A leaky
// bucket announces nothing.
func (g *gate) setHeaders(h http.Header, now time.Time, v verdict) {
	if g.lim.Kind == kindLeaky {
		return
	}
	limit, rem := strconv.Itoa(g.lim.Requests), strconv.Itoa(v.remaining)
	switch d := g.lim.Dialect; d {
	case steadytest.DialectOpenAI, steadytest.DialectHerokuDocs, steadytest.DialectHerokuSeed:
		reset := durationString(v.reset)
		if d == steadytest.DialectHerokuSeed {
			reset = strconv.FormatInt(ceilUnix(now.Add(v.reset)), 10)
		}
		h.Set("X-Ratelimit-Limit-Requests", limit)
		h.Set("X-Ratelimit-Remaining-Requests", rem)
		h.Set("X-Ratelimit-Reset-Requests", reset)
	case steadytest.DialectAnthropic:
		h.Set("Anthropic-Ratelimit-Requests-Limit", limit)
		h.Set("Anthropic-Ratelimit-Requests-Remaining", rem)
		h.Set("Anthropic-Ratelimit-Requests-Reset", time.Unix(ceilUnix(now.Add(v.reset)), 0).UTC().Format(time.RFC3339))
	case steadytest.DialectIETF:
		h.Set("Ratelimit-Policy", fmt.Sprintf(`"requests";q=%d;w=%d`, g.lim.Requests, ceilSeconds(g.lim.Window)))
		h.Set("Ratelimit", fmt.Sprintf(`"requests";r=%d;t=%d`, v.remaining, ceilSeconds(v.reset)))
	}
}

// refusal is the 429 the gate answers: with the dialect's headers, a
// whole-second Date and Retry-After for a window; bare for a leaky bucket,
// as a gateway's limiter answers.
func (g *gate) refusal(now time.Time, v verdict) (http.Header, string) {
	h := http.Header{}
	h.Set("Date", now.UTC().Format(http.TimeFormat))
	if g.lim.Kind == kindLeaky {
		h.Set("Content-Type", "text/html")
		return h, "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n</body>\r\n</html>\r\n"
	}
	g.setHeaders(h, now, v)
	h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(v.retry), 1), 10))
	h.Set("Content-Type", "application/json")
	return h, `{"error":{"message":"Rate limit reached for requests.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
}

// RoundTrip answers req in memory.
func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	now := time.Now()
	v := g.decide(now)
	if !v.admit {
		if req.Body != nil {
			io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}
		h, body := g.refusal(now, v)
		return &http.Response{
			Status: "429 Too Many Requests", StatusCode: http.StatusTooManyRequests,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req,
		}, nil
	}
	resp, err := g.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	g.setHeaders(resp.Header, now, v)
	return resp, nil
}

// ServeHTTP answers r on a real listener.
func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	v := g.decide(now)
	if !v.admit {
		io.Copy(io.Discard, r.Body)
		h, body := g.refusal(now, v)
		for k, vs := range h {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, body)
		return
	}
	g.setHeaders(w.Header(), now, v)
	g.next.ServeHTTP(w, r)
}

// durationString formats d as OpenAI does, rounded up to the millisecond.
func durationString(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return ((d + time.Millisecond - 1) / time.Millisecond * time.Millisecond).String()
}

// ceilUnix is t in Unix seconds, rounded up.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
