package stats

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// CollectorConfig configures a Collector. Gateway and Publish are required.
type CollectorConfig struct {
	// Gateway is this gateway's id, as in welcome frames.
	Gateway string
	// Interval is how often a report is published. Zero means
	// DefaultInterval (5s); it is kept between 10ms and 10 minutes.
	Interval time.Duration
	// Connections and Rooms report this gateway's open connections and the
	// rooms with members here. Nil counts as zero.
	Connections func() int
	Rooms       func() int
	// Publish sends a report body to every gateway (the broker's Publish,
	// with no message id). It is called from Run only, one call at a time,
	// with a context bounded by Interval.
	Publish func(ctx context.Context, body []byte) error
	// Logger is told about failed publishes. Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// maxRoomsTracked bounds the rooms counted between two reports; sends to
// rooms beyond it still count in Sent, not in the busiest rooms. A few
// thousand rooms active within one interval is already a lot.
const maxRoomsTracked = 10_000

// Collector counts what one gateway does and reports it every interval. It
// implements the gateway's StatsRecorder. Create it with NewCollector and
// start reporting with Run.
type Collector struct {
	cfg     CollectorConfig
	log     *slog.Logger
	started time.Time

	sent      atomic.Uint64
	delivered atomic.Uint64
	rtt       [NumBuckets]atomic.Uint64
	delivery  [NumBuckets]atomic.Uint64

	mu    sync.Mutex
	rooms map[string]uint64 // sends per room since the last report
}

// NewCollector returns a Collector; its counters start now.
func NewCollector(cfg CollectorConfig) *Collector {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	// Aggregators refuse reports that claim an interval out of this range.
	cfg.Interval = min(max(cfg.Interval, minInterval), maxInterval)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Collector{cfg: cfg, log: log, started: cfg.Now(), rooms: make(map[string]uint64)}
}

// Sent counts a message accepted from a client of this gateway into room.
func (c *Collector) Sent(room string) {
	c.sent.Add(1)
	c.mu.Lock()
	if _, ok := c.rooms[room]; ok || len(c.rooms) < maxRoomsTracked {
		c.rooms[room]++
	}
	c.mu.Unlock()
}

// Delivered counts n chat messages written to clients of this gateway.
func (c *Collector) Delivered(n int) {
	if n > 0 {
		c.delivered.Add(uint64(n))
	}
}

// Latency takes a client's report, in milliseconds: round trips from a send
// to the sender's own message, and delivery times from a message's server
// timestamp to the screen. Negative and NaN values are ignored.
func (c *Collector) Latency(rtt, delivery []float64) {
	observe(&c.rtt, rtt)
	observe(&c.delivery, delivery)
}

func observe(h *[NumBuckets]atomic.Uint64, values []float64) {
	for _, v := range values {
		if v >= 0 && !math.IsInf(v, 1) { // false for NaN too
			h[bucketOf(v)].Add(1)
		}
	}
}

// Report builds the report of the interval that ends now, and starts the
// next interval: histograms and room counts begin again from zero.
func (c *Collector) Report() Report {
	r := Report{
		Type:       BodyType,
		Gateway:    c.cfg.Gateway,
		Time:       c.cfg.Now().UTC(),
		Started:    c.started.UTC(),
		IntervalMS: c.cfg.Interval.Milliseconds(),
		Sent:       c.sent.Load(),
		Delivered:  c.delivered.Load(),
		RTT:        drain(&c.rtt),
		Delivery:   drain(&c.delivery),
	}
	if c.cfg.Connections != nil {
		r.Connections = c.cfg.Connections()
	}
	if c.cfg.Rooms != nil {
		r.LocalRooms = c.cfg.Rooms()
	}
	c.mu.Lock()
	rooms := c.rooms
	c.rooms = make(map[string]uint64, len(rooms))
	c.mu.Unlock()
	r.Busiest = top(rooms, TopRooms)
	return r
}

func drain(h *[NumBuckets]atomic.Uint64) []uint64 {
	out := make([]uint64, NumBuckets)
	for i := range h {
		out[i] = h[i].Swap(0)
	}
	return out
}

// top returns the n rooms with the most sends, most first (ties by name, so
// that every gateway lists them alike).
func top(rooms map[string]uint64, n int) []RoomCount {
	out := make([]RoomCount, 0, len(rooms))
	for room, sends := range rooms {
		out = append(out, RoomCount{Room: room, Sends: sends})
	}
	slices.SortFunc(out, func(a, b RoomCount) int {
		return cmp.Or(cmp.Compare(b.Sends, a.Sends), cmp.Compare(a.Room, b.Room))
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Run publishes a report at once and then every interval until ctx ends. A
// failed publish is logged and its interval's histograms and room counts are
// lost; the cumulative counters lose nothing.
func (c *Collector) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		err := c.publish(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			c.log.Warn("stats: report not published", "err", err)
		case err == nil && failing:
			c.log.Info("stats: reports are published again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Collector) publish(ctx context.Context) error {
	body, err := json.Marshal(c.Report())
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Interval)
	defer cancel()
	if err := c.cfg.Publish(ctx, body); err != nil {
		return fmt.Errorf("publish report: %w", err)
	}
	return nil
}
