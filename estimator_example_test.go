package steady_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/steady-go/steady"
)

// An Estimator that keeps the default arithmetic with a margin of a
// quarter, reading at most 1 MiB of the body into memory. steady reads on
// for the model whatever the Estimator leaves unread, so the body is read
// once in all.
func ExamplePacingConfig_estimator() {
	margin := func(req *http.Request, body io.Reader) steady.TokenEstimate {
		b, _ := io.ReadAll(io.LimitReader(body, 1<<20))
		e := steady.EstimateTokens(b)
		e.Input += e.Input / 4
		return e
	}
	t := steady.New(steady.Config{Pacing: steady.PacingConfig{TokensPerMinute: 30000, Estimator: margin}})
	_ = t

	body := `{"model":"gpt-5.4-mini","messages":[{"role":"user","content":"Write a haiku about rate limits."}],"max_completion_tokens":60}`
	e := margin(nil, strings.NewReader(body))
	fmt.Println(e.Input, e.Output)
	// Output:
	// 10 60
}
