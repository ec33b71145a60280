package steady

import "testing"

func TestStoreWindowID(t *testing.T) {
	for _, u := range []Unit{UnitRequests, UnitTokens, UnitInputTokens, UnitOutputTokens} {
		for _, name := range []string{"", "minute", "config", "a:b"} {
			id := StoreWindowID(u, name)
			gu, gn, ok := ParseStoreWindowID(id)
			if !ok || gu != u || gn != name {
				t.Errorf("ParseStoreWindowID(%q) = %v, %q, %v; want %v, %q", id, gu, gn, ok, u, name)
			}
		}
	}
	for _, bad := range []string{"", "requests", "unknown:minute", "Requests:minute", ":x"} {
		if u, n, ok := ParseStoreWindowID(bad); ok {
			t.Errorf("ParseStoreWindowID(%q) = %v, %q, true; want not ok", bad, u, n)
		}
	}
}
