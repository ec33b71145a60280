// Package steadyotel reports what a [steady.Transport] does as
// OpenTelemetry metrics and traces.
package steadyotel
