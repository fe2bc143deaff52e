// Package stats gives operators a live view of the whole cluster from any
// gateway: every gateway counts what it does (Collector), reports it every
// few seconds through the broker, and every gateway keeps the latest report
// of each (Aggregator), which GET /api/stats and the /stats page show.
//
// Reports go through the broker like chat messages, so no gateway needs to
// know the others' addresses, and a gateway that dies simply stops reporting:
// it is dropped after three intervals of silence.
//
// Counters in a report are cumulative since the gateway started (so a lost
// report loses nothing, and /api/stats can be checked against each gateway's
// own /metrics); latency histograms and the busiest rooms cover the interval
// since the gateway's previous report. Histograms have fixed bucket bounds
// (LatencyBounds), so that those of all gateways can be added up.
//
// Concurrency: Collector methods are safe for concurrent use and cheap enough
// for the hot path; Aggregator methods are safe for concurrent use, and
// HandleBody never blocks beyond a short critical section.
package stats

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/parleychat/parley/internal/protocol"
)

// BodyType is the "type" of a report on the broker.
const BodyType = "stats"

// DefaultInterval is how often a gateway reports unless configured otherwise.
const DefaultInterval = 5 * time.Second

// TopRooms is how many of the busiest rooms a report and a snapshot list.
const TopRooms = 10

// latencyBounds are the upper bounds, in milliseconds, of the latency
// histogram buckets; a last bucket counts everything above the last bound.
// They are fixed, and part of the report format: histograms from different
// gateways merge by adding their counts bucket by bucket.
var latencyBounds = [...]float64{
	1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
	1000, 1500, 2000, 3000, 5000, 10000, 30000,
}

// NumBuckets is the length of every histogram in a report: one bucket per
// bound and one for everything above the last.
const NumBuckets = len(latencyBounds) + 1

// LatencyBounds returns a copy of the histogram bucket bounds, in
// milliseconds.
func LatencyBounds() []float64 { return slices.Clone(latencyBounds[:]) }

// bucketOf returns the histogram bucket of a value in milliseconds: the
// first whose bound is at least ms.
func bucketOf(ms float64) int {
	i, _ := slices.BinarySearch(latencyBounds[:], ms)
	return i
}

// Report is what one gateway tells the cluster every interval. It travels
// as the JSON body of a broker message with "type":"stats".
//
// Its field names must not collide with those of a chat message (room, seq,
// ts, ...): the hub decodes every broker body as a message first, and a
// field of the wrong type there would make it drop the body.
type Report struct {
	Type    string `json:"type"`
	Gateway string `json:"gateway"`
	// Time is when the report was made, on the gateway's clock.
	Time time.Time `json:"time"`
	// Started is when the gateway's counters started; a new value means the
	// gateway restarted and its counters began again from zero.
	Started time.Time `json:"started"`
	// IntervalMS is how often this gateway reports.
	IntervalMS  int64 `json:"interval_ms"`
	Connections int   `json:"connections"`
	// LocalRooms counts the rooms with members on this gateway.
	LocalRooms int `json:"local_rooms"`
	// Sent counts messages accepted from this gateway's clients, and
	// Delivered messages written to its clients, since Started.
	Sent      uint64 `json:"sent"`
	Delivered uint64 `json:"delivered"`
	// RTT and Delivery are histograms (NumBuckets counts, see
	// LatencyBounds) of what clients reported since the previous report.
	RTT      []uint64 `json:"rtt"`
	Delivery []uint64 `json:"delivery"`
	// Busiest are the rooms with the most sends since the previous report,
	// most first, at most TopRooms.
	Busiest []RoomCount `json:"busiest,omitempty"`
}

// RoomCount is a room and how many messages were sent to it.
type RoomCount struct {
	Room  string `json:"room"`
	Sends uint64 `json:"sends"`
}

// Limits on a report, which may come from anything that can publish to the
// broker: a body past them is ignored.
const (
	maxBodyBytes    = 64 << 10
	maxGatewayIDLen = 128
	maxCount        = 1 << 53 // beyond this a float64 loses counts
	minInterval     = 10 * time.Millisecond
	maxInterval     = 10 * time.Minute
)

// DecodeReport decodes and checks a report body. Everything a snapshot
// relies on is checked, since any service that can publish to the exchange
// can send one.
func DecodeReport(body []byte) (Report, error) {
	if len(body) > maxBodyBytes {
		return Report{}, fmt.Errorf("decode report: %d bytes is too large", len(body))
	}
	var r Report
	if err := json.Unmarshal(body, &r); err != nil {
		return Report{}, fmt.Errorf("decode report: %w", err)
	}
	if err := r.validate(); err != nil {
		return Report{}, fmt.Errorf("decode report: %w", err)
	}
	return r, nil
}

func (r *Report) validate() error {
	switch {
	case r.Type != BodyType:
		return fmt.Errorf("type is %q", truncate(r.Type, 16))
	case !validGatewayID(r.Gateway):
		return errors.New("invalid gateway id")
	case r.Time.IsZero() || r.Started.IsZero():
		return errors.New("time and started are required")
	case r.IntervalMS < minInterval.Milliseconds() || r.IntervalMS > maxInterval.Milliseconds():
		return fmt.Errorf("interval_ms %d is out of range", r.IntervalMS)
	case r.Connections < 0 || r.Connections > maxCount || r.LocalRooms < 0 || r.LocalRooms > maxCount:
		return errors.New("connections and local_rooms must be non-negative")
	case r.Sent > maxCount || r.Delivered > maxCount:
		return errors.New("counter out of range")
	case len(r.RTT) != NumBuckets || len(r.Delivery) != NumBuckets:
		return fmt.Errorf("histograms must have %d buckets", NumBuckets)
	case len(r.Busiest) > TopRooms:
		return fmt.Errorf("at most %d busiest rooms", TopRooms)
	}
	for _, h := range [][]uint64{r.RTT, r.Delivery} {
		var sum uint64
		for _, n := range h {
			sum += n
			if n > maxCount || sum > maxCount {
				return errors.New("histogram count out of range")
			}
		}
	}
	seen := make(map[string]bool, len(r.Busiest))
	for _, rc := range r.Busiest {
		if !protocol.ValidRoom(rc.Room) || seen[rc.Room] || rc.Sends > maxCount {
			return errors.New("invalid busiest room")
		}
		seen[rc.Room] = true
	}
	return nil
}

// validGatewayID accepts what a person could name a gateway: printable,
// valid UTF-8, no control characters.
func validGatewayID(id string) bool {
	if id == "" || len(id) > maxGatewayIDLen || !utf8.ValidString(id) {
		return false
	}
	for _, c := range id {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Quantile returns the q-quantile (0 < q < 1) of a histogram over
// LatencyBounds, interpolating linearly inside the bucket it falls in, and
// false when the histogram is empty. Values in the last, unbounded bucket
// are taken to be at the last bound.
func Quantile(h []uint64, q float64) (float64, bool) {
	var total uint64
	for _, n := range h {
		total += n
	}
	if total == 0 || len(h) != NumBuckets {
		return 0, false
	}
	rank := q * float64(total)
	var cum float64
	for i, n := range h {
		if n == 0 {
			continue
		}
		next := cum + float64(n)
		if rank <= next || i == len(h)-1 {
			if i == len(latencyBounds) {
				return latencyBounds[i-1], true
			}
			lo := 0.0
			if i > 0 {
				lo = latencyBounds[i-1]
			}
			hi := latencyBounds[i]
			frac := (rank - cum) / float64(n)
			return lo + (hi-lo)*math.Max(0, math.Min(1, frac)), true
		}
		cum = next
	}
	return latencyBounds[len(latencyBounds)-1], true
}
