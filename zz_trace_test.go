package steady

import (
	"os"
	"time"
	"fmt"
)

var traceOn = os.Getenv("DTRACE") != ""

func trace(now time.Duration, what string, d *discoverer) {
	if traceOn {
		fmt.Printf("%8.3f %-10s rate=%6.2f ceil=%6.2f m=%6.2f gate=%6.3f run=%d\n", now.Seconds(), what, d.rate, d.ceil, d.measured(simEpoch.Add(now).UnixNano()), float64(d.gate-simEpoch.UnixNano())/1e9, d.run)
	}
}
