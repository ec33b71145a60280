// Package steadyotel reports what a [steady.Transport] does as
// OpenTelemetry metrics and traces.
//
// Call [Instrument] beside steady.New. Every upstream attempt is recorded
// in http.client.request.duration (the stable HTTP client convention) and,
// when tracing is set up, as a client span under the caller's span;
// retries, give-ups, rejections, 429s, pacing waits, announced rate-limit
// windows and circuit breaker states are recorded under steady.* names.
// GenAI attributes (gen_ai.provider.name, gen_ai.operation.name,
// gen_ai.request.model) follow the GenAI conventions, which are still in
// Development. Every name is declared in names.go; the README holds the
// table of metrics.
//
// Attribute values are bounded: a partition's credential fingerprint is
// never recorded, and hosts, models and window names past a cap are
// recorded as "_OTHER".
package steadyotel
