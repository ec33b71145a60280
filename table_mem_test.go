package steady_test

import (
	"bytes"
	"net/http"
	"runtime"
	"strconv"
	"testing"

	"github.com/steady-go/steady"
)

// TestPartitionMemory100k fills a Transport with 100,000 partitions (one
// model each) and checks what each costs against the figure docs/benchmarks.md
// documents (under 2 KB).
func TestPartitionMemory100k(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 100,000 partitions")
	}
	const n = 100_000
	st := steady.New(steady.Config{Base: newBase(), Pacing: steady.PacingConfig{MaxPartitions: n}})
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = []byte(`{"model":"model-` + strconv.Itoa(i) + `"}`)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, b := range bodies {
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer sk-k")
		resp, err := st.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := len(st.Snapshot()); got != n {
		t.Fatalf("%d partitions kept, want %d", got, n)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes per partition", per)
	if per >= 2048 {
		t.Errorf("%d bytes per partition, want < 2048", per)
	}
	runtime.KeepAlive(st)
}
