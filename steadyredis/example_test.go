package steadyredis_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/redis/go-redis/v9"
	"github.com/steady-go/steady"
	"github.com/steady-go/steady/ratelimit"
	"github.com/steady-go/steady/steadyredis"
	"github.com/steady-go/steady/store"
)

// Every process of a fleet gives its Transport a store on the same Redis:
// its partitions then share one budget with the other processes'.
func Example_transport() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	defer client.Close()
	redisStore, err := steadyredis.New(client, steadyredis.WithPrefix("myservice:steady:"),
		// The same secret in every process, from where the credentials
		// come: a reader of Redis cannot confirm a guessed key.
		steadyredis.WithSecret([]byte("from-your-secret-store")))
	if err != nil {
		panic(err) // a prefix that cannot work, such as one holding braces
	}
	defer redisStore.Close()

	t := steady.New(steady.Config{Pacing: steady.PacingConfig{Store: redisStore}})
	_ = openai.NewClient(option.WithMiddleware(t.Middleware))
	// ... make calls as usual: pacing reserves each attempt in Redis.
}

// Every process of a fleet makes a store on the same Redis; a partition's
// requests then share one budget whichever process sends them. The pacer
// calls Reserve before each attempt and Settle after it, as below.
func Example() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	defer client.Close()
	redisStore, err := steadyredis.New(client, steadyredis.WithPrefix("myservice:steady:"))
	if err != nil {
		return
	}
	defer redisStore.Close()

	ctx := context.Background()
	r := store.Reservation{
		Partition: store.Partition{Upstream: "https://api.openai.com", Key: "api.openai.com/gpt-4o-mini#1a2b3c"},
		Windows: []store.Window{
			// 500 requests and 200,000 tokens a minute, less 2% headroom.
			{ID: store.WindowID(ratelimit.UnitRequests, "requests"), Cost: 1, Rate: 500 * 0.98 / 60, Burst: 10},
			{ID: store.WindowID(ratelimit.UnitTokens, "tokens"), Cost: 1200, Rate: 200000 * 0.98 / 60, Burst: 4000},
		},
		MaxWait: 2 * time.Minute,
	}
	g, err := redisStore.Reserve(ctx, r)
	if err != nil || g.Refused || g.Breaker == store.BreakerOpen {
		return // the request is not sent
	}
	time.Sleep(g.Wait) // the pacer waits with the request's context
	// ... send the request; then report what its response told:
	redisStore.Settle(ctx, store.Settlement{Partition: r.Partition, Windows: r.Windows, Grant: g, Sent: true})
	fmt.Println("shared with the fleet:", g.Shared)
}

// A program that owns its process sends go-redis's own log lines (a
// failed dial each second while Redis is down) to the Transport's logger,
// one line of a kind a minute, at its start. A Store never does this
// itself: go-redis has one logger for the whole process.
func ExampleRedisLogger() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	redis.SetLogger(steadyredis.RedisLogger(logger, 0))
	_ = steady.New(steady.Config{Logger: logger})
}
