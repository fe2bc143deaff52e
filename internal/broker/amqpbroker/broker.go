// Package amqpbroker implements broker.Broker on RabbitMQ, for a Parley
// cluster of several gateways.
//
// # Topology
//
// All gateways of a deployment share one durable fanout exchange
// (Config.Exchange). Each gateway consumes its own server-named, exclusive,
// auto-delete queue bound to it, declared afresh on every reconnect, with
// x-max-length (Config.QueueMaxLength) and x-overflow=drop-head, a basic.qos
// prefetch (Config.Prefetch) and manual acks. Bodies are published with
// content_type application/json, message_id = the message id and the
// transient delivery mode: the store is the record, RabbitMQ the doorbell, and
// the queues are exclusive anyway.
//
// # Two connections
//
// A Broker keeps two connections, "parley <gateway> publish" and "parley
// <gateway> consume". RabbitMQ blocks publishing connections during a memory
// or disk alarm (connection.blocked); on a separate connection, consuming
// carries on meanwhile. Each connection has its own supervisor that
// reconnects with exponential backoff and full jitter for as long as the
// Broker lives; the library's own recovery is not used, so that this
// behaviour is ours and tested.
//
// # Publishing
//
// One channel in confirm mode carries every publish, and many publishes are
// in flight at once: Publish sends, then waits for its own confirm, without
// holding up the others. Publish returns nil only once RabbitMQ acked the
// body, which for this topology means it sits in every bound queue. When the
// publish link is down or blocked, Publish fails at once with ErrUnavailable
// (the gateway then answers "unavailable" and still serves chat from its
// store). A body whose confirm was lost with the link is published again on
// the next link while its context allows, so a receiver may see it twice and
// dedupes by seq.
//
// # Caveats
//
//   - A publish already written to the socket when RabbitMQ blocks the
//     connection may wait on the socket past its context (RabbitMQ stops
//     reading). New publishes fail fast as soon as connection.blocked arrives,
//     so this is bounded by the socket buffers; Close unsticks it.
//   - Close on a connection that RabbitMQ blocks cannot complete the close
//     handshake (RabbitMQ does not read it) and ends at the deadline.
package amqpbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parleychat/parley/internal/broker"
)

// Errors a Broker returns, to be tested with errors.Is. After Close, Publish
// and Consume return broker.ErrClosed, the same sentinel as broker.Memory.
var (
	// ErrUnavailable means RabbitMQ cannot take a publish right now: the
	// publish link is down (reconnecting) or blocked. Publish returns it at
	// once rather than waiting, so the caller can tell its client to retry.
	ErrUnavailable = errors.New("broker link unavailable")

	// ErrBlocked is wrapped alongside ErrUnavailable when the reason is that
	// RabbitMQ blocked the publish connection (connection.blocked, sent on a
	// memory or disk alarm).
	ErrBlocked = errors.New("publish link blocked by the broker")

	// ErrNacked means RabbitMQ refused the body (basic.nack): it was not
	// queued. Retrying may succeed.
	ErrNacked = errors.New("broker refused the message (nack)")

	// ErrConsuming is returned by Consume while another Consume call on the
	// same Broker runs: one gateway has one queue.
	ErrConsuming = errors.New("already consuming")
)

const (
	// handshakeTimeout bounds the TCP connect, TLS and AMQP handshake of one
	// dial, so that a RabbitMQ that accepts but does not answer cannot stall
	// a supervisor.
	handshakeTimeout = 10 * time.Second

	// defaultCloseTimeout bounds closing a connection when no deadline is
	// known (a Consume whose context ended, a link being replaced).
	defaultCloseTimeout = 5 * time.Second
)

// Broker is a broker.Broker on RabbitMQ. Create it with New and release it
// with Close. All methods are safe for concurrent use; at most one Consume
// runs at a time.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	backoff backoff

	// life ends when Close stops the supervisors; it is the context of
	// everything the Broker runs on its own.
	life    context.Context
	stop    context.CancelFunc
	pubDone chan struct{} // closed when the publish supervisor has returned

	// awaitingConfirm counts publishes written to a channel whose confirm
	// has not arrived yet (a gauge worth exporting as a metric).
	awaitingConfirm atomic.Int64

	mu sync.Mutex
	// pub is the current publish link; nil while it is down.
	pub        *pubLink
	pubErr     error         // why the publish link is down; nil before the first dial ends
	blocked    bool          // RabbitMQ blocked pub's connection
	blockedWhy string        // the reason RabbitMQ gave
	pubChanged chan struct{} // closed and replaced whenever pub or blocked changes
	// closing is set by Close: no new publish or consume is admitted.
	closing       bool
	closeDeadline time.Time     // when Close gives up; connection closes use it
	inflight      int           // admitted publishes that have not returned
	drained       chan struct{} // made by Close while inflight > 0; closed at 0
	consDone      chan struct{} // non-nil while a Consume runs; closed when it returns
	consUp        bool          // the running Consume has a live queue consumer
	consErr       error         // why the consume link is down
	queue         string        // name of the current queue, for logs and tests
}

var _ broker.Broker = (*Broker)(nil)

// pubLink is the confirm-mode channel of one publish connection; a new
// connection makes a new pubLink, which is how a publish tells links apart.
type pubLink struct {
	ch *amqp.Channel
}

// New checks cfg and starts the publish supervisor, which connects in the
// background and keeps reconnecting until Close: a gateway starts (and serves
// from its store) even while RabbitMQ is down, and Ready says when the links
// are up. Consuming starts with Consume. The Broker must be released with
// Close.
func New(cfg Config) (*Broker, error) {
	return newBroker(cfg, rand.Int64N)
}

// newBroker is New with the random source of the backoff injected.
func newBroker(cfg Config, randN func(int64) int64) (*Broker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	b := &Broker{
		cfg:        cfg,
		log:        cfg.Logger.With("exchange", cfg.Exchange),
		backoff:    backoff{base: cfg.BackoffBase, cap: cfg.BackoffCap, randN: randN},
		life:       life,
		stop:       stop,
		pubDone:    make(chan struct{}),
		pubChanged: make(chan struct{}),
	}
	go b.supervisePublish()
	return b, nil
}

// Ready returns nil when the publish link is up and not blocked and a
// Consume has its queue; otherwise an error (wrapping ErrUnavailable, and
// ErrBlocked when blocked) that says which link is not working and why.
func (b *Broker) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return fmt.Errorf("amqpbroker: not ready: %w", broker.ErrClosed)
	}
	var problems []string
	switch {
	case b.pub == nil && b.pubErr == nil:
		problems = append(problems, "publish link connecting")
	case b.pub == nil:
		problems = append(problems, fmt.Sprintf("publish link down (%v)", b.pubErr))
	case b.blocked:
		problems = append(problems, fmt.Sprintf("publish link blocked by the broker (%s)", b.blockedWhy))
	}
	switch {
	case b.consDone == nil:
		problems = append(problems, "not consuming")
	case !b.consUp && b.consErr == nil:
		problems = append(problems, "consume link connecting")
	case !b.consUp:
		problems = append(problems, fmt.Sprintf("consume link down (%v)", b.consErr))
	}
	if len(problems) == 0 {
		return nil
	}
	msg := strings.Join(problems, "; ")
	if b.pub != nil && b.blocked {
		return fmt.Errorf("amqpbroker: not ready: %s: %w (%w)", msg, ErrUnavailable, ErrBlocked)
	}
	return fmt.Errorf("amqpbroker: not ready: %s: %w", msg, ErrUnavailable)
}

// Close stops admitting publishes, waits (bounded by ctx) for the publishes
// awaiting their confirms, then ends any running Consume (which returns nil)
// and closes both connections with a connection.close handshake, so RabbitMQ
// logs an orderly close. It returns an error if ctx ended first; the
// connections are then closed at once. Calling Close again waits for the
// first call's work.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closing {
		consDone := b.consDone
		b.mu.Unlock()
		return b.awaitStopped(ctx, consDone)
	}
	b.closing = true
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultCloseTimeout)
	}
	b.closeDeadline = deadline
	var drained chan struct{}
	if b.inflight > 0 {
		b.drained = make(chan struct{})
		drained = b.drained
	}
	consDone := b.consDone
	b.mu.Unlock()

	var errs []error
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
			b.mu.Lock()
			n := b.inflight
			b.mu.Unlock()
			errs = append(errs, fmt.Errorf("%d publishes still awaited their confirms: %w", n, ctx.Err()))
		}
	}
	// The supervisors close their connections cleanly as they return.
	b.stop()
	if err := b.awaitStopped(ctx, consDone); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("amqpbroker: close: %w", err)
	}
	b.log.Info("amqp broker closed")
	return nil
}

// awaitStopped waits until the publish supervisor and the Consume that ran
// when Close began (if any) have returned, or ctx ends.
func (b *Broker) awaitStopped(ctx context.Context, consDone <-chan struct{}) error {
	for _, done := range []<-chan struct{}{b.pubDone, consDone} {
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("links still closing: %w", ctx.Err())
		}
	}
	return nil
}

// closeTimeLimit returns the deadline for closing a connection: Close's, once
// Close runs, and otherwise a short default.
func (b *Broker) closeTimeLimit() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return b.closeDeadline
	}
	return time.Now().Add(defaultCloseTimeout)
}

// closeConn closes conn with a connection.close handshake that ends by the
// close deadline. It reports failures at debug level only: the link is being
// dropped either way.
func (b *Broker) closeConn(conn *amqp.Connection, link string) {
	if conn.IsClosed() {
		return
	}
	if err := conn.CloseDeadline(b.closeTimeLimit()); err != nil && !errors.Is(err, amqp.ErrClosed) {
		b.log.Debug("amqp connection close was not clean", "link", link, "err", err)
	}
}

// dial opens a connection named "parley <gateway> <link>". The dial, TLS and
// AMQP handshake end when ctx does, so Close never waits for a RabbitMQ that
// does not answer.
func (b *Broker) dial(ctx context.Context, link string) (*amqp.Connection, error) {
	var (
		mu sync.Mutex
		nc net.Conn
	)
	// Interrupts a handshake in progress when ctx ends. If the handshake
	// finished first, the caller sees ctx's error and closes the connection.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if nc != nil {
			_ = nc.SetDeadline(time.Unix(1, 0))
		}
	})
	defer stop()

	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("parley " + b.cfg.GatewayID + " " + link)
	conn, err := amqp.DialConfig(b.cfg.URL, amqp.Config{
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: handshakeTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The library clears this deadline once the AMQP handshake is done.
			if err := c.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
				_ = c.Close()
				return nil, err
			}
			mu.Lock()
			nc = c
			mu.Unlock()
			// If ctx ended before nc was set, the AfterFunc found nothing
			// to interrupt; ctx.Err is already set in that case.
			if err := ctx.Err(); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s link: %w", link, ctx.Err())
		}
		return nil, fmt.Errorf("dial %s link: %w", link, err)
	}
	if ctx.Err() != nil {
		b.closeConn(conn, link)
		return nil, fmt.Errorf("dial %s link: %w", link, ctx.Err())
	}
	return conn, nil
}

// linkLost turns what a NotifyClose channel gave into an error.
func linkLost(what string, e *amqp.Error, ok bool) error {
	if ok && e != nil {
		return fmt.Errorf("%s closed: %w", what, e)
	}
	return fmt.Errorf("%s closed", what)
}
