package amqpbroker

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffCeilingGrowsThenCaps(t *testing.T) {
	b := backoff{base: 100 * time.Millisecond, cap: 2 * time.Second}
	want := []time.Duration{
		100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 2 * time.Second, 2 * time.Second,
	}
	for attempt, w := range want {
		if got := b.ceiling(attempt); got != w {
			t.Errorf("ceiling(%d) = %v, want %v", attempt, got, w)
		}
	}
	// No overflow however many attempts failed.
	for _, attempt := range []int{62, 63, 64, 1000, 1 << 30} {
		if got := b.ceiling(attempt); got != b.cap {
			t.Errorf("ceiling(%d) = %v, want the cap %v", attempt, got, b.cap)
		}
	}
	if got := b.ceiling(-1); got != b.base {
		t.Errorf("ceiling(-1) = %v, want the base %v", got, b.base)
	}
	huge := backoff{base: time.Duration(1) << 61, cap: time.Duration(1<<63 - 1)}
	if got := huge.ceiling(5); got != huge.cap {
		t.Errorf("huge ceiling(5) = %v, want the cap %v", got, huge.cap)
	}
}

// TestBackoffFullJitter checks, with an injected random source, that delay
// asks for a number in [0, ceiling] and returns it: the lowest draw gives 0
// and the highest gives the ceiling itself.
func TestBackoffFullJitter(t *testing.T) {
	var asked []int64
	lowest := backoff{base: 100 * time.Millisecond, cap: 2 * time.Second, randN: func(n int64) int64 {
		asked = append(asked, n)
		return 0
	}}
	highest := backoff{base: 100 * time.Millisecond, cap: 2 * time.Second, randN: func(n int64) int64 { return n - 1 }}
	for attempt := range 10 {
		c := lowest.ceiling(attempt)
		if got := lowest.delay(attempt); got != 0 {
			t.Errorf("lowest delay(%d) = %v, want 0", attempt, got)
		}
		if got, want := asked[len(asked)-1], int64(c)+1; got != want {
			t.Errorf("delay(%d) drew from [0, %d), want [0, %d)", attempt, got, want)
		}
		if got := highest.delay(attempt); got != c {
			t.Errorf("highest delay(%d) = %v, want the ceiling %v", attempt, got, c)
		}
	}
}

// TestBackoffBounds checks many real random delays against their bounds, and
// that they spread over the range rather than clustering at one end.
func TestBackoffBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := backoff{base: 100 * time.Millisecond, cap: 2 * time.Second, randN: r.Int64N}
	for attempt := range 12 {
		c := b.ceiling(attempt)
		var low, high bool
		for range 2000 {
			d := b.delay(attempt)
			if d < 0 || d > c {
				t.Fatalf("delay(%d) = %v, outside [0, %v]", attempt, d, c)
			}
			low = low || d < c/4
			high = high || d > c*3/4
		}
		if !low || !high {
			t.Errorf("delay(%d) never fell in the lowest or highest quarter of [0, %v]", attempt, c)
		}
	}
}

func TestBackoffZeroCeiling(t *testing.T) {
	b := backoff{randN: func(int64) int64 { t.Fatal("drew a random number for a zero ceiling"); return 0 }}
	if got := b.delay(3); got != 0 {
		t.Errorf("delay = %v, want 0", got)
	}
}
