package steadyotel

import (
	"errors"

	"go.opentelemetry.io/otel/metric"
)

// durationBuckets are the HTTP conventions' advised boundaries for
// http.client.request.duration, extended to two minutes: LLM calls often
// take longer than ten seconds.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 120}

// waitBuckets are the boundaries of steady.pacing.wait.duration.
// estimateErrorBuckets are the bucket boundaries, in tokens, of the token
// estimate's error: what an attempt reserved less what its response said
// it used (negative when it used more than reserved).
var estimateErrorBuckets = []float64{-4000, -1000, -250, -50, 0, 50, 250, 1000, 4000, 16000, 64000}

var waitBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// instruments are the metric instruments of one Instrumentation.
type instruments struct {
	duration        metric.Float64Histogram
	pacingWait      metric.Float64Histogram
	estimateError   metric.Int64Histogram
	retries         metric.Int64Counter
	giveUps         metric.Int64Counter
	rejections      metric.Int64Counter
	rateLimited     metric.Int64Counter
	cooldowns       metric.Int64Counter
	breakerChanges  metric.Int64Counter
	budgetExhausted metric.Int64Counter
	events          metric.Int64Counter
	storeFallbacks  metric.Int64Counter

	waiting      metric.Int64ObservableGauge
	inFlight     metric.Int64ObservableGauge
	limit        metric.Int64ObservableGauge
	remaining    metric.Int64ObservableGauge
	reset        metric.Float64ObservableGauge
	breakerState metric.Int64ObservableGauge
}

// create makes every instrument from m.
func (i *instruments) create(m metric.Meter) error {
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	i.duration, err = m.Float64Histogram(metricRequestDuration, metric.WithUnit(unitSeconds),
		metric.WithDescription(descRequestDuration), metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	i.pacingWait, err = m.Float64Histogram(metricPacingWait, metric.WithUnit(unitSeconds),
		metric.WithDescription(descPacingWait), metric.WithExplicitBucketBoundaries(waitBuckets...))
	check(err)
	i.estimateError, err = m.Int64Histogram(metricEstimateError, metric.WithUnit(unitTokens),
		metric.WithDescription(descEstimateError), metric.WithExplicitBucketBoundaries(estimateErrorBuckets...))
	check(err)
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return c
	}
	i.retries = counter(metricRetries, unitRetries, descRetries)
	i.giveUps = counter(metricGiveUps, unitRequests, descGiveUps)
	i.rejections = counter(metricRejections, unitRequests, descRejections)
	i.rateLimited = counter(metricRateLimited, unitResponses, descRateLimited)
	i.cooldowns = counter(metricCooldowns, unitCooldowns, descCooldowns)
	i.breakerChanges = counter(metricBreakerChanges, unitTransitions, descBreakerChanges)
	i.budgetExhausted = counter(metricBudgetExhausted, unitRequests, descBudgetExhausted)
	i.events = counter(metricEvents, unitEvents, descEvents)
	i.storeFallbacks = counter(metricStoreFallbacks, unitFallbacks, descStoreFallbacks)

	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return g
	}
	i.waiting = gauge(metricWaiting, unitRequests, descWaiting)
	i.inFlight = gauge(metricInFlight, unitRequests, descInFlight)
	i.limit = gauge(metricLimit, unitQuota, descLimit)
	i.remaining = gauge(metricRemaining, unitQuota, descRemaining)
	i.breakerState = gauge(metricBreakerState, unitStates, descBreakerState)
	i.reset, err = m.Float64ObservableGauge(metricReset, metric.WithUnit(unitSeconds), metric.WithDescription(descReset))
	check(err)
	return errors.Join(errs...)
}

// observables lists the instruments set by the state callback.
func (i *instruments) observables() []metric.Observable {
	return []metric.Observable{i.waiting, i.inFlight, i.limit, i.remaining, i.reset, i.breakerState}
}
