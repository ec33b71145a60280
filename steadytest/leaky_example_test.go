package steadytest_test

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/steady-go/steady/steadytest"
)

// A gateway's leaky bucket in front of the simulated provider: 20 requests
// a second with a burst of 10, announced by nothing but bare 429s, as
// nginx's limit_req answers.
func ExampleLeakyBucket() {
	lim := steadytest.LeakyBucket(20, 10).WithoutRetryAfter()
	counts := map[bool]int{}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 15 {
		ok, _ := lim.Admit(t0) // 15 requests at the same instant
		counts[ok]++
	}
	fmt.Println("at once:", counts[true], "accepted,", counts[false], "refused")

	// As a provider's limit: header-less answers.
	p := steadytest.NewProvider(steadytest.ProviderConfig{Limiter: steadytest.LeakyBucket(20, 10), Dialect: steadytest.DialectNone})
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", "http://gateway/v1/chat/completions", strings.NewReader(body))
	resp, err := p.RoundTrip(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("X-Ratelimit-Limit-Requests") == "")
	lim.Scale(0.5) // the limit halves mid-run
	fmt.Printf("now %v/s over %v\n", lim.Rate(), lim.Window())
	// Output:
	// at once: 11 accepted, 4 refused
	// 200 true
	// now 10/s over 1s
}

// A window limit: 100 requests in any 10 seconds.
func ExampleNewLimit() {
	lim := steadytest.NewLimit(steadytest.SlidingWindow, 100, 10*time.Second)
	fmt.Println(lim, lim.Rate())
	// Output: sliding window 100/10s 10
}
