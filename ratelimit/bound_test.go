package ratelimit

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/steady-go/steady/internal/ascii"
)

// TestMaxHint: the bound ascii clamps waits to is MaxHint.
func TestMaxHint(t *testing.T) {
	if MaxHint != ascii.MaxHint {
		t.Errorf("MaxHint %v, ascii.MaxHint %v", MaxHint, ascii.MaxHint)
	}
}

// TestPolicyNameBounded: a RateLimit-Policy name is the server's to
// choose; a 100 KB one is kept as at most ascii.MaxName bytes, and two long
// names that differ only at their end stay two windows.
func TestPolicyNameBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	long := strings.Repeat("n", 100_000)
	h := http.Header{}
	h.Set("RateLimit-Policy", `"`+long+`a";q=100;w=60, "`+long+`b";q=50;w=60`)
	h.Set("RateLimit", `"`+long+`a";r=90;t=30, "`+long+`b";r=40;t=30`)
	rl := Parse(h, now)
	if len(rl.Windows) != 2 {
		t.Fatalf("%d windows, want 2", len(rl.Windows))
	}
	a, b := rl.Windows[0], rl.Windows[1]
	for _, w := range rl.Windows {
		if len(w.Name) > ascii.MaxName {
			t.Errorf("window name of %d bytes, want at most %d", len(w.Name), ascii.MaxName)
		}
	}
	if a.Name == b.Name {
		t.Errorf("two policies share the bounded name %q", a.Name)
	}
	if a.Limit != 100 || a.Remaining != 90 || b.Limit != 50 || b.Remaining != 40 {
		t.Errorf("policies read as %+v and %+v", a, b)
	}
}
