package steadyotel_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadyotel"
	"github.com/steady-go/steady/steadytest"
)

// byKey answers each request from the provider of its credential, as two
// keys of one provider would.
type byKey map[string]http.RoundTripper

func (m byKey) RoundTrip(r *http.Request) (*http.Response, error) {
	if rt := m[r.Header.Get("Authorization")]; rt != nil {
		return rt.RoundTrip(r)
	}
	body := `{"error":{"message":"unknown key","type":"invalid_request_error","code":"invalid_api_key"}}`
	return &http.Response{StatusCode: http.StatusUnauthorized, Status: "401 Unauthorized", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// TestUpstreamAttribute: requests routed across two keys
// (Config.Upstreams) are recorded under steady.upstream.name, the
// Upstream's Name, on the attempt metrics and spans and on the partition
// gauges, beside the server.address of its BaseURL; neither the Name as a
// server address, nor a url.full built from it, nor any credential
// appears.
func TestUpstreamAttribute(t *testing.T) {
	const keyA, keyB = "sk-a-5ecret-do-not-record", "sk-b-5ecret-do-not-record"
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				provider := func() http.RoundTripper {
					return steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 100, Latency: 20 * time.Millisecond})
				}
				net := byKey{"Bearer " + keyA: provider(), "Bearer " + keyB: provider()}
				cfg := steady.Config{Upstreams: []steady.Upstream{
					{Name: "key-a", BaseURL: baseURL, Key: keyA},
					{Name: "key-b", BaseURL: baseURL, Key: keyB},
				}}
				if form == "roundtripper" {
					cfg.Base = net
				}
				h := newHarness(t, cfg)
				c := h.client(form, net)
				ctx, parent := h.tracer.Start(context.Background(), "caller")
				const calls = 6
				for range calls {
					if err := chat(c, ctx); err != nil {
						t.Fatal(err)
					}
				}
				parent.End()
				rm := h.collect(t)

				dur := find(t, rm, "http.client.request.duration")
				a, b := hcount(t, dur, "steady.upstream.name=key-a"), hcount(t, dur, "steady.upstream.name=key-b")
				t.Logf("%s: attempts by upstream: key-a %d, key-b %d", form, a, b)
				if a == 0 || b == 0 || a+b != calls || hcount(t, dur) != calls {
					t.Errorf("attempt durations: key-a %d, key-b %d of %d; want both upstreams, every attempt labelled", a, b, hcount(t, dur))
				}
				inflight := find(t, rm, "steady.pacing.in_flight")
				labelled := map[string]bool{}
				for _, s := range attrSets(inflight) {
					if v, ok := s.Value("steady.upstream.name"); ok {
						labelled[v.AsString()] = true
					}
				}
				if !labelled["key-a"] || !labelled["key-b"] {
					t.Errorf("in-flight gauge upstreams %v, want key-a and key-b", labelled)
				}
				for _, sm := range rm.ScopeMetrics {
					for _, m := range sm.Metrics {
						for _, s := range attrSets(m) {
							if v, ok := s.Value("server.address"); ok && strings.HasPrefix(v.AsString(), "key-") {
								t.Errorf("%s: an Upstream's Name recorded as server.address: %v", m.Name, s)
							}
							noSecret(t, m.Name, s.ToSlice())
						}
					}
				}

				spans := 0
				for _, s := range h.spans.Ended() {
					if s.InstrumentationScope().Name != steadyotel.ScopeName {
						continue
					}
					spans++
					set := attribute.NewSet(s.Attributes()...)
					v, _ := set.Value("steady.upstream.name")
					if name := v.AsString(); name != "key-a" && name != "key-b" {
						t.Errorf("attempt span without its upstream: %v", s.Attributes())
					}
					if a, _ := set.Value("server.address"); a.AsString() != "api.openai.com" {
						t.Errorf("attempt span without its upstream's server.address: %v", s.Attributes())
					}
					if _, ok := set.Value("url.full"); ok {
						t.Errorf("attempt span with a url.full made of an Upstream's Name: %v", s.Attributes())
					}
					noSecret(t, "span", s.Attributes())
				}
				if spans != calls {
					t.Errorf("%d attempt spans, want %d", spans, calls)
				}
			})
		})
	}
}

// noSecret fails the test when kv holds any part of a key.
func noSecret(t *testing.T, where string, kv []attribute.KeyValue) {
	t.Helper()
	for _, a := range kv {
		if strings.Contains(a.Value.String(), "5ecret") || strings.Contains(a.Value.String(), "sk-") {
			t.Errorf("%s carries a credential: %v", where, a)
		}
	}
}

// always429 answers every request with a 429 whose Retry-After is 2 s.
type always429 struct{}

func (always429) RoundTrip(r *http.Request) (*http.Response, error) {
	body := `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`
	return &http.Response{StatusCode: http.StatusTooManyRequests, Status: "429 Too Many Requests", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}, "Retry-After": {"2"}}, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// TestUpstreamServerAddress: every series of a routed request (attempt
// durations, 429s, cooldowns, the partition gauges) carries the
// server.address, port and provider of the upstream that served it, beside
// its steady.upstream.name. Through the middleware, two keys of
// api.openai.com; as the HTTP client's transport, OpenAI and Groq's
// OpenAI-compatible API, which answers every request 429 (its retries move
// to OpenAI).
func TestUpstreamServerAddress(t *testing.T) {
	const keyA, keyB = "sk-a-5ecret-do-not-record", "sk-b-5ecret-do-not-record"
	for _, form := range []string{"middleware", "roundtripper"} {
		t.Run(form, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				second := steady.Upstream{Name: "second", BaseURL: baseURL, Key: keyB}
				want := map[string][]string{
					"first":  {"server.address=api.openai.com", "server.port=443", "gen_ai.provider.name=openai"},
					"second": {"server.address=api.openai.com", "server.port=443", "gen_ai.provider.name=openai"},
				}
				if form == "roundtripper" {
					second.BaseURL = "https://api.groq.com/openai/v1"
					want["second"] = []string{"server.address=api.groq.com", "server.port=443", "gen_ai.provider.name=groq"}
				}
				ok := steadytest.NewProvider(steadytest.ProviderConfig{RequestsPerWindow: 100, Latency: 20 * time.Millisecond})
				net := byKey{"Bearer " + keyA: ok, "Bearer " + keyB: always429{}}
				cfg := steady.Config{Upstreams: []steady.Upstream{{Name: "first", BaseURL: baseURL, Key: keyA}, second}}
				if form == "roundtripper" {
					cfg.Base = net
				}
				h := newHarness(t, cfg)
				c := h.client(form, net)
				for range 6 {
					if err := chat(c, context.Background()); err != nil {
						t.Fatal(err)
					}
					time.Sleep(3 * time.Second) // past the 429's cooldown: the next call may go to second again
				}
				rm := h.collect(t)
				dur := find(t, rm, "http.client.request.duration")
				limited := find(t, rm, "steady.rate_limited")
				cools := find(t, rm, "steady.pacing.cooldowns")
				n429, nCool := sum(t, limited, append([]string{"steady.upstream.name=second"}, want["second"]...)...), sum(t, cools, append([]string{"steady.upstream.name=second"}, want["second"]...)...)
				okFirst := hcount(t, dur, append([]string{"steady.upstream.name=first", "http.response.status_code=200"}, want["first"]...)...)
				t.Logf("%s: second's 429s %d, its cooldowns %d; first's successes %d, all with their own server.address", form, n429, nCool, okFirst)
				if n429 == 0 || nCool == 0 || okFirst != 6 {
					t.Errorf("second's 429s %d and cooldowns %d under %v, first's successes %d under %v: want some, some and 6",
						n429, nCool, want["second"], okFirst, want["first"])
				}
				series := 0
				for _, sm := range rm.ScopeMetrics {
					for _, m := range sm.Metrics {
						for _, s := range attrSets(m) {
							v, routed := s.Value("steady.upstream.name")
							if !routed {
								continue
							}
							series++
							w := want[v.AsString()]
							if m.Name == "steady.events" {
								w = w[:1] // its host is server.address alone, as an unrouted request's
							}
							if !has(s, w...) {
								t.Errorf("%s: a series of %s without its host %v: %v", m.Name, v.AsString(), want[v.AsString()], s.ToSlice())
							}
							noSecret(t, m.Name, s.ToSlice())
						}
					}
				}
				if series == 0 {
					t.Error("no series carries steady.upstream.name")
				}
			})
		})
	}
}
