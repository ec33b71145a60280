package steadyredis

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestMain says plainly, even without -v, when the tests that need the
// shared Redis will be skipped.
func TestMain(m *testing.M) {
	// The fault tests make Redis fail on purpose: keep its complaints and
	// the store's own log lines (tested on their own) out of the output.
	redis.SetLogger(quiet{})
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := redis.NewClient(&redis.Options{Addr: sharedAddr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := c.Ping(ctx).Err()
	cancel()
	c.Close()
	if err != nil && os.Getenv("STEADY_REQUIRE_REDIS") != "1" {
		fmt.Fprintf(os.Stderr, "steadyredis: no Redis at %s (%v): the tests that need it are SKIPPED. Start one (redis-server --port 6379 --save '' --appendonly no) to run them; STEADY_REQUIRE_REDIS=1 makes this a failure.\n", sharedAddr, err)
	}
	os.Exit(m.Run())
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
