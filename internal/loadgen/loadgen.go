// Package loadgen is Parley's load generator: it opens many WebSocket
// clients against one or more gateways, joins them to rooms, has some of
// them publish at a fixed total rate, and measures what the clients see
// (connect time, deliveries, frames, end-to-end latency, losses and
// duplicates) and what the gateways spend (CPU and RSS from /proc).
//
// Every text a publisher sends carries the ramp step, the publisher, a
// sequence number and the time it was sent, so a receiver needs no shared
// state to measure latency. Receivers deduplicate by the room's seq, which
// the store makes contiguous. The client side is kept cheap, since it runs on
// the same cores as the gateways: one reader goroutine per connection,
// reading into a buffer it reuses, and reading only the fields it measures
// (see parse.go).
//
// cmd/parley-bench is the command line; docs/benchmarks.md has the
// workloads, the results and how to run them.
package loadgen

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Config is one load run. The zero value of a field means its default,
// where one is given.
type Config struct {
	// Name labels the run in reports (a workload name such as "W1").
	Name string
	// URLs are the gateways' base URLs (http://host:port), or a single load
	// balancer's; client i connects to URLs[i % len(URLs)].
	URLs []string
	// Clients is how many WebSocket connections to open.
	Clients int
	// Rooms is how many rooms the clients are spread over: client i joins
	// room i % Rooms. Zero means 1.
	Rooms int
	// Publishers is how many of the clients publish: clients 0..P-1, so
	// with several rooms publishers are spread over them too. Zero means an
	// idle run: connect, join, hold for Hold, measure RSS.
	Publishers int
	// Rate is the total messages per second of all publishers; each
	// publishes Rate/Publishers per second on an even schedule.
	Rate float64
	// Duration is how long publishers publish. Zero means 20s.
	Duration time.Duration
	// TextBytes is the size each message text is padded to. Zero means 64.
	TextBytes int

	// DialConcurrency bounds the handshakes in flight. Zero means 100.
	DialConcurrency int
	// DialTimeout bounds one handshake. Zero means 10s.
	DialTimeout time.Duration
	// JoinTimeout bounds the wait for every client's "joined". Zero means
	// 60s.
	JoinTimeout time.Duration
	// Drain bounds the wait, after the last send, for the deliveries and
	// acks still expected. Zero means 10s.
	Drain time.Duration
	// LateAfter is how far behind its schedule a send may go before it
	// counts as late (the generator falling behind). Zero means 5ms.
	LateAfter time.Duration
	// Hold is how long an idle run holds its connections before measuring
	// the gateways' RSS. Zero means 10s.
	Hold time.Duration

	// Ramp, when set, repeats the publish phase on the same connections,
	// multiplying the rate by RampFactor each step, until the p99 latency
	// of a step passes RampP99 or a step loses deliveries (or RampSteps
	// steps ran). Each step lasts Duration.
	Ramp bool
	// RampFactor multiplies the rate from one step to the next. Zero means
	// 1.5.
	RampFactor float64
	// RampSteps bounds the number of steps. Zero means 12.
	RampSteps int
	// RampP99 is the p99 latency past which a step counts as broken. Zero
	// means 100ms.
	RampP99 time.Duration
	// RampMaxOther, when positive, makes a step during which other
	// processes kept more than this many cores busy run again at the same
	// rate (three times at most in a row), so that a shared machine's noise
	// is not taken for the break point.
	RampMaxOther float64

	// RoomPrefix starts every room name, so that runs against the same
	// gateways never share a room. Empty means a random one.
	RoomPrefix string
	// PIDs are the gateway processes whose CPU and RSS are reported.
	PIDs []int
	// InfraPIDs are other server processes (RabbitMQ, Redis) whose CPU is
	// reported beside the gateways'.
	InfraPIDs []int
	// Progress receives a live line every second; nil means none.
	Progress io.Writer
	// OnPublish, if set, is called when the (first) publish phase starts,
	// with its planned duration; the run waits for it to return before
	// computing results. cmd/parley-bench uses it to profile the gateways.
	OnPublish func(d time.Duration) (wait func() error)
}

// maxSteps bounds the ramp: the step number travels in every text and
// indexes per-step counters.
const maxSteps = 32

func (c Config) withDefaults() (Config, error) {
	if len(c.URLs) == 0 {
		return c, fmt.Errorf("no gateway URL")
	}
	if c.Clients <= 0 {
		return c, fmt.Errorf("clients = %d: want at least 1", c.Clients)
	}
	if c.Rooms <= 0 {
		c.Rooms = 1
	}
	if c.Rooms > c.Clients {
		return c, fmt.Errorf("%d rooms for %d clients: every room needs a member", c.Rooms, c.Clients)
	}
	if c.Publishers < 0 || c.Publishers > c.Clients {
		return c, fmt.Errorf("publishers = %d: want 0..%d", c.Publishers, c.Clients)
	}
	if c.Publishers > 0 && c.Rate <= 0 {
		return c, fmt.Errorf("rate = %v: publishers need a positive rate", c.Rate)
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.TextBytes <= 0 {
		c.TextBytes = 64
	}
	if c.DialConcurrency <= 0 {
		c.DialConcurrency = 100
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = 60 * time.Second
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	if c.LateAfter <= 0 {
		c.LateAfter = 5 * time.Millisecond
	}
	if c.Hold <= 0 {
		c.Hold = 10 * time.Second
	}
	if c.RampFactor <= 1 {
		c.RampFactor = 1.5
	}
	if c.RampSteps <= 0 {
		c.RampSteps = 12
	}
	c.RampSteps = min(c.RampSteps, maxSteps)
	if c.RampP99 <= 0 {
		c.RampP99 = 100 * time.Millisecond
	}
	return c, nil
}

// Workload returns the named workload of docs/benchmarks.md (W1, W2, W3,
// W4 or IDLE, in any case) without URLs, or false if there is none of
// that name.
func Workload(name string) (Config, bool) {
	c := Config{Name: strings.ToUpper(name), Duration: 20 * time.Second}
	switch c.Name {
	case "W1": // fan-out: 100 messages/s to 1,000 members = 100k deliveries/s
		c.Clients, c.Rooms, c.Publishers, c.Rate = 1000, 1, 10, 100
	case "W2": // connection scale: 5,000 members of one room
		c.Clients, c.Rooms, c.Publishers, c.Rate = 5000, 1, 5, 20
	case "W3": // publish throughput: 1,000 sends/s into a 200-member room
		c.Clients, c.Rooms, c.Publishers, c.Rate = 200, 1, 20, 1000
	case "W4": // many small rooms: 500 rooms of 10, one publisher each
		c.Clients, c.Rooms, c.Publishers, c.Rate = 5000, 500, 500, 500
	case "IDLE": // memory: 10,000 connections that only listen
		c.Clients, c.Rooms = 10000, 100
	default:
		return Config{}, false
	}
	return c, true
}

// WorkloadNames lists the named workloads.
func WorkloadNames() []string { return []string{"W1", "W2", "W3", "W4", "IDLE"} }
