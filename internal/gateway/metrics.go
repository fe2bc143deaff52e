package gateway

import "github.com/prometheus/client_golang/prometheus"

// metrics are the gateway's Prometheus collectors. They are registered on
// the registry the gateway is given, never on a global one, so that two
// gateways can live in one test process.
type metrics struct {
	connections prometheus.Gauge
	joins       prometheus.Counter
	framesIn    prometheus.Counter
	framesOut   prometheus.Counter
	messagesOut prometheus.Counter
	sends       prometheus.Counter
	sendSeconds prometheus.Histogram
	// confirmSeconds is the publish-to-confirm part of sendSeconds.
	confirmSeconds  prometheus.Histogram
	publishDeferred prometheus.Counter
	errors          *prometheus.CounterVec
	slowClosed      prometheus.Counter
	deadClosed      prometheus.Counter
	abuseClosed     prometheus.Counter
	backpressure    *prometheus.CounterVec
	presenceFrames  prometheus.Counter
	storeErrors     *prometheus.CounterVec
	brokerDegraded  prometheus.Gauge
	brokerRecovered prometheus.Counter
	pingRTT         prometheus.Histogram
	// clientRTT and clientDelivery are what clients report they see.
	clientRTT      prometheus.Histogram
	clientDelivery prometheus.Histogram
	// memoryReleases counts connection storms whose memory was returned
	// to the system (see releaseAfterStorms).
	memoryReleases prometheus.Counter
	// batchedWrites counts the flushers' socket writes made through io_uring.
	batchedWrites prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_connections", Help: "Open WebSocket connections.",
		}),
		joins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_joins_total", Help: "Rooms joined.",
		}),
		framesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_frames_in_total", Help: "WebSocket messages received from clients.",
		}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_frames_out_total", Help: "WebSocket messages written to clients (each may carry several frames).",
		}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_objects_out_total", Help: "Protocol frames written to clients.",
		}),
		sends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_sends_total", Help: "Chat messages accepted for storing and publishing.",
		}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_send_seconds", Help: "Time from a send to its ack: store append plus publisher confirm.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		confirmSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_publish_confirm_seconds", Help: "Time from publishing a message to the broker's confirm.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		publishDeferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_publish_deferred_total",
			Help: "Stored messages whose publish failed and that were queued to be published again.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_errors_total", Help: "Error frames sent to clients, by code.",
		}, []string{"code"}),
		batchedWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_batched_writes_total",
			Help: "Socket writes made in batches, many to one system call (io_uring); stays 0 where the kernel refuses io_uring or PARLEY_BATCH_WRITES is false.",
		}),
		memoryReleases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_memory_releases_total", Help: "Times the gateway returned a connection storm's memory to the system once the storm was over.",
		}),
		slowClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_slow_clients_closed_total", Help: "Clients closed with 1013 because their send queue was full.",
		}),
		deadClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_dead_clients_closed_total", Help: "Clients closed because they did not answer a ping.",
		}),
		abuseClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_abusive_clients_closed_total", Help: "Clients closed with 1008 for sending too many bad or rate-limited frames.",
		}),
		backpressure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_backpressure_total",
			Help: "Times a slow client's queue shed load, by tier: drop_ephemeral, gap (messages replaced by a gap frame), disconnect (1013).",
		}, []string{"tier"}),
		presenceFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_presence_updates_total", Help: "Presence frames broadcast to a room's local members (one per changed room per poll).",
		}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_store_errors_total", Help: "Store operations that failed, by op: append, read (history, joins, rooms), presence.",
		}, []string{"op"}),
		brokerDegraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_broker_degraded", Help: "1 while the broker cannot carry messages and rooms are served from the store, else 0.",
		}),
		brokerRecovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_broker_recoveries_total", Help: "Times the broker became usable again after being degraded (reconnects that mattered).",
		}),
		pingRTT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_ping_rtt_seconds", Help: "WebSocket ping round trips.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	m.clientRTT = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "parley_client_rtt_seconds",
		Help:    "Round trips clients report: from a send to their own message coming back.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	m.clientDelivery = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "parley_client_delivery_seconds",
		Help:    "Delivery times clients report: from the server's timestamp to the message on screen, clock offset corrected.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	reg.MustRegister(m.clientRTT, m.clientDelivery)
	reg.MustRegister(m.connections, m.joins, m.framesIn, m.framesOut, m.messagesOut, m.sends, m.sendSeconds,
		m.confirmSeconds, m.publishDeferred, m.errors, m.slowClosed, m.deadClosed, m.abuseClosed, m.backpressure, m.presenceFrames, m.storeErrors, m.brokerDegraded, m.brokerRecovered, m.pingRTT, m.memoryReleases, m.batchedWrites)
	return m
}

// registerGauges registers the metrics read from the gateway's state when
// Prometheus scrapes, rather than kept up to date on the hot path.
func (g *Gateway) registerGauges(reg prometheus.Registerer) {
	queued := func(pick func(sum, max int) int) func() float64 {
		return func() float64 {
			g.mu.Lock()
			defer g.mu.Unlock()
			sum, most := 0, 0
			for c := range g.conns {
				c.mu.Lock()
				n := c.out.bytes
				c.mu.Unlock()
				sum += n
				most = max(most, n)
			}
			return float64(pick(sum, most))
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_send_queue_bytes", Help: "Bytes waiting in all clients' send queues.",
		}, queued(func(sum, _ int) int { return sum })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_send_queue_max_bytes", Help: "Bytes waiting in the fullest client send queue.",
		}, queued(func(_, most int) int { return most })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "parley_fanout_messages_total", Help: "Room messages handed to this gateway's local members.",
		}, func() float64 { n, _ := g.hub.FanOut(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "parley_fanout_pushes_total", Help: "Pushes of room messages to local members; divided by parley_fanout_messages_total, the fan-out.",
		}, func() float64 { _, n := g.hub.FanOut(); return float64(n) }),
	)
}
