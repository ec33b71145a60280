package main

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"time"
)

// chart is what the SVG plot shows.
type chart struct {
	Title  string
	Bucket time.Duration // width of one accepted-per-bucket slot
	End    time.Duration // length of the run
	Limit  float64       // requests per second; 0 hides the limit line
	Outage period        // zero when the run had no outage
	// OutageLabel names the outage period; "" means "provider outage".
	OutageLabel string
	Series      []series
}

// series is one client's line.
type series struct {
	Name     string
	Accepted []int    // 2xx upstream responses per bucket
	Open     []period // when this client's breaker was open
}

var palette = []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"}

// writeSVG writes c as a standalone SVG line chart of accepted requests
// per second.
func writeSVG(w io.Writer, c chart) error {
	const (
		width, height = 900.0, 420.0
		left, right   = 60.0, 80.0
		top, bottom   = 40.0, 80.0
	)
	plotW, plotH := width-left-right, height-top-bottom
	bucket := c.Bucket
	if bucket <= 0 {
		bucket = time.Second
	}
	end := c.End.Seconds()
	if end <= 0 {
		end = 1
	}
	perSec := func(n int) float64 { return float64(n) / bucket.Seconds() }
	yMax := c.Limit * 1.5
	for _, s := range c.Series {
		for _, n := range s.Accepted {
			yMax = max(yMax, perSec(n)*1.1)
		}
	}
	if yMax <= 0 {
		yMax = 1
	}
	yMax = niceCeil(yMax)
	x := func(sec float64) float64 { return left + plotW*math.Min(math.Max(sec/end, 0), 1) }
	y := func(v float64) float64 { return top + plotH*(1-math.Min(v/yMax, 1)) }

	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	p(`<rect width="%g" height="%g" fill="white"/>`+"\n", width, height)
	p(`<text x="%g" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(c.Title))

	// Shaded periods: the outage, then each client's open breaker.
	if c.Outage.To > c.Outage.From {
		x0, x1 := x(c.Outage.From.Seconds()), x(c.Outage.To.Seconds())
		p(`<rect class="outage" x="%.1f" y="%g" width="%.1f" height="%g" fill="#999" fill-opacity="0.15"/>`+"\n", x0, top, x1-x0, plotH)
		label := c.OutageLabel
		if label == "" {
			label = "provider outage"
		}
		p(`<text x="%.1f" y="%g" fill="#555" text-anchor="middle">%s</text>`+"\n", (x0+x1)/2, top+14, html.EscapeString(label))
	}
	for i, s := range c.Series {
		color := palette[i%len(palette)]
		for _, o := range s.Open {
			x0, x1 := x(o.From.Seconds()), x(o.To.Seconds())
			p(`<rect class="open" x="%.1f" y="%g" width="%.1f" height="%g" fill="%s" fill-opacity="0.18"/>`+"\n",
				x0, top+plotH-12, math.Max(x1-x0, 1), 12.0, color)
		}
	}

	// Axes and grid.
	for i := 0; i <= 5; i++ {
		v := yMax * float64(i) / 5
		p(`<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, left+plotW, y(v), y(v))
		p(`<text x="%g" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y(v), trimFloat(v))
	}
	step := niceStep(end / 8)
	for s := 0.0; s <= end+1e-9; s += step {
		p(`<line x1="%.1f" x2="%.1f" y1="%g" y2="%g" stroke="#333"/>`+"\n", x(s), x(s), top+plotH, top+plotH+4)
		p(`<text x="%.1f" y="%g" text-anchor="middle">%ss</text>`+"\n", x(s), top+plotH+17, trimFloat(s))
	}
	p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#333"/>`+"\n", left, left+plotW, top+plotH, top+plotH)
	p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#333"/>`+"\n", left, left, top, top+plotH)
	p(`<text transform="translate(16 %g) rotate(-90)" text-anchor="middle">accepted requests / s</text>`+"\n", top+plotH/2)

	// The limit.
	if c.Limit > 0 {
		p(`<line class="limit" x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#000" stroke-dasharray="6 4"/>`+"\n", left, left+plotW, y(c.Limit), y(c.Limit))
		p(`<text x="%g" y="%.1f" dominant-baseline="middle">limit %s/s</text>`+"\n", left+plotW+6, y(c.Limit), trimFloat(c.Limit))
	}

	// One line per client, a point at the middle of each full bucket.
	for i, s := range c.Series {
		color := palette[i%len(palette)]
		p(`<polyline class="series" fill="none" stroke="%s" stroke-width="2" points="`, color)
		for j, n := range s.Accepted {
			mid := (float64(j) + 0.5) * bucket.Seconds()
			if mid > end {
				break
			}
			if j > 0 {
				p(" ")
			}
			p("%.1f,%.1f", x(mid), y(perSec(n)))
		}
		p(`"/>` + "\n")
	}

	// Legend.
	ly := height - 28
	lx := left
	for i, s := range c.Series {
		color := palette[i%len(palette)]
		p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="%s" stroke-width="2"/>`+"\n", lx, lx+24, ly, ly, color)
		p(`<text x="%g" y="%g" dominant-baseline="middle">%s</text>`+"\n", lx+30, ly, html.EscapeString(s.Name))
		lx += 40 + 8*float64(len(s.Name))
		if len(s.Open) > 0 {
			p(`<rect x="%g" y="%g" width="24" height="10" fill="%s" fill-opacity="0.18"/>`+"\n", lx, ly-5, color)
			p(`<text x="%g" y="%g" dominant-baseline="middle">%s breaker open</text>`+"\n", lx+30, ly, html.EscapeString(s.Name))
			lx += 130 + 8*float64(len(s.Name))
		}
	}
	p("</svg>\n")
	return bw.Flush()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

// niceStep rounds v to 1, 2 or 5 times a power of ten, at least v.
func niceStep(v float64) float64 { return niceCeil(v) }

// trimFloat formats v without trailing zeros.
func trimFloat(v float64) string {
	return fmt.Sprintf("%.4g", v)
}
