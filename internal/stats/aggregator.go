package stats

import (
	"cmp"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
)

// AggregatorConfig configures an Aggregator. The zero value of each field
// means its default.
type AggregatorConfig struct {
	// Gateway is the id of the gateway serving the snapshots, shown in them
	// as served_by.
	Gateway string
	// Interval is the reporting interval the rate history is kept at, and
	// the one assumed for staleness when a report does not say its own.
	// Zero means DefaultInterval (5s).
	Interval time.Duration
	// Window is how much rate history is kept. Zero means 5 minutes.
	Window time.Duration
	// StaleAfter is how many of its own intervals a gateway may stay silent
	// before it is dropped from the snapshot. Zero means 3.
	StaleAfter int
	// Recent is the span of the steadier latency quantiles (rtt_recent,
	// delivery_recent): one interval of a quiet cluster may hold no samples
	// at all. Zero means 1 minute.
	Recent time.Duration
	// Logger is told about bodies that are ignored. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// maxGateways bounds the gateways an aggregator tracks, so that a flood of
// forged reports under made-up ids cannot grow it without end.
const maxGateways = 1000

// maxSlots bounds the rate history however small the interval.
const maxSlots = 3600

// Aggregator keeps the latest report of every gateway of the cluster and the
// cluster's recent message rates, and answers GET /api/stats. Create it with
// NewAggregator and hand it every broker body (HandleBody).
type Aggregator struct {
	cfg  AggregatorConfig
	log  *slog.Logger
	step time.Duration

	mu       sync.Mutex
	gateways map[string]*gatewayState
	// slots is the rate history, a ring of one slot per step: the messages
	// sent and delivered in the cluster during that step, spread from
	// counter deltas over the time between two reports.
	slots []slot
	// first is the first slot with data: before it the history is unknown,
	// not zero.
	first   int64
	hasData bool
	ignored int
}

type slot struct {
	num             int64 // absolute step number; a mismatch means an empty slot
	sent, delivered float64
}

// gatewayState is what the aggregator knows of one gateway. Times are on the
// aggregator's clock, so gateways' clocks never need to agree.
type gatewayState struct {
	last     Report
	recv     time.Time // when last arrived
	interval time.Duration
	// sentRate and deliveredRate are per second over the last two reports;
	// hasRate is false until there were two.
	sentRate, deliveredRate float64
	hasRate                 bool
	// recent are the latency histograms of the reports of the last Recent.
	recent []histograms
}

type histograms struct {
	at            time.Time
	rtt, delivery []uint64
}

// NewAggregator returns an empty Aggregator.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Window <= 0 {
		cfg.Window = 5 * time.Minute
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 3
	}
	if cfg.Recent <= 0 {
		cfg.Recent = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	n := int(min(maxSlots, max(2, cfg.Window/cfg.Interval)))
	return &Aggregator{
		cfg:      cfg,
		log:      log,
		step:     cfg.Interval,
		gateways: make(map[string]*gatewayState),
		slots:    make([]slot, n),
	}
}

// HandleBody takes one broker body of type typ (hub.Config.OnBody). Reports
// are validated; anything else is ignored. It never blocks.
func (a *Aggregator) HandleBody(typ string, body []byte) {
	if typ != BodyType {
		return
	}
	r, err := DecodeReport(body)
	if err != nil {
		a.mu.Lock()
		a.ignored++
		n := a.ignored
		a.mu.Unlock()
		// The first few are worth a look; a flood is not worth a log line each.
		if n <= 3 || n%1000 == 0 {
			a.log.Warn("stats: ignoring invalid report", "err", err, "ignored", n)
		}
		return
	}
	a.add(r)
}

// add takes a valid report.
func (a *Aggregator) add(r Report) {
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pruneLocked(now)
	g := a.gateways[r.Gateway]
	if g == nil {
		if len(a.gateways) >= maxGateways {
			return
		}
		g = &gatewayState{}
		a.gateways[r.Gateway] = g
	} else {
		if !r.Time.After(g.last.Time) && r.Started.Equal(g.last.Started) {
			return // a repeat, or older than what we have
		}
		sent, delivered := r.Sent, r.Delivered
		if r.Started.Equal(g.last.Started) && sent >= g.last.Sent && delivered >= g.last.Delivered {
			sent -= g.last.Sent
			delivered -= g.last.Delivered
		}
		// Otherwise the gateway restarted: its counters began at zero.
		span := now.Sub(g.recv)
		if span <= 0 {
			span = time.Millisecond
		}
		g.sentRate = float64(sent) / span.Seconds()
		g.deliveredRate = float64(delivered) / span.Seconds()
		g.hasRate = true
		a.spreadLocked(g.recv, now, float64(sent), float64(delivered))
	}
	g.last = r
	g.recv = now
	g.interval = time.Duration(r.IntervalMS) * time.Millisecond
	g.recent = append(g.recent, histograms{at: now, rtt: r.RTT, delivery: r.Delivery})
	a.trimRecentLocked(g, now)
}

// trimRecentLocked drops the histograms older than Recent.
func (a *Aggregator) trimRecentLocked(g *gatewayState, now time.Time) {
	i := 0
	for i < len(g.recent) && now.Sub(g.recent[i].at) > a.cfg.Recent {
		i++
	}
	g.recent = g.recent[i:]
}

// spreadLocked adds counts made between from and to to the rate history,
// each slot getting its share of the time.
func (a *Aggregator) spreadLocked(from, to time.Time, sent, delivered float64) {
	span := to.Sub(from)
	if span <= 0 {
		a.slotLocked(a.stepOf(to)).sent += sent
		a.slotLocked(a.stepOf(to)).delivered += delivered
		return
	}
	oldest := to.Add(-time.Duration(len(a.slots)) * a.step)
	lo := from
	if lo.Before(oldest) {
		lo = oldest
	}
	for k := a.stepOf(lo); k <= a.stepOf(to); k++ {
		start := time.Unix(0, k*int64(a.step))
		end := start.Add(a.step)
		if start.Before(lo) {
			start = lo
		}
		if end.After(to) {
			end = to
		}
		if !end.After(start) {
			continue
		}
		share := float64(end.Sub(start)) / float64(span)
		s := a.slotLocked(k)
		s.sent += sent * share
		s.delivered += delivered * share
	}
	if k := a.stepOf(lo); !a.hasData || k < a.first {
		a.first, a.hasData = k, true
	}
}

func (a *Aggregator) stepOf(t time.Time) int64 { return t.UnixNano() / int64(a.step) }

// slotLocked returns the slot of step k, emptied if it held an older step.
func (a *Aggregator) slotLocked(k int64) *slot {
	s := &a.slots[int(k%int64(len(a.slots)))]
	if s.num != k {
		*s = slot{num: k}
	}
	return s
}

// pruneLocked drops the gateways that have been silent too long.
func (a *Aggregator) pruneLocked(now time.Time) {
	for id, g := range a.gateways {
		if now.Sub(g.recv) > time.Duration(a.cfg.StaleAfter)*g.interval {
			delete(a.gateways, id)
		}
	}
}

// Snapshot is the cluster as GET /api/stats shows it.
type Snapshot struct {
	// Time is when the snapshot was taken, on the serving gateway's clock.
	Time     time.Time `json:"time"`
	ServedBy string    `json:"served_by"`
	// RecentMS is the span of the rtt_recent and delivery_recent quantiles.
	RecentMS int64 `json:"recent_ms"`
	// Gateways are the gateways heard from lately, by id.
	Gateways []GatewayRow `json:"gateways"`
	Totals   Totals       `json:"totals"`
	// Busiest are the rooms with the most sends across the cluster over
	// each gateway's last interval, most first.
	Busiest []RoomRate `json:"busiest_rooms"`
	// Rate is the cluster's message rate history.
	Rate Series `json:"rate"`
}

// GatewayRow is one gateway's latest report.
type GatewayRow struct {
	ID string `json:"id"`
	// ReportedAt is the report's time on the gateway's clock; AgeMS is how
	// long ago it arrived here.
	ReportedAt  time.Time `json:"reported_at"`
	AgeMS       int64     `json:"age_ms"`
	Started     time.Time `json:"started"`
	IntervalMS  int64     `json:"interval_ms"`
	Connections int       `json:"connections"`
	LocalRooms  int       `json:"local_rooms"`
	// Sent and Delivered are the gateway's own counters, as it reported
	// them (cumulative since Started).
	Sent      uint64 `json:"sent"`
	Delivered uint64 `json:"delivered"`
	// SentPerSec and DeliveredPerSec are over the gateway's last interval;
	// null until it has reported twice.
	SentPerSec      *float64 `json:"sent_per_sec"`
	DeliveredPerSec *float64 `json:"delivered_per_sec"`
	// RTT and Delivery are what clients reported over the gateway's last
	// interval; RTTRecent and DeliveryRecent over the last RecentMS.
	RTT            Quantiles `json:"rtt"`
	Delivery       Quantiles `json:"delivery"`
	RTTRecent      Quantiles `json:"rtt_recent"`
	DeliveryRecent Quantiles `json:"delivery_recent"`
}

// Totals add up the gateways of a snapshot.
type Totals struct {
	Gateways    int `json:"gateways"`
	Connections int `json:"connections"`
	// LocalRooms adds up each gateway's rooms: a room with members on two
	// gateways counts twice.
	LocalRooms      int     `json:"local_rooms"`
	Sent            uint64  `json:"sent"`
	Delivered       uint64  `json:"delivered"`
	SentPerSec      float64 `json:"sent_per_sec"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	// RTT and Delivery merge every gateway's histogram of its last
	// interval; RTTRecent and DeliveryRecent all of those of the last
	// RecentMS.
	RTT            Quantiles `json:"rtt"`
	Delivery       Quantiles `json:"delivery"`
	RTTRecent      Quantiles `json:"rtt_recent"`
	DeliveryRecent Quantiles `json:"delivery_recent"`
}

// Quantiles summarise a latency histogram, in milliseconds; P50 and P99 are
// null when there were no samples.
type Quantiles struct {
	Count uint64   `json:"count"`
	P50   *float64 `json:"p50_ms"`
	P99   *float64 `json:"p99_ms"`
}

// RoomRate is a busy room.
type RoomRate struct {
	Room      string  `json:"room"`
	Sends     uint64  `json:"sends"`
	PerSecond float64 `json:"per_sec"`
}

// Series is a rate history: one value per step, oldest first, for the steps
// every gateway has reported on. The value at index i covers the step that
// starts at Start + i*StepMS.
type Series struct {
	StepMS          int64     `json:"step_ms"`
	Start           time.Time `json:"start"`
	SentPerSec      []float64 `json:"sent_per_sec"`
	DeliveredPerSec []float64 `json:"delivered_per_sec"`
}

// Snapshot returns the cluster as it is known now.
func (a *Aggregator) Snapshot() Snapshot {
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pruneLocked(now)

	s := Snapshot{
		Time: now.UTC(), ServedBy: a.cfg.Gateway, RecentMS: a.cfg.Recent.Milliseconds(),
		Gateways: []GatewayRow{}, Busiest: []RoomRate{},
	}
	rtt, delivery := make([]uint64, NumBuckets), make([]uint64, NumBuckets)
	rttRecent, deliveryRecent := make([]uint64, NumBuckets), make([]uint64, NumBuckets)
	rooms := make(map[string]*RoomRate)
	complete := now
	for _, g := range a.gateways {
		r := g.last
		row := GatewayRow{
			ID: r.Gateway, ReportedAt: r.Time, AgeMS: now.Sub(g.recv).Milliseconds(), Started: r.Started,
			IntervalMS: r.IntervalMS, Connections: r.Connections, LocalRooms: r.LocalRooms,
			Sent: r.Sent, Delivered: r.Delivered, RTT: quantiles(r.RTT), Delivery: quantiles(r.Delivery),
		}
		a.trimRecentLocked(g, now)
		gRTT, gDelivery := make([]uint64, NumBuckets), make([]uint64, NumBuckets)
		for _, h := range g.recent {
			add(gRTT, h.rtt)
			add(gDelivery, h.delivery)
		}
		add(rttRecent, gRTT)
		add(deliveryRecent, gDelivery)
		row.RTTRecent, row.DeliveryRecent = quantiles(gRTT), quantiles(gDelivery)
		if g.hasRate {
			row.SentPerSec, row.DeliveredPerSec = ptr(round2(g.sentRate)), ptr(round2(g.deliveredRate))
			s.Totals.SentPerSec += g.sentRate
			s.Totals.DeliveredPerSec += g.deliveredRate
		}
		s.Gateways = append(s.Gateways, row)
		s.Totals.Gateways++
		s.Totals.Connections += r.Connections
		s.Totals.LocalRooms += r.LocalRooms
		s.Totals.Sent += r.Sent
		s.Totals.Delivered += r.Delivered
		add(rtt, r.RTT)
		add(delivery, r.Delivery)
		for _, rc := range r.Busiest {
			rr := rooms[rc.Room]
			if rr == nil {
				rr = &RoomRate{Room: rc.Room}
				rooms[rc.Room] = rr
			}
			rr.Sends += rc.Sends
			rr.PerSecond += float64(rc.Sends) / g.interval.Seconds()
		}
		if g.recv.Before(complete) {
			complete = g.recv
		}
	}
	slices.SortFunc(s.Gateways, func(x, y GatewayRow) int { return cmp.Compare(x.ID, y.ID) })
	s.Totals.SentPerSec = round2(s.Totals.SentPerSec)
	s.Totals.DeliveredPerSec = round2(s.Totals.DeliveredPerSec)
	s.Totals.RTT, s.Totals.Delivery = quantiles(rtt), quantiles(delivery)
	s.Totals.RTTRecent, s.Totals.DeliveryRecent = quantiles(rttRecent), quantiles(deliveryRecent)
	for _, rr := range rooms {
		rr.PerSecond = round2(rr.PerSecond)
		s.Busiest = append(s.Busiest, *rr)
	}
	slices.SortFunc(s.Busiest, func(x, y RoomRate) int {
		return cmp.Or(cmp.Compare(y.Sends, x.Sends), cmp.Compare(x.Room, y.Room))
	})
	if len(s.Busiest) > TopRooms {
		s.Busiest = s.Busiest[:TopRooms]
	}
	s.Rate = a.seriesLocked(complete)
	return s
}

// seriesLocked returns the rate history up to the last step that ends
// before complete, the time every gateway has reported up to.
func (a *Aggregator) seriesLocked(complete time.Time) Series {
	out := Series{StepMS: a.step.Milliseconds(), SentPerSec: []float64{}, DeliveredPerSec: []float64{}}
	last := a.stepOf(complete) - 1
	firstK := max(last-int64(len(a.slots))+1, a.first)
	if !a.hasData || last < firstK {
		out.Start = time.Unix(0, (last+1)*int64(a.step)).UTC()
		return out
	}
	out.Start = time.Unix(0, firstK*int64(a.step)).UTC()
	perSec := a.step.Seconds()
	for k := firstK; k <= last; k++ {
		s := a.slots[int(k%int64(len(a.slots)))]
		var sent, delivered float64
		if s.num == k {
			sent, delivered = s.sent, s.delivered
		}
		out.SentPerSec = append(out.SentPerSec, round2(sent/perSec))
		out.DeliveredPerSec = append(out.DeliveredPerSec, round2(delivered/perSec))
	}
	return out
}

// add adds histogram h to sum, bucket by bucket.
func add(sum, h []uint64) {
	for i := range sum {
		sum[i] += h[i]
	}
}

func quantiles(h []uint64) Quantiles {
	var q Quantiles
	for _, n := range h {
		q.Count += n
	}
	if v, ok := Quantile(h, 0.5); ok {
		q.P50 = ptr(round2(v))
	}
	if v, ok := Quantile(h, 0.99); ok {
		q.P99 = ptr(round2(v))
	}
	return q
}

func ptr[T any](v T) *T { return &v }

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// Handler serves the snapshot as JSON (GET /api/stats).
func (a *Aggregator) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := json.Marshal(a.Snapshot())
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		_, _ = w.Write(append(body, '\n'))
	})
}
