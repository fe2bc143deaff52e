package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramQuantilesWithinOnePercent(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	var vals []int64
	for range 100000 {
		// Log-uniform from 1us to 1s, as latencies spread.
		v := int64(1e3 * math.Pow(10, r.Float64()*6))
		vals = append(vals, v)
		h.Record(v)
	}
	slices.Sort(vals)
	s := h.Summary()
	if s.N != uint64(len(vals)) {
		t.Fatalf("N = %d, want %d", s.N, len(vals))
	}
	for _, c := range []struct {
		name string
		got  time.Duration
		q    float64
	}{{"p50", s.P50, 0.50}, {"p90", s.P90, 0.90}, {"p99", s.P99, 0.99}, {"p99.9", s.P999, 0.999}} {
		want := vals[int(c.q*float64(len(vals))+0.999999)-1]
		if d := float64(int64(c.got)-want) / float64(want); d > 0.01 || d < -0.01 {
			t.Errorf("%s = %v, want %v within 1%%", c.name, c.got, time.Duration(want))
		}
	}
	if s.Max != time.Duration(vals[len(vals)-1]) {
		t.Errorf("max = %v, want %v", s.Max, time.Duration(vals[len(vals)-1]))
	}
}

func TestHistogramIndexIsMonotonicAndTight(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<22; v += 1 + v/500 {
		i := histIndex(v)
		if i < prev {
			t.Fatalf("index(%d) = %d < index of a smaller value %d", v, i, prev)
		}
		prev = i
		if mid := histValue(i); v >= 256 {
			if d := float64(mid-v) / float64(v); d > 0.008 || d < -0.008 {
				t.Fatalf("bucket of %d has middle %d: off by %.3f", v, mid, d)
			}
		} else if mid != v {
			t.Fatalf("small value %d reads back as %d", v, mid)
		}
	}
	if i := histIndex(1 << 62); i != histBuckets-1 {
		t.Fatalf("huge value index %d, want the last bucket %d", i, histBuckets-1)
	}
}

func TestHistogramRecordDoesNotAllocate(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(1000, func() { h.Record(12345) }); n != 0 {
		t.Fatalf("Record allocates %v times", n)
	}
}
