package steady

// RetryConfig says what is retried and how long steady waits between tries.
type RetryConfig struct{}
