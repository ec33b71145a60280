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
// gauges; neither the Name as a server address, nor a url.full built
// from it, nor any credential appears.
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
