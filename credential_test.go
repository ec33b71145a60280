package steady

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestFingerprintNoCollision draws a million random API keys (seeded) and
// finds no two with the same fingerprint: 64 bits make a collision among
// them about a chance in 37 million, where the former 24-bit mark collided
// after about 7,000 keys.
func TestFingerprintNoCollision(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	r := rand.New(rand.NewPCG(19, 23))
	seen := make(map[string]int, n)
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	key := []byte("Bearer sk-proj-0000000000000000000000000000000000000000")
	for i := range n {
		for j := len("Bearer sk-proj-"); j < len(key); j++ {
			key[j] = alphabet[r.IntN(len(alphabet))]
		}
		fp := fingerprint("Authorization", string(key))
		if len(fp) != 16 {
			t.Fatalf("fingerprint %q is %d hex digits, want 16 (64 bits)", fp, len(fp))
		}
		if j, ok := seen[fp]; ok {
			t.Fatalf("keys %d and %d share fingerprint %s", j, i, fp)
		}
		seen[fp] = i
	}
}

// TestCredentialPlaces: every place a provider carries a key names its own
// partition, and two tenants whose keys differ only in the header that
// carries them get two partitions.
func TestCredentialPlaces(t *testing.T) {
	p := newPacer(PacingConfig{ColdStart: -1}, pacerDeps{})
	mk := func(set func(*http.Request)) *partition {
		req := &http.Request{Method: "POST", URL: &url.URL{Scheme: "https", Host: "api.example.com", Path: "/v1/x"}, Header: http.Header{}}
		set(req)
		pt := p.partitionFor(req, "m", "", time.Now())
		pt.release()
		return pt
	}
	const k = "same-secret-value"
	parts := map[string]*partition{
		"none":           mk(func(*http.Request) {}),
		"authorization":  mk(func(r *http.Request) { r.Header.Set("Authorization", k) }),
		"api-key":        mk(func(r *http.Request) { r.Header.Set("api-key", k) }),
		"x-api-key":      mk(func(r *http.Request) { r.Header.Set("x-api-key", k) }),
		"x-goog-api-key": mk(func(r *http.Request) { r.Header.Set("x-goog-api-key", k) }),
		"?key":           mk(func(r *http.Request) { r.URL.RawQuery = "alt=sse&key=" + k }),
	}
	other := mk(func(r *http.Request) { r.Header.Set("x-goog-api-key", k+"2") })
	labels := map[string]string{}
	for where, pt := range parts {
		if prev, ok := labels[pt.label]; ok {
			t.Errorf("%s and %s share the partition %q", where, prev, pt.label)
		}
		labels[pt.label] = where
		if len(pt.label) > 0 && strings.Contains(pt.label, k) {
			t.Errorf("%s: label %q holds the credential", where, pt.label)
		}
	}
	if other == parts["x-goog-api-key"] || other.label == parts["x-goog-api-key"].label {
		t.Errorf("two x-goog-api-key tenants share partition %q", other.label)
	}
	if again := mk(func(r *http.Request) { r.URL.RawQuery = "key=" + k + "&alt=sse" }); again != parts["?key"] {
		t.Errorf("the same ?key tenant got a second partition: %q vs %q", again.label, parts["?key"].label)
	}
}
