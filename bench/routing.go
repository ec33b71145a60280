package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/steady-go/steady"
	"github.com/steady-go/steady/steadytest"
)

// routingRow is one peer's run of the routing batch: Keys is how many of
// the account's keys it can use.
type routingRow struct {
	Peer   string
	Keys   int
	Result batchResult
}

// routingLimit is each key's limit in the routing batch: a sliding window
// of 20 requests per 2 s, OpenAI headers, 50 ms answers.
var routingLimit = limitSpec{Kind: kindSliding, Requests: 20, Window: 2 * time.Second, Dialect: steadytest.DialectOpenAI, Latency: 50 * time.Millisecond}

// routingCalls is the routing batch's size: every call at once, no
// deadline.
const routingCalls = 200

// runRouting runs the routing batch in real time on loopback, each key its
// own provider on its own server, through the bare SDK on one key, steady
// on one key, and steady with both keys as Config.Upstreams, at the same
// time.
func runRouting(ctx context.Context) []routingRow {
	rows := []routingRow{{Peer: "bare SDK", Keys: 1}, {Peer: "steady, one key", Keys: 1}, {Peer: "steady, two keys (Upstreams)", Keys: 2}}
	var wg sync.WaitGroup
	for i := range rows {
		wg.Go(func() { rows[i].Result = runRouted(ctx, rows[i].Peer, rows[i].Keys, i) })
	}
	wg.Wait()
	return rows
}

// runRouted runs the batch through one peer.
func runRouted(ctx context.Context, peer string, keys, kind int) batchResult {
	t := &tally{}
	tr := &http.Transport{MaxIdleConnsPerHost: 1024}
	defer tr.CloseIdleConnections()
	base := &counter{next: tr, t: t}
	var ups []steady.Upstream
	for k := range keys {
		srv := httptest.NewServer(routingLimit.upstream())
		defer srv.Close()
		ups = append(ups, steady.Upstream{Name: "key-" + string(rune('a'+k)), BaseURL: srv.URL + "/v1", Key: "sk-bench-" + string(rune('a'+k))})
	}
	opts := []option.RequestOption{option.WithBaseURL(ups[0].BaseURL + "/"), option.WithAPIKey("sk-bench-a")}
	switch kind {
	case 0:
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: base}))
	case 1:
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: steady.New(steady.Config{Base: base})}))
	default:
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: steady.New(steady.Config{Base: base, Upstreams: ups})}))
	}
	client := openai.NewClient(opts...)
	lim := routingLimit
	lim.Requests *= keys
	b := batch{Limit: lim, Calls: routingCalls, Pattern: pattern{Name: "all at once, no deadline"}}
	start := time.Now()
	res := batchResult{Peer: peer, Start: start, Minimum: b.Minimum(start), Servable: b.Calls, Calls: b.Calls, Why: map[string]int{}}
	capCtx, cancel := context.WithTimeout(ctx, b.cap(start))
	defer cancel()
	var mu sync.Mutex
	var last time.Time
	var wg sync.WaitGroup
	for range b.Calls {
		wg.Go(func() {
			_, err := client.Chat.Completions.New(capCtx, batchParams)
			end := time.Now()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				res.OK++
			case capCtx.Err() != nil:
				return
			default:
				res.Failed++
				res.Why[failureKind(err)]++
			}
			if end.After(last) {
				last = end
			}
		})
	}
	wg.Wait()
	res.Unfinished = b.Calls - res.OK - res.Failed
	if res.Unfinished > 0 {
		last = start.Add(b.cap(start))
	}
	if !last.IsZero() {
		res.Makespan = last.Sub(start)
	}
	t.mu.Lock()
	res.Attempts, res.Limited = t.attempts, t.rateLimited
	t.mu.Unlock()
	return res
}

// writeRouting writes the routing batch's table.
func (r benchReport) writeRouting(p func(string, ...any)) {
	if len(r.Routing) == 0 {
		return
	}
	p("## Several keys behind one client (real time, loopback)\n\n")
	p("One account's keys, each its own provider on its own loopback server with %s; %d calls at once, no deadline. ", routingLimit, routingCalls)
	p("The bare SDK and steady on one key beside steady with both keys as `Config.Upstreams` (docs/routing.md). ")
	p("The minimum is that of the keys a peer can use.\n\n")
	p("| peer | keys | ok | failed | 429 share | makespan | minimum | ratio | target: ≤ 1.05×, 0 failed, ≤ 1%% 429s |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, row := range r.Routing {
		res := row.Result
		verdict := "met"
		if res.Failed+res.Unfinished > 0 || res.Ratio() > 1.05 || res.LimitedShare() > 0.01 {
			verdict = "**missed**"
		}
		p("| %s | %d | %d | %d | %s | %s | %s | %.3f | %s |\n", row.Peer, row.Keys, res.OK, res.Failed, pct(res.LimitedShare()),
			fmtDur(res.Makespan.Round(10*time.Millisecond)), fmtDur(res.Minimum.Round(10*time.Millisecond)), res.Ratio(), verdict)
	}
	p("\n")
}
