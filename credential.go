package steady

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// This file names the credential of a request in partition labels: where
// providers carry a key, and a fingerprint of it that no two keys share in
// practice and that no label reader can turn back into the key.

// keyHeaders are the headers that carry an API key, in the order
// they are looked for: Authorization (OpenAI and most others, "Bearer
// ..."), Api-Key (Azure), X-Api-Key (Anthropic) and X-Goog-Api-Key
// (Google). Canonical forms, as net/http keys them.
var keyHeaders = [...]string{"Authorization", "Api-Key", "X-Api-Key", "X-Goog-Api-Key"}

// credential returns where req carries its credential (a header's
// canonical name, or "?key" for the key query parameter, as Google's
// API accepts it) and the credential itself; both empty when there is
// none. The credential is only hashed.
func credential(req *http.Request) (where, cred string) {
	for _, name := range keyHeaders {
		if v := req.Header[name]; len(v) > 0 && v[0] != "" {
			return name, v[0]
		}
	}
	if req.URL != nil && strings.Contains(req.URL.RawQuery, "key=") {
		if k := req.URL.Query().Get("key"); k != "" {
			return "?key", k
		}
	}
	return "", ""
}

// fingerprintDomain separates the fingerprint's hash from every other use
// of SHA-256 over a credential.
const fingerprintDomain = "steady credential fingerprint v2\x00"

// fingerprint is a stable, one-way mark of a credential for labels: 64
// bits of SHA-256 over where it was carried and the credential, in 16 hex
// digits, so that two tenants differ even when one sends in X-Api-Key what
// the other sends in Api-Key. 64 bits make a collision among a million
// keys about a chance in 37 million. The mark is the same in every
// process, as a fleet sharing a Store needs; a store keys its own hash of
// the label with a secret of its own (see steadyredis.WithSecret), so that
// a reader of the store cannot confirm a guessed key. "-" when there is
// no credential.
func fingerprint(where, cred string) string {
	if cred == "" {
		return "-"
	}
	h := sha256.New()
	h.Write([]byte(fingerprintDomain))
	h.Write([]byte(where))
	h.Write([]byte{0})
	h.Write([]byte(cred))
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:8])
}
