package amqpbroker

import (
	"context"
	"time"
)

// backoff computes reconnect delays with exponential growth and full jitter:
// delay(n) is uniform in [0, min(cap, base*2^n)]. Full jitter spreads the
// reconnects of many gateways that lost RabbitMQ at the same moment, which a
// fixed or merely "equal jitter" schedule does not.
type backoff struct {
	base, cap time.Duration

	// randN returns a uniformly random integer in [0, n) for n > 0. Tests
	// inject a deterministic one.
	randN func(n int64) int64
}

// ceiling returns min(cap, base*2^attempt) without overflowing, however large
// attempt gets.
func (b backoff) ceiling(attempt int) time.Duration {
	d := b.base
	for range max(attempt, 0) {
		if d >= b.cap-d { // d*2 >= cap, asked without computing d*2
			return b.cap
		}
		d *= 2
	}
	return min(d, b.cap)
}

// delay returns the sleep before reconnect attempt number attempt (from 0).
func (b backoff) delay(attempt int) time.Duration {
	c := b.ceiling(attempt)
	if c <= 0 {
		return 0
	}
	return time.Duration(b.randN(int64(c) + 1))
}

// sleepCtx waits for d or until ctx ends, and reports whether the full d
// passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
