package steady_test

import "github.com/steady-go/steady/internal/headertest"

// hdr builds a header from "Name: value" lines, keeping each name exactly
// as written (headertest.Lines).
var hdr = headertest.Lines
