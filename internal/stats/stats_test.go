package stats

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/protocol"
)

// fakeClock is a settable clock for tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 28, 19, 20, 0, 0, time.UTC)}
}

// hist returns a histogram with n values in the bucket of each given value.
func hist(values map[float64]uint64) []uint64 {
	h := make([]uint64, NumBuckets)
	for v, n := range values {
		h[bucketOf(v)] += n
	}
	return h
}

func TestBucketOf(t *testing.T) {
	for _, tc := range []struct {
		ms   float64
		want int
	}{
		{0, 0}, {0.5, 0}, {1, 0}, {1.01, 1}, {2, 1}, {7.5, 4}, {8, 5},
		{30000, NumBuckets - 2}, {30000.1, NumBuckets - 1}, {1e9, NumBuckets - 1},
	} {
		if got := bucketOf(tc.ms); got != tc.want {
			t.Errorf("bucketOf(%v) = %d, want %d", tc.ms, got, tc.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	if _, ok := Quantile(make([]uint64, NumBuckets), 0.5); ok {
		t.Errorf("empty histogram has a quantile")
	}
	if _, ok := Quantile([]uint64{1, 2}, 0.5); ok {
		t.Errorf("a histogram of the wrong length has a quantile")
	}
	// 100 values in (10, 15]: the median is interpolated to the middle.
	h := hist(map[float64]uint64{12: 100})
	if got, _ := Quantile(h, 0.5); math.Abs(got-12.5) > 1e-9 {
		t.Errorf("p50 = %v, want 12.5", got)
	}
	// 99 fast values and one slow: p50 is fast, p99 at the edge, p99.9 slow.
	h = hist(map[float64]uint64{1: 99, 400: 1})
	if got, _ := Quantile(h, 0.5); got > 1 {
		t.Errorf("p50 = %v, want <= 1", got)
	}
	if got, _ := Quantile(h, 0.99); got > 1 {
		t.Errorf("p99 = %v, want <= 1 (the 99th of 100 values is fast)", got)
	}
	if got, _ := Quantile(h, 0.999); got <= 300 || got > 500 {
		t.Errorf("p99.9 = %v, want in (300, 500]", got)
	}
	// Values past the last bound count as the last bound.
	h = hist(map[float64]uint64{1e6: 3})
	if got, _ := Quantile(h, 0.5); got != 30000 {
		t.Errorf("p50 of overflow = %v, want 30000", got)
	}
}

func TestCollectorReport(t *testing.T) {
	clk := newClock()
	conns, rooms := 7, 3
	c := NewCollector(CollectorConfig{
		Gateway: "gw-1", Interval: 2 * time.Second, Now: clk.now,
		Connections: func() int { return conns }, Rooms: func() int { return rooms },
	})
	for range 5 {
		c.Sent("general")
	}
	c.Sent("random")
	for range 3 {
		c.Sent("dev")
	}
	c.Delivered(40)
	c.Delivered(0)
	c.Delivered(-3)
	c.Latency([]float64{1, 12, 12, math.NaN(), -1}, []float64{400, math.Inf(1)})
	clk.advance(2 * time.Second)

	r := c.Report()
	if r.Type != BodyType || r.Gateway != "gw-1" || r.IntervalMS != 2000 {
		t.Errorf("header = %q %q %d", r.Type, r.Gateway, r.IntervalMS)
	}
	if !r.Time.Equal(clk.t) || !r.Started.Equal(clk.t.Add(-2*time.Second)) {
		t.Errorf("time %v started %v", r.Time, r.Started)
	}
	if r.Connections != 7 || r.LocalRooms != 3 || r.Sent != 9 || r.Delivered != 40 {
		t.Errorf("counts = conns %d rooms %d sent %d delivered %d, want 7 3 9 40", r.Connections, r.LocalRooms, r.Sent, r.Delivered)
	}
	if got, want := r.RTT, hist(map[float64]uint64{1: 1, 12: 2}); !equal(got, want) {
		t.Errorf("rtt = %v, want %v", got, want)
	}
	if got, want := r.Delivery, hist(map[float64]uint64{400: 1}); !equal(got, want) {
		t.Errorf("delivery = %v, want %v", got, want)
	}
	want := []RoomCount{{"general", 5}, {"dev", 3}, {"random", 1}}
	if len(r.Busiest) != len(want) {
		t.Fatalf("busiest = %v, want %v", r.Busiest, want)
	}
	for i := range want {
		if r.Busiest[i] != want[i] {
			t.Errorf("busiest = %v, want %v", r.Busiest, want)
		}
	}
	if err := r.validate(); err != nil {
		t.Errorf("own report does not validate: %v", err)
	}

	// The next report keeps the counters, and starts the interval's
	// histograms and rooms afresh.
	c.Sent("general")
	r = c.Report()
	if r.Sent != 10 || r.Delivered != 40 {
		t.Errorf("counters = %d %d, want 10 40", r.Sent, r.Delivered)
	}
	if !equal(r.RTT, make([]uint64, NumBuckets)) || len(r.Busiest) != 1 {
		t.Errorf("second interval: rtt %v busiest %v", r.RTT, r.Busiest)
	}
}

func TestCollectorTopTenRooms(t *testing.T) {
	c := NewCollector(CollectorConfig{Gateway: "gw"})
	for i := range 15 {
		for range i + 1 {
			c.Sent("room-" + string(rune('a'+i)))
		}
	}
	r := c.Report()
	if len(r.Busiest) != TopRooms {
		t.Fatalf("%d busiest rooms, want %d", len(r.Busiest), TopRooms)
	}
	if r.Busiest[0].Room != "room-o" || r.Busiest[0].Sends != 15 || r.Busiest[9].Sends != 6 {
		t.Errorf("busiest = %v", r.Busiest)
	}
}

// TestReportIsABrokerBody checks that the hub, which decodes every broker
// body as a chat message first, hands a report on instead of dropping it.
func TestReportIsABrokerBody(t *testing.T) {
	c := NewCollector(CollectorConfig{Gateway: "gw-1"})
	c.Sent("general")
	c.Latency([]float64{3}, []float64{4})
	body, err := json.Marshal(c.Report())
	if err != nil {
		t.Fatal(err)
	}
	typ, _, err := protocol.DecodeBody(body)
	if err != nil || typ != BodyType {
		t.Fatalf("protocol.DecodeBody = %q, %v; want %q, nil", typ, err, BodyType)
	}
	if _, err := DecodeReport(body); err != nil {
		t.Errorf("DecodeReport: %v", err)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
