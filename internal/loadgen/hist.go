package loadgen

import (
	"encoding/json"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram layout: values below histSub are counted exactly; above, each
// power of two is split into histSub/2 equal buckets, so a bucket is at
// most 1/128 of its value wide (HDR histogram style, < 0.8% error). Values
// are nanoseconds; histMaxExp bounds them at 2^histMaxExp ns (about 9
// minutes), larger ones land in the last bucket (the exact maximum is kept
// apart).
const (
	histSubBits = 8
	histSub     = 1 << histSubBits // 256
	histHalf    = histSub / 2      // 128
	histMaxExp  = 39
	histBuckets = histSub + (histMaxExp-histSubBits)*histHalf
)

// Histogram counts durations. Record may be called from any number of
// goroutines at once; it takes no lock and does not allocate.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Int64
}

func histIndex(v int64) int {
	if v < histSub {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	e := bits.Len64(uint64(v)) - histSubBits // >= 1
	i := histSub + (e-1)*histHalf + int(uint64(v)>>e) - histHalf
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue returns the middle of bucket i.
func histValue(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := (i-histSub)/histHalf + 1
	m := int64((i-histSub)%histHalf + histHalf)
	lo := m << e
	return lo + (int64(1)<<e)/2
}

// Record adds one duration, in nanoseconds.
func (h *Histogram) Record(ns int64) {
	if ns < 0 {
		ns = 0
	}
	h.counts[histIndex(ns)].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(ns))
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// Reset forgets everything recorded. Samples recorded while it runs may be
// half counted; callers reset between phases, when nothing is recorded.
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.n.Store(0)
	h.sum.Store(0)
	h.max.Store(0)
}

// Summary is a histogram's distribution at one moment.
type Summary struct {
	N    uint64
	Mean time.Duration
	P50  time.Duration
	P90  time.Duration
	P99  time.Duration
	P999 time.Duration
	Max  time.Duration
}

// Summary returns the count, mean, percentiles and maximum recorded so far.
func (h *Histogram) Summary() Summary {
	var counts [histBuckets]uint64
	var n uint64
	for i := range counts {
		counts[i] = h.counts[i].Load()
		n += counts[i]
	}
	s := Summary{N: n, Max: time.Duration(h.max.Load())}
	if n == 0 {
		return s
	}
	s.Mean = time.Duration(h.sum.Load() / max(h.n.Load(), 1))
	quantile := func(q float64) time.Duration {
		// The rank of the sample at quantile q, 1-based, rounded up: p99 of
		// 100 samples is the 99th smallest.
		rank := uint64(q*float64(n) + 0.999999)
		rank = min(max(rank, 1), n)
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				return min(time.Duration(histValue(i)), s.Max)
			}
		}
		return s.Max
	}
	s.P50, s.P90, s.P99, s.P999 = quantile(0.50), quantile(0.90), quantile(0.99), quantile(0.999)
	return s
}

// MarshalJSON writes the summary in milliseconds.
func (s Summary) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return json.Marshal(struct {
		N    uint64  `json:"n"`
		Mean float64 `json:"mean_ms"`
		P50  float64 `json:"p50_ms"`
		P90  float64 `json:"p90_ms"`
		P99  float64 `json:"p99_ms"`
		P999 float64 `json:"p999_ms"`
		Max  float64 `json:"max_ms"`
	}{s.N, ms(s.Mean), ms(s.P50), ms(s.P90), ms(s.P99), ms(s.P999), ms(s.Max)})
}
