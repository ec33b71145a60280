package main

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"time"
)

// chart is what the SVG plot shows: one panel per client, each with what
// it sent upstream, what was refused with 429 and what was accepted, in
// every window-long span (the unit the provider's limit counts in), the
// limit, the outage and the client's open breaker.
type chart struct {
	Title  string
	Bucket time.Duration // width of one slot of the series
	End    time.Duration // length of the run
	Limit  float64       // requests per second, on average; 0 hides the limit line
	// Window is the length the limit is counted over: each point is the
	// count in the window-long span ending with its slot, and the limit is
	// drawn as the quota per window. Zero or less than Bucket: per slot.
	Window time.Duration
	Outage period // zero when the run had no outage
	// OutageLabel names the outage period; "" means "provider outage".
	OutageLabel string
	Series      []series
}

// series is one client's panel.
type series struct {
	Name     string
	Accepted []int    // 2xx upstream responses per slot
	Attempts []int    // upstream attempts per slot; nil: not drawn
	Limited  []int    // 429s per slot; nil: not drawn
	Open     []period // when this client's breaker was open
}

// palette colours the clients' accepted lines; none is the 429s' red or
// the attempts' grey.
var palette = []string{"#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"}

const (
	attemptsColor = "#7f7f7f"
	limitedColor  = "#d62728"
)

// span returns the slots of one window-long span and its length.
func (c chart) span() (int, time.Duration) {
	b := c.Bucket
	if b <= 0 {
		b = time.Second
	}
	if c.Window <= b {
		return 1, b
	}
	k := int((c.Window + b/2) / b)
	return k, time.Duration(k) * b
}

// rolling returns, for each slot, the sum of per over the k slots ending
// with it.
func rolling(per []int, k int) []int {
	out := make([]int, len(per))
	sum := 0
	for i, n := range per {
		sum += n
		if i >= k {
			sum -= per[i-k]
		}
		out[i] = sum
	}
	return out
}

// writeSVG writes c as a standalone SVG chart.
func writeSVG(w io.Writer, c chart) error {
	const (
		width         = 900.0
		left, right   = 60.0, 110.0
		top, bottom   = 50.0, 60.0
		panelH, gap   = 150.0, 36.0
		legendSpacing = 16.0
	)
	n := max(len(c.Series), 1)
	height := top + float64(n)*(panelH+gap) + bottom
	plotW := width - left - right
	bucket := c.Bucket
	if bucket <= 0 {
		bucket = time.Second
	}
	end := c.End.Seconds()
	if end <= 0 {
		end = 1
	}
	k, spanLen := c.span()
	quota := c.Limit * spanLen.Seconds()
	type lines struct{ accepted, attempts, limited []int }
	all := make([]lines, len(c.Series))
	yMax := quota * 1.2
	for i, s := range c.Series {
		all[i] = lines{rolling(s.Accepted, k), rolling(s.Attempts, k), rolling(s.Limited, k)}
		for _, l := range [][]int{all[i].accepted, all[i].attempts, all[i].limited} {
			for _, v := range l {
				yMax = max(yMax, float64(v)*1.05)
			}
		}
	}
	if yMax <= 0 {
		yMax = 1
	}
	yMax = niceCeil(yMax)
	x := func(sec float64) float64 { return left + plotW*math.Min(math.Max(sec/end, 0), 1) }
	panelTop := func(i int) float64 { return top + float64(i)*(panelH+gap) }
	y := func(i int, v float64) float64 { return panelTop(i) + panelH*(1-math.Min(v/yMax, 1)) }

	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	p(`<rect width="%g" height="%g" fill="white"/>`+"\n", width, height)
	p(`<text x="%g" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(c.Title))
	unit := "per " + trimFloat(spanLen.Seconds()) + " s"
	p(`<text x="%g" y="38" fill="#555">requests in the %s ending at each second; the limit counts them so</text>`+"\n", left, html.EscapeString(trimFloat(spanLen.Seconds())+" s"))

	for i, s := range c.Series {
		color := palette[i%len(palette)]
		pt := panelTop(i)
		p(`<text class="panel" x="%g" y="%.1f" font-weight="bold" fill="%s">%s</text>`+"\n", left, pt-6, color, html.EscapeString(s.Name))
		// Shaded periods: the outage across the panel, then this
		// client's open breaker, hatched in its own colour.
		if c.Outage.To > c.Outage.From {
			x0, x1 := x(c.Outage.From.Seconds()), x(c.Outage.To.Seconds())
			p(`<rect class="outage" x="%.1f" y="%g" width="%.1f" height="%g" fill="#999" fill-opacity="0.15"/>`+"\n", x0, pt, x1-x0, panelH)
			label := c.OutageLabel
			if label == "" {
				label = "provider outage"
			}
			p(`<text x="%.1f" y="%g" fill="#555" text-anchor="middle">%s</text>`+"\n", (x0+x1)/2, pt+14, html.EscapeString(label))
		}
		for _, o := range s.Open {
			x0, x1 := x(o.From.Seconds()), x(o.To.Seconds())
			p(`<rect class="open" x="%.1f" y="%g" width="%.1f" height="%g" fill="%s" fill-opacity="0.35"/>`+"\n",
				x0, pt+panelH-10, math.Max(x1-x0, 1), 10.0, color)
		}
		// Axes and grid.
		for j := 0; j <= 4; j++ {
			v := yMax * float64(j) / 4
			p(`<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", left, left+plotW, y(i, v), y(i, v))
			p(`<text x="%g" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y(i, v), trimFloat(v))
		}
		step := niceStep(end / 8)
		for sec := 0.0; sec <= end+1e-9; sec += step {
			p(`<line x1="%.1f" x2="%.1f" y1="%g" y2="%g" stroke="#333"/>`+"\n", x(sec), x(sec), pt+panelH, pt+panelH+4)
			p(`<text x="%.1f" y="%g" text-anchor="middle">%ss</text>`+"\n", x(sec), pt+panelH+16, trimFloat(sec))
		}
		p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#333"/>`+"\n", left, left+plotW, pt+panelH, pt+panelH)
		p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#333"/>`+"\n", left, left, pt, pt+panelH)
		p(`<text transform="translate(16 %g) rotate(-90)" text-anchor="middle">%s</text>`+"\n", pt+panelH/2, html.EscapeString(unit))
		// The limit: the quota per window-long span.
		if c.Limit > 0 {
			p(`<line class="limit" x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#000" stroke-dasharray="6 4"/>`+"\n", left, left+plotW, y(i, quota), y(i, quota))
			p(`<text x="%g" y="%.1f" dominant-baseline="middle">limit %s %s</text>`+"\n", left+plotW+6, y(i, quota), trimFloat(quota), html.EscapeString(unit))
		}
		polyline := func(class, stroke, dash string, width float64, vals []int) {
			if vals == nil {
				return
			}
			p(`<polyline class="%s" fill="none" stroke="%s" stroke-width="%g"`, class, stroke, width)
			if dash != "" {
				p(` stroke-dasharray="%s"`, dash)
			}
			p(` points="`)
			for j, v := range vals {
				mid := (float64(j) + 0.5) * bucket.Seconds()
				if mid > end {
					break
				}
				if j > 0 {
					p(" ")
				}
				p("%.1f,%.1f", x(mid), y(i, float64(v)))
			}
			p(`"/>` + "\n")
		}
		if s.Attempts != nil {
			polyline("attempts", attemptsColor, "2 2", 1.5, all[i].attempts)
		}
		if s.Limited != nil {
			polyline("limited", limitedColor, "7 3", 1.5, all[i].limited)
		}
		polyline("series", color, "", 2.5, all[i].accepted)
	}

	// Legend.
	ly := height - 24
	lx := left
	item := func(draw func(x float64), label string) {
		draw(lx)
		p(`<text x="%g" y="%g" dominant-baseline="middle">%s</text>`+"\n", lx+30, ly, html.EscapeString(label))
		lx += 30 + 7*float64(len(label)) + legendSpacing
	}
	item(func(x float64) {
		p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#000" stroke-width="2.5"/>`+"\n", x, x+24, ly, ly)
	}, "accepted (panel colour)")
	if len(c.Series) > 0 && c.Series[0].Attempts != nil {
		item(func(x float64) {
			p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="%s" stroke-width="1.5" stroke-dasharray="2 2"/>`+"\n", x, x+24, ly, ly, attemptsColor)
		}, "upstream attempts")
	}
	if len(c.Series) > 0 && c.Series[0].Limited != nil {
		item(func(x float64) {
			p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="%s" stroke-width="1.5" stroke-dasharray="7 3"/>`+"\n", x, x+24, ly, ly, limitedColor)
		}, "429s")
	}
	if c.Limit > 0 {
		item(func(x float64) {
			p(`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#000" stroke-dasharray="6 4"/>`+"\n", x, x+24, ly, ly)
		}, "limit")
	}
	for _, s := range c.Series {
		if len(s.Open) > 0 {
			item(func(x float64) {
				p(`<rect x="%g" y="%g" width="24" height="10" fill="#555" fill-opacity="0.35"/>`+"\n", x, ly-5)
			}, "breaker open (panel colour)")
			break
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
