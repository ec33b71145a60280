package steadytest

// KeepRequests bounds how many requests f.Requests returns, for this
// package's benchmarks and tests: only the most recent n are kept; zero
// keeps all of them, negative keeps none (Calls still counts them).
func KeepRequests(f *Fake, n int) { f.keep = n }
