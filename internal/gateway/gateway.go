// Package gateway is Parley's HTTP face: the WebSocket endpoint where clients
// chat, the browser client, health and readiness, and metrics.
//
// A Gateway holds its connections and nothing else that must outlive it: the
// store is the record of every room, and the broker carries messages between
// gateways, so any client may reconnect to any gateway and resume.
//
// Lifecycle: New, then Handler served by an http.Server and Run for the
// background work; on shutdown, Drain before http.Server.Shutdown, because
// Shutdown neither closes nor waits for hijacked (WebSocket) connections.
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleychat/parley/internal/auth"
	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/poller"
	"github.com/parleychat/parley/internal/presence"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

// Broker is what the gateway needs of the broker: publishing, and whether it
// works. (Consuming is wired to the hub by the caller.)
type Broker interface {
	Publish(ctx context.Context, body []byte, id string) error
	Ready() error
}

// Authenticator decides who a WebSocket handshake speaks for. An error that
// is an *auth.Error carries the HTTP status to refuse with; any other error
// is answered with 401.
type Authenticator interface {
	Authenticate(r *http.Request) (auth.Identity, error)
}

// Refresher is what an Authenticator may also do: verify a token sent in a
// refresh frame for a session that is already open.
type Refresher interface {
	Refresh(ctx context.Context, cur auth.Identity, token string) (auth.Identity, error)
}

// StatsRecorder is told what the cluster statistics count (see
// internal/stats). Its methods are called on the hot path and must be cheap
// and safe for concurrent use.
type StatsRecorder interface {
	// Sent counts a message accepted from a client of this gateway.
	Sent(room string)
	// Latency takes a client's report: send-to-own-message round trips and
	// server-to-screen delivery times, in milliseconds.
	Latency(rtt, delivery []float64)
	// Delivered counts chat messages written to clients of this gateway.
	Delivered(n int)
}

// Deps are the parts a Gateway is built from. All are required but Stats.
type Deps struct {
	Logger   *slog.Logger
	Hub      *hub.Hub
	Store    store.Store
	Broker   Broker
	Auth     Authenticator
	Web      fs.FS // the browser client, served at /
	Registry *prometheus.Registry
	Stats    StatsRecorder // nil: nothing is counted for the cluster
	// StatsAPI serves GET /api/stats (the cluster statistics); nil: 404.
	StatsAPI http.Handler
	// Presence keeps who is online in each room; nil: no presence frames.
	Presence presence.Store
}

// Options tune a Gateway; internal/config documents each, and the zero
// value of a field means its default (see withDefaults).
type Options struct {
	ID             string
	AllowedOrigins []string
	// TrustedProxies are the networks whose X-Forwarded-For is believed
	// (the load balancers in front). Empty: none, RemoteAddr is the client.
	TrustedProxies []netip.Prefix
	// MaxConnsPerIP and MaxConnsPerUser cap this gateway's connections
	// from one client address and for one user.
	MaxConnsPerIP   int
	MaxConnsPerUser int
	// HandshakeTimeout is how long a new connection may take to join its
	// first room.
	HandshakeTimeout time.Duration
	// TokenGrace is how long a session whose token expired has to send a
	// refresh before it is closed: long enough for a client to fetch a new
	// token from its backend.
	TokenGrace time.Duration
	// PresenceListMax is the largest room whose member list is sent;
	// larger rooms get the count alone.
	PresenceListMax int
	// PresenceGrace is how long a dropped connection stays present, so that
	// a quick reconnect shows no leave and join.
	PresenceGrace time.Duration
	// PresenceInterval is how often the presence of local rooms is polled:
	// the most presence frames a room's members get.
	PresenceInterval time.Duration
	// APIKey enables POST /api/rooms/{room}/messages for backends that
	// present it; empty disables the endpoint.
	APIKey          string
	MaxFrameBytes   int64
	Limits          protocol.Limits
	SendQueueBytes  int
	SendRate        float64
	SendBurst       int
	MaxRoomsPerConn int
	JoinHistory     int
	PingInterval    time.Duration
	PongTimeout     time.Duration
	WriteTimeout    time.Duration
	// WriteDelay is how long a flusher waits, once woken, before it
	// writes, so that the messages arriving meanwhile go out together: each
	// client's in one write. 0, the default, writes at once.
	WriteDelay time.Duration
	// NoBatchWrites makes the flushers write socket by socket. By default
	// they write many sockets with one system call (io_uring) where the
	// kernel allows it, and socket by socket where it refuses.
	NoBatchWrites bool
	// SendTimeout bounds storing one message.
	SendTimeout time.Duration
	// PublishTimeout bounds waiting for the broker's confirm of a stored
	// message before it is acked anyway and left to the republisher.
	PublishTimeout time.Duration
	// StoreTimeout bounds one history read.
	StoreTimeout time.Duration
	// DrainBatch connections are closed at a time on shutdown, DrainPause
	// apart, so that reconnecting clients do not arrive at the remaining
	// gateways all at once.
	DrainBatch int
	DrainPause time.Duration
}

func (o Options) withDefaults() Options {
	set := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.ID == "" {
		o.ID = "gateway"
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = 16 << 10
	}
	if o.SendRate <= 0 {
		o.SendRate = 10
	}
	setInt(&o.SendQueueBytes, 1<<20)
	setInt(&o.SendBurst, 20)
	setInt(&o.MaxRoomsPerConn, 50)
	setInt(&o.JoinHistory, 50)
	setInt(&o.DrainBatch, 100)
	setInt(&o.MaxConnsPerIP, 500)
	setInt(&o.MaxConnsPerUser, 20)
	set(&o.HandshakeTimeout, 10*time.Second)
	set(&o.TokenGrace, 30*time.Second)
	setInt(&o.PresenceListMax, 100)
	set(&o.PresenceGrace, 10*time.Second)
	set(&o.PresenceInterval, time.Second)
	set(&o.PingInterval, 25*time.Second)
	set(&o.PongTimeout, 15*time.Second)
	set(&o.WriteTimeout, 10*time.Second)
	set(&o.SendTimeout, 5*time.Second)
	set(&o.PublishTimeout, 2*time.Second)
	set(&o.StoreTimeout, 5*time.Second)
	set(&o.DrainPause, 50*time.Millisecond)
	return o
}

// Gateway serves clients. Create it with New.
type Gateway struct {
	opts     Options
	log      *slog.Logger
	hub      *hub.Hub
	store    store.Store
	broker   Broker
	auth     Authenticator
	web      fs.FS
	reg      *prometheus.Registry
	metrics  *metrics
	stats    StatsRecorder
	statsAPI http.Handler
	presence *presenceTracker // nil without a presence store

	// ctx is the parent of every connection's work. It is not a request's
	// context: after a WebSocket upgrade the request context is unreliable
	// (see websocket.Accept), and connections must outlive the handshake.
	ctx    context.Context
	cancel context.CancelFunc

	draining atomic.Bool
	// degraded is true while the broker cannot be relied on (see
	// watchBroker).
	degraded    atomic.Bool
	unannounced chan unannounced
	// storeHealth says whether the store answers its pings (see
	// watchStore); store work then fails at once instead of each request
	// waiting out the store's timeouts one after another.
	storeHealth *storeHealth

	mu      sync.Mutex
	conns   map[*conn]int // -> ping bucket
	perIP   map[netip.Addr]int
	perUser map[string]int
	buckets []map[*conn]struct{}
	next    int
	// handlers counts serving connections; pings counts ping goroutines.
	handlers sync.WaitGroup
	pings    sync.WaitGroup

	// poller watches parked connections (see conn.park); nil where there
	// is none, and then connections do not park. It exists from New on, so
	// that connections served before Run gets going park too (their
	// callbacks wait for Run).
	poller *poller.Poller
	// flushers write parked connections' queues, one per processor, each
	// connection always to the same; Run runs them.
	flushers    []*flusher
	nextFlusher atomic.Uint64

	// accepted counts the connections registered so far, for
	// releaseAfterStorms.
	accepted atomic.Int64

	// batchBufs holds the buffers in which socketWriters gather messages,
	// so that no connection keeps one while it has nothing to write.
	batchBufs sync.Pool
}

// New returns a Gateway built from deps.
func New(deps Deps, opts Options) *Gateway {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	// One ping bucket per second of the interval: each second one bucket is
	// pinged, so pings are spread evenly instead of arriving all at once.
	nb := max(1, int(opts.PingInterval/time.Second))
	g := &Gateway{
		opts:        opts,
		log:         deps.Logger,
		hub:         deps.Hub,
		store:       deps.Store,
		broker:      deps.Broker,
		auth:        deps.Auth,
		web:         deps.Web,
		reg:         deps.Registry,
		metrics:     newMetrics(deps.Registry),
		stats:       deps.Stats,
		statsAPI:    deps.StatsAPI,
		storeHealth: newStoreHealth(),
		ctx:         ctx,
		cancel:      cancel,
		conns:       make(map[*conn]int),
		perIP:       make(map[netip.Addr]int),
		perUser:     make(map[string]int),
		buckets:     make([]map[*conn]struct{}, nb),

		unannounced: make(chan unannounced, republishQueue),
		batchBufs:   sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
	for i := range g.buckets {
		g.buckets[i] = make(map[*conn]struct{})
	}
	for range runtime.GOMAXPROCS(0) {
		g.flushers = append(g.flushers, newFlusher(opts.WriteDelay, g.log, g.metrics.batchedWrites))
	}
	if deps.Presence != nil {
		g.presence = newPresenceTracker(g, deps.Presence)
	}
	if p, err := poller.New(); err != nil {
		g.log.Info("idle connections keep a reading goroutine", "err", err)
	} else {
		g.poller = p
	}
	g.registerGauges(deps.Registry)
	return g
}

func (g *Gateway) register(c *conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining.Load() {
		return false
	}
	b := g.next % len(g.buckets)
	g.next++
	g.accepted.Add(1)
	g.conns[c] = b
	g.buckets[b][c] = struct{}{}
	g.handlers.Add(1)
	g.metrics.connections.Inc()
	return true
}

func (g *Gateway) unregister(c *conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.conns[c]; ok {
		delete(g.conns, c)
		delete(g.buckets[b], c)
		g.handlers.Done()
		g.metrics.connections.Dec()
	}
}

// writeBatches returns a poller.Batch for each flusher, or nils with
// NoBatchWrites or when the kernel refuses io_uring (as Docker's default
// seccomp profile makes it do).
func (g *Gateway) writeBatches() []*poller.Batch {
	batches := make([]*poller.Batch, len(g.flushers))
	if g.opts.NoBatchWrites {
		return batches
	}
	for i := range batches {
		b, err := poller.NewBatch(yieldEvery)
		if err != nil {
			g.log.Info("flushers write socket by socket", "err", err)
			for _, b := range batches[:i] {
				b.Close()
			}
			return make([]*poller.Batch, len(g.flushers))
		}
		batches[i] = b
	}
	return batches
}

// Connections returns how many clients are connected.
func (g *Gateway) Connections() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Run does the gateway's background work until ctx ends: it pings clients,
// publishes again what could not be published, and tells clients when the
// broker is degraded. It returns once all of that has stopped.
func (g *Gateway) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if g.poller != nil {
		wg.Go(func() { g.poller.Run(ctx) })
	}
	wg.Go(func() { g.republish(ctx) })
	wg.Go(func() { g.watchBroker(ctx) })
	wg.Go(func() { g.watchStore(ctx) })
	wg.Go(func() { g.releaseAfterStorms(ctx) })
	if g.presence != nil {
		wg.Go(func() { g.presence.run(ctx) })
	}
	batches := g.writeBatches()
	for i, f := range g.flushers {
		wg.Go(func() { f.run(ctx, batches[i]) })
	}
	g.pingLoop(ctx)
	wg.Wait()
}

// pingLoop pings clients until ctx ends, so that dead peers are found and
// proxies in front see traffic before their idle timeouts. It returns once
// every ping it started has ended.
func (g *Gateway) pingLoop(ctx context.Context) {
	step := g.opts.PingInterval / time.Duration(len(g.buckets))
	t := time.NewTicker(step)
	defer t.Stop()
	defer g.pings.Wait()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		g.mu.Lock()
		for c := range g.buckets[i%len(g.buckets)] {
			if slow := c.ping(now); slow != nil {
				g.pings.Go(slow)
			}
		}
		stuck := g.stuckWritersLocked(now)
		var unresponsive []*conn
		for c := range g.conns {
			if c.tick(now, g.opts.PongTimeout) {
				unresponsive = append(unresponsive, c)
			}
		}
		g.mu.Unlock()
		for _, c := range stuck {
			g.log.Info("closing client whose write is stuck", "user", c.userID, "timeout", g.opts.WriteTimeout)
			g.metrics.deadClosed.Inc()
			// The failed write aborts the connection (see writeLoop).
			_ = c.ws.CloseNow()
		}
		for _, c := range unresponsive {
			g.log.Info("closing unresponsive client", "user", c.userID, "pong_timeout", g.opts.PongTimeout)
			g.metrics.deadClosed.Inc()
			c.abort()
		}
	}
}

// stuckWritersLocked returns the connections whose write has taken longer
// than WriteTimeout: peers that stopped reading with the socket's buffers
// full. The ping loop cuts them off on every tick, so a write is bounded by
// WriteTimeout plus a tick.
func (g *Gateway) stuckWritersLocked(now time.Time) []*conn {
	limit := now.Add(-g.opts.WriteTimeout).UnixNano()
	var stuck []*conn
	for c := range g.conns {
		if start := c.writeStart.Load(); start != 0 && start < limit {
			stuck = append(stuck, c)
		}
	}
	return stuck
}

// Drain takes the gateway out of service: readiness fails, new WebSockets are
// refused, and every client is closed with 1012 (service restart: reconnect
// now, elsewhere), a batch at a time. It waits for the connections to finish
// what they were doing (a send being stored and published is acked first)
// until ctx ends, then cuts the rest off.
func (g *Gateway) Drain(ctx context.Context) error {
	g.mu.Lock()
	g.draining.Store(true)
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	g.log.Info("draining", "connections", len(conns))

	defer g.cancel()
	for i, c := range conns {
		if i > 0 && i%g.opts.DrainBatch == 0 {
			t := time.NewTimer(g.opts.DrainPause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		c.drain()
	}

	done := make(chan struct{})
	go func() {
		g.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		left := len(g.conns)
		cut := make([]*conn, 0, len(g.conns))
		for c := range g.conns {
			cut = append(cut, c)
		}
		g.mu.Unlock()
		for _, c := range cut {
			c.abort()
		}
		g.cancel()
		<-done
		return fmt.Errorf("drain: %d connections still open at the deadline: %w", left, ctx.Err())
	}
}

// post stores m, publishes it and returns the ack for its sender. Only a
// failed store fails the send: the store is the record, so a stored message
// is the sender's even when the broker cannot take it right now. It is then
// queued for publishing again, and meanwhile every gateway finds it in the
// store (see hub.Config.BrokerReady and hub.Nudge).
//
// A repeat of an earlier message (same user and client_msg_id) is published
// again, since the first attempt may have failed between store and broker;
// members drop the repeat by its seq.
func (g *Gateway) post(ctx context.Context, m protocol.Message) (protocol.Ack, error) {
	sctx, done, err := g.storeHealth.work(ctx, g.opts.SendTimeout)
	if err != nil {
		return protocol.Ack{}, err
	}
	stored, _, err := g.store.Append(sctx, m)
	if err = done(err); err != nil {
		g.storeFailed("append", err)
		return protocol.Ack{}, fmt.Errorf("store message: %w", err)
	}
	body := protocol.EncodeMessage(stored)
	start := time.Now()
	// A stored message is acked whether or not the broker takes it, so a
	// publish that cannot be confirmed soon is left to the republisher
	// rather than holding up the sender.
	pctx, cancel := context.WithTimeout(ctx, g.opts.PublishTimeout)
	defer cancel()
	if err := g.broker.Publish(pctx, body, stored.ID); err != nil {
		g.metrics.publishDeferred.Inc()
		g.hub.Nudge(stored.Room)
		select {
		case g.unannounced <- unannounced{body: body, id: stored.ID}:
			g.log.Warn("publish failed; the message is stored and will be published again", "id", stored.ID, "err", err)
		default:
			g.log.Warn("publish failed and the republish queue is full; gateways will find the message in the store",
				"id", stored.ID, "err", err)
		}
	} else {
		g.metrics.confirmSeconds.Observe(time.Since(start).Seconds())
	}
	return protocol.Ack{ClientMsgID: stored.ClientMsgID, Room: stored.Room, Seq: stored.Seq, ID: stored.ID}, nil
}

// unannounced is a stored message whose publish failed.
type unannounced struct {
	body []byte
	id   string
}

// republishQueue bounds the stored messages waiting to be published again.
// Past it a message is only in the store, where the hubs of other gateways
// still find it: when their own broker link is impaired they poll, and
// otherwise the next message of the room shows them the hole.
const republishQueue = 10_000

// republish publishes again, in order, the messages post stored but could not
// publish, backing off while the broker is away, until ctx ends.
func (g *Gateway) republish(ctx context.Context) {
	for {
		var u unannounced
		select {
		case <-ctx.Done():
			return
		case u = <-g.unannounced:
		}
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, g.opts.SendTimeout)
			err := g.broker.Publish(pctx, u.body, u.id)
			cancel()
			if err == nil {
				break
			}
			// Full jitter below a ceiling that doubles up to 2s.
			ceiling := min(2*time.Second, 50*time.Millisecond<<min(attempt, 10))
			t := time.NewTimer(rand.N(ceiling))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// storeFailed counts a failed store operation and marks the store down when
// err says it did not answer in time, so that the requests queued behind
// this one fail at once; the next successful ping (watchStore) clears it.
// Work refused because the store was already down is not counted again.
func (g *Gateway) storeFailed(op string, err error) {
	if errors.Is(err, errStoreDown) {
		return
	}
	g.metrics.storeErrors.WithLabelValues(op).Inc()
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		if g.storeHealth.set(true) {
			g.log.Warn("store not answering; failing store work at once until it does", "err", err)
		}
	}
}

// storePing is how often, and within what time, watchStore pings the store.
const (
	storePingEvery   = 250 * time.Millisecond
	storePingTimeout = 500 * time.Millisecond
)

// watchStore pings the store and keeps storeHealth up to date.
func (g *Gateway) watchStore(ctx context.Context) {
	t := time.NewTicker(storePingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, storePingTimeout)
		err := g.store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		down := err != nil
		if g.storeHealth.set(down) {
			g.log.Info("store state changed", "down", down, "err", err)
		}
	}
}

// watchBroker tells every client when the broker becomes unusable or usable
// again, so that people see the chat is degraded (messages come through the
// store, a little later) rather than wonder.
func (g *Gateway) watchBroker(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		degraded := g.broker.Ready() != nil
		if degraded == g.degraded.Load() {
			continue
		}
		g.degraded.Store(degraded)
		if degraded {
			g.metrics.brokerDegraded.Set(1)
		} else {
			g.metrics.brokerDegraded.Set(0)
			g.metrics.brokerRecovered.Inc()
		}
		g.log.Info("broker state changed", "degraded", degraded)
		frame := g.statusFrame()
		g.mu.Lock()
		for c := range g.conns {
			c.send(frame)
		}
		g.mu.Unlock()
	}
}

func (g *Gateway) statusFrame() []byte {
	return protocol.Encode(protocol.TypeStatus, protocol.Status{Degraded: g.degraded.Load()})
}
