package steady

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestRetryPolicyDefaults(t *testing.T) {
	p := newRetryPolicy(RetryConfig{})
	if p.maxRetries != defaultMaxRetries || p.base != defaultBaseDelay || p.max != defaultMaxDelay ||
		p.decorrelated || p.maxRetryAfter != defaultMaxRetryAfter {
		t.Fatalf("defaults = %+v", p)
	}
	if p := newRetryPolicy(RetryConfig{MaxRetries: -1}); p.maxRetries != 0 {
		t.Fatalf("MaxRetries -1 gives %d retries, want 0", p.maxRetries)
	}
	if p := newRetryPolicy(RetryConfig{MaxRetryAfter: -1}); p.maxRetryAfter > 0 {
		t.Fatalf("MaxRetryAfter -1 gives cap %v, want none", p.maxRetryAfter)
	}
	if p := newRetryPolicy(RetryConfig{BaseDelay: time.Second, MaxDelay: time.Millisecond}); p.max != time.Second {
		t.Fatalf("MaxDelay below BaseDelay gives %v, want BaseDelay", p.max)
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	p := newRetryPolicy(RetryConfig{BaseDelay: 100 * time.Millisecond, MaxDelay: 2 * time.Second})
	for n := 1; n <= 70; n++ {
		ceil := 2 * time.Second
		if n <= 5 {
			ceil = min(100*time.Millisecond<<(n-1), ceil)
		}
		var maxSeen time.Duration
		for range 500 {
			d := p.backoff(n, 0)
			if d < 0 || d > ceil {
				t.Fatalf("retry %d: backoff %v outside [0, %v]", n, d, ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		// The draws spread over the range: with 500 of them, one lands in
		// the top half almost surely.
		if maxSeen < ceil/2 {
			t.Fatalf("retry %d: largest of 500 draws %v, below half of %v", n, maxSeen, ceil)
		}
	}
}

func TestBackoffDecorrelatedBounds(t *testing.T) {
	base, cap := 100*time.Millisecond, 3*time.Second
	p := newRetryPolicy(RetryConfig{BaseDelay: base, MaxDelay: cap, DecorrelatedJitter: true})
	for range 200 {
		prev := time.Duration(0)
		for n := 1; n <= 20; n++ {
			d := p.backoff(n, prev)
			hi := min(3*max(prev, base), cap)
			if d < base || d > hi {
				t.Fatalf("retry %d after %v: backoff %v outside [%v, %v]", n, prev, d, base, hi)
			}
			prev = d
		}
	}
}

func TestBackoffHugeSettingsDoNotOverflow(t *testing.T) {
	p := newRetryPolicy(RetryConfig{BaseDelay: time.Hour, MaxDelay: 1<<63 - 1})
	for n := 1; n < 100; n++ {
		if d := p.backoff(n, 0); d < 0 {
			t.Fatalf("retry %d: negative backoff %v", n, d)
		}
	}
	p.decorrelated = true
	if d := p.backoff(3, 1<<62); d < time.Hour {
		t.Fatalf("decorrelated with a huge previous wait: %v", d)
	}
}

func TestBudgetRatioAndFloor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBudget(0.25, -1)
		if b.withdraw() {
			t.Fatal("an empty budget with no floor allowed a retry")
		}
		for range 8 {
			b.deposit()
		}
		got := 0
		for b.withdraw() {
			got++
		}
		if got != 2 {
			t.Fatalf("8 first attempts at ratio 0.25 earned %d retries, want 2", got)
		}

		f := newBudget(0.1, 2)
		got = 0
		for f.withdraw() {
			got++
		}
		if got != 2 {
			t.Fatalf("floor of 2/s allowed a burst of %d, want 2", got)
		}
		time.Sleep(time.Second)
		got = 0
		for f.withdraw() {
			got++
		}
		if got != 2 {
			t.Fatalf("floor of 2/s refilled %d after a second, want 2", got)
		}
	})
}

func TestBudgetCapsBankedRetries(t *testing.T) {
	b := newBudget(1, -1)
	for range 10 * budgetMaxBanked {
		b.deposit()
	}
	got := 0
	for b.withdraw() {
		got++
	}
	if got != budgetMaxBanked {
		t.Fatalf("banked %d retries, want the cap %d", got, budgetMaxBanked)
	}
	if newBudget(-1, 0) != nil || !(*budget)(nil).withdraw() {
		t.Fatal("a negative ratio must disable the budget")
	}
}

func TestRetryWaitEndsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		go func() {
			time.Sleep(3 * time.Second)
			cancel()
		}()
		err := retryWait(ctx, time.Hour)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Fatalf("retryWait returned after %v, want 3s", got)
		}
		if err := retryWait(t.Context(), 2*time.Second); err != nil || time.Since(start) != 5*time.Second {
			t.Fatalf("retryWait(2s) = %v after %v", err, time.Since(start))
		}
	})
}
