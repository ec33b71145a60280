package steadyotel

// Every metric, attribute and span name steadyotel records is declared in
// this file.
//
// Names from the OpenTelemetry semantic conventions keep their stability:
// the HTTP client names (http.*, server.*, url.full, error.type) are
// Stable; the GenAI names (gen_ai.*) are Development and may change with
// the conventions. Names under steady.* are steady's own, for what no
// convention covers.

// ScopeName is the instrumentation scope of steadyotel's meter and tracer.
const ScopeName = "github.com/steady-go/steady/steadyotel"

// Metric names.
const (
	// Stable HTTP client conventions.
	metricRequestDuration = "http.client.request.duration"

	// steady's own.
	metricRetries         = "steady.retries"
	metricGiveUps         = "steady.give_ups"
	metricRejections      = "steady.rejections"
	metricRateLimited     = "steady.rate_limited"
	metricCooldowns       = "steady.pacing.cooldowns"
	metricPacingWait      = "steady.pacing.wait.duration"
	metricEstimateError   = "steady.tokens.estimate.error"
	metricWaiting         = "steady.pacing.waiting"
	metricInFlight        = "steady.pacing.in_flight"
	metricLimit           = "steady.rate_limit.limit"
	metricRemaining       = "steady.rate_limit.remaining"
	metricReset           = "steady.rate_limit.reset"
	metricBreakerState    = "steady.breaker.state"
	metricBreakerChanges  = "steady.breaker.transitions"
	metricBudgetExhausted = "steady.retry_budget.exhausted"
	metricEvents          = "steady.events"
	metricStoreFallbacks  = "steady.store.fallbacks"
)

// Metric descriptions.
const (
	descRequestDuration = "Duration of each upstream attempt (one per try: a request retried twice records three)."
	descRetries         = "Failed attempts that steady retries."
	descGiveUps         = "Requests handed back failed after steady decided not to retry (again)."
	descRejections      = "Requests failed at once without being sent: circuit open, or a pacing wait past the deadline or cap."
	descRateLimited     = "Attempts answered 429 Too Many Requests."
	descCooldowns       = "Times a partition stopped sending after a 429 or a retry hint."
	descPacingWait      = "Time a request waited for its turn before being sent, to stay under the announced limits."
	descEstimateError   = "Tokens an attempt reserved less those its response said it used: the token estimate's error."
	descWaiting         = "Requests waiting for their turn now."
	descInFlight        = "Requests sent and not yet answered now."
	descLimit           = "Quota per window announced by the upstream (or configured)."
	descRemaining       = "Quota left in the window, as the latest response announced."
	descReset           = "Seconds until the window is replenished, as the latest response announced."
	descBreakerState    = "1 for the circuit breaker's current state, 0 for the others."
	descBreakerChanges  = "Circuit breaker state changes."
	descBudgetExhausted = "Failed attempts not retried because the retry budget was spent."
	descEvents          = "Every event steady reports except attempts, by kind: the catch-all that also counts event kinds added later."
	descStoreFallbacks  = "Times the shared pacing store could not be reached and pacing fell back to this process's share of the limits."
)

// Metric units, in UCUM with annotations as the conventions write them.
const (
	unitSeconds     = "s"
	unitTokens      = "{token}"
	unitRequests    = "{request}"
	unitRetries     = "{retry}"
	unitResponses   = "{response}"
	unitCooldowns   = "{cooldown}"
	unitQuota       = "{quota}"
	unitTransitions = "{transition}"
	unitEvents      = "{event}"
	unitStates      = "{state}"
	unitFallbacks   = "{fallback}"
)

// Attribute keys.
const (
	// Stable HTTP client conventions.
	attrMethod      = "http.request.method"
	attrStatus      = "http.response.status_code"
	attrResendCount = "http.request.resend_count"
	attrAddress     = "server.address"
	attrPort        = "server.port"
	attrURL         = "url.full"
	attrErrorType   = "error.type"

	// GenAI conventions (Development).
	attrProvider  = "gen_ai.provider.name"
	attrOperation = "gen_ai.operation.name"
	attrModel     = "gen_ai.request.model"

	// steady's own.
	attrReason          = "steady.reason"
	attrPriority        = "steady.priority" // batch, default or interactive; only on requests with a priority
	attrEventKind       = "steady.event.kind"
	attrWindow          = "steady.rate_limit.window"
	attrUnit            = "steady.rate_limit.unit"
	attrBreakerState    = "steady.breaker.state"
	attrBreakerPrevious = "steady.breaker.previous_state"
	attrRequestID       = "steady.upstream.request_id"
	attrUpstream        = "steady.upstream.name" // a routed request's Upstream.Name (steady.upstream is a namespace: see attrRequestID)
	attrPacingWait      = "steady.pacing.wait"
	attrWait            = "steady.wait"
)

// spanEventPrefix starts the name of an event added to the caller's span:
// "steady.retry", "steady.give-up", "steady.rejected", "steady.pace".
const spanEventPrefix = "steady."

// Values of gen_ai.provider.name (Development) for the hosts steady knows.
const (
	providerOpenAI      = "openai"
	providerAzureOpenAI = "azure.ai.openai"
	providerAnthropic   = "anthropic"
	providerGroq        = "groq"
	providerDeepSeek    = "deepseek"
	providerMistral     = "mistral_ai"
	providerXAI         = "x_ai"
	providerPerplexity  = "perplexity"
	providerGemini      = "gcp.gemini"
	providerCohere      = "cohere"
	providerHeroku      = "heroku"
)

// Values of gen_ai.operation.name (Development).
const (
	operationChat       = "chat"
	operationText       = "text_completion"
	operationEmbeddings = "embeddings"
)

// Values of error.type for a transport failure; an error status is
// recorded as its code.
const (
	errCanceled   = "canceled"
	errTimeout    = "timeout"
	errDNS        = "dns"
	errConnection = "connection"
	errTLS        = "tls"
)

// otherValue stands for any value past a cap, as the conventions spell it
// for unknown HTTP methods.
const otherValue = "_OTHER"

// Values of steady.reason: the bounded set every event reason is mapped to.
const (
	reasonRateLimited   = "rate_limited" // 429
	reasonOverloaded    = "overloaded"   // 529, or an overloaded error
	reasonServerError   = "server_error" // other 5xx
	reasonTimeout       = "timeout"      // a transport timeout
	reasonConnection    = "connection"   // connection refused, reset, closed
	reasonCircuitOpen   = "circuit_open" // the upstream's circuit is open
	reasonPacingWait    = "pacing_wait"  // a pacing wait past the deadline or cap
	reasonRetriesDone   = "retries_exhausted"
	reasonBudget        = "retry_budget_exhausted"
	reasonDeadline      = "deadline" // the caller's deadline comes first
	reasonCanceled      = "canceled" // the caller's context ended
	reasonHintTooLong   = "retry_after_too_long"
	reasonNotReplayable = "body_not_replayable"
	reasonQuota         = "insufficient_quota"
	reasonClientError   = "client_error" // 4xx other than 429
	reasonNotRetryable  = "not_retryable"
	reasonStoreFallback = "store_fallback" // a shared store was not reached
	reasonOther         = "other"
)

// Values of steady.rate_limit.unit.
const (
	unitNameRequests = "requests"
	unitNameTokens   = "tokens"
)

// Values of steady.breaker.state.
var breakerStateNames = [...]string{"closed", "half_open", "open"}

// Caps on distinct attribute values, past which otherValue is recorded.
const (
	maxHosts   = 64
	maxModels  = 64
	maxWindows = 16
)
