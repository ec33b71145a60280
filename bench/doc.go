// Package bench measures steady against the libraries users pick instead:
// the bare OpenAI Go SDK, hashicorp/go-retryablehttp and failsafe-go's
// failsafehttp. It is its own module, so that steady's module gains no
// dependency from it.
//
// Every peer runs the same workload at the same time against its own
// simulated provider (steadytest), in fake time (testing/synctest):
//
//	go test -count=1 -run 'TestReport$' -report .
//
// writes ../BENCHMARKS.md with the results, the success-path overhead of
// each peer (BenchmarkOverhead) and the machine it ran on. It also runs a
// matrix of finite batches against every kind of limit in fake time
// (runBatch, matrixLimits, matrixPatterns), each peer's makespan stated as
// a multiple of the quota's physical minimum, and the same kind of batch in
// real time against servers on 127.0.0.1 (loopbackCases), which
//
//	go test -count=1 -run 'TestLoopback$' -loopback -v .
//
// runs alone.
//
// Nothing imports the package: its harness is unexported, and its tests
// (and the flags above) are the way in.
package bench
