package amqpbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parleychat/parley/internal/broker"
)

// Publish implements broker.Broker: it sends body to every gateway's queue
// and returns nil once RabbitMQ confirmed it. Many Publish calls may be in
// flight at once; each waits only for its own confirm.
//
// When the publish link is down or blocked, Publish fails at once with an
// error wrapping ErrUnavailable. When the link is lost while the body awaits
// its confirm, Publish sends it again on the next link while ctx allows (the
// body may then reach a gateway twice; receivers dedupe by seq). A nack gives
// ErrNacked; after Close, broker.ErrClosed. body is not retained after Publish
// returns.
func (b *Broker) Publish(ctx context.Context, body []byte, id string) error {
	l, err := b.admit(ctx)
	if err != nil {
		return fmt.Errorf("amqpbroker: publish %s: %w", id, err)
	}
	defer b.release()

	msg := amqp.Publishing{
		ContentType:  "application/json",
		MessageId:    id,
		DeliveryMode: amqp.Transient,
		Body:         body,
	}
	for attempt := 0; ; attempt++ {
		dc, err := l.ch.PublishWithDeferredConfirmWithContext(ctx, b.cfg.Exchange, "", false, false, msg)
		switch {
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("amqpbroker: publish %s: %w", id, ctx.Err())
		case err != nil && attempt == 0:
			// Nothing was sent: the link went between admit and now.
			return fmt.Errorf("amqpbroker: publish %s: %w: %w", id, ErrUnavailable, err)
		case err != nil:
			// The link went again before the re-publish was written; wait
			// for the next one below.
		case dc == nil:
			return fmt.Errorf("amqpbroker: publish %s: channel is not in confirm mode", id)
		default:
			b.awaitingConfirm.Add(1)
			select {
			case <-dc.Done():
				b.awaitingConfirm.Add(-1)
			case <-ctx.Done():
				b.awaitingConfirm.Add(-1)
				if dc.Acked() {
					return nil
				}
				return fmt.Errorf("amqpbroker: publish %s: awaiting confirm: %w", id, ctx.Err())
			}
			if dc.Acked() {
				return nil
			}
			// The library settles the confirms of a channel that shuts down
			// as negative, after marking the channel closed. A negative
			// confirm on an open channel is RabbitMQ's own nack.
			if !l.ch.IsClosed() {
				return fmt.Errorf("amqpbroker: publish %s: %w", id, ErrNacked)
			}
		}
		b.log.Debug("publish link lost before the confirm; publishing again on the next link", "id", id)
		if l, err = b.nextLink(ctx, l); err != nil {
			return fmt.Errorf("amqpbroker: publish %s: link lost before the confirm: %w", id, err)
		}
	}
}

// admit returns the publish link for a new publish and counts it in flight,
// or says why there is none to use right now.
func (b *Broker) admit(ctx context.Context) (*pubLink, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closing:
		return nil, broker.ErrClosed
	case b.pub == nil && b.pubErr == nil:
		return nil, fmt.Errorf("%w: publish link not connected yet", ErrUnavailable)
	case b.pub == nil:
		return nil, fmt.Errorf("%w: publish link down: %v", ErrUnavailable, b.pubErr)
	case b.blocked:
		return nil, fmt.Errorf("%w: %w (%s)", ErrUnavailable, ErrBlocked, b.blockedWhy)
	}
	b.inflight++
	return b.pub, nil
}

// release ends what admit started, and tells a waiting Close when the last
// publish in flight is done.
func (b *Broker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inflight--
	if b.inflight == 0 && b.drained != nil {
		close(b.drained)
		b.drained = nil
	}
}

// nextLink waits for a publish link other than old that is not blocked, for
// re-publishing a body whose confirm was lost with old.
func (b *Broker) nextLink(ctx context.Context, old *pubLink) (*pubLink, error) {
	for {
		b.mu.Lock()
		l, blocked, changed := b.pub, b.blocked, b.pubChanged
		b.mu.Unlock()
		if l != nil && l != old && !blocked {
			return l, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: not back in time: %w", ErrUnavailable, ctx.Err())
		case <-b.life.Done():
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, broker.ErrClosed)
		}
	}
}

// supervisePublish keeps a publish link up until Close: it connects, serves
// until the link is lost, and reconnects after a backoff delay, forever.
func (b *Broker) supervisePublish() {
	defer close(b.pubDone)
	ctx := b.life
	log := b.log.With("link", "publish")
	attempt := 0
	for {
		lasted, err := b.runPublishLink(ctx, log)
		if ctx.Err() != nil {
			return
		}
		if lasted >= b.backoff.cap {
			// The link was healthy for a while: this is a fresh outage,
			// not the next failure of a flapping one.
			attempt = 0
		}
		b.setPubDown(err)
		d := b.backoff.delay(attempt)
		attempt++
		log.Warn("amqp link down, reconnecting", "err", err, "attempt", attempt, "delay", d)
		if !sleepCtx(ctx, d) {
			return
		}
	}
}

// runPublishLink connects a publish link, makes it the current one and serves
// it until it is lost (returning why) or ctx ends (returning nil). It closes
// the connection before returning and reports how long the link was up.
func (b *Broker) runPublishLink(ctx context.Context, log *slog.Logger) (time.Duration, error) {
	conn, err := b.dial(ctx, "publish")
	if err != nil {
		return 0, err
	}
	defer b.closeConn(conn, "publish")
	// Buffered, and read for as long as the connection lives: the library
	// blocks its reader while a notification cannot be handed over.
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 8))

	ch, err := conn.Channel()
	if err != nil {
		return 0, fmt.Errorf("open publish channel: %w", err)
	}
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Confirm(false); err != nil {
		return 0, fmt.Errorf("enable publisher confirms: %w", err)
	}
	if err := b.declareExchange(ch); err != nil {
		return 0, err
	}

	l := &pubLink{ch: ch}
	b.setPubUp(l)
	log.Info("amqp link up")
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			b.setPubDown(broker.ErrClosed)
			return time.Since(start), nil
		case e, ok := <-connClosed:
			err := linkLost("publish connection", e, ok)
			b.setPubDown(err)
			return time.Since(start), err
		case e, ok := <-chClosed:
			err := linkLost("publish channel", e, ok)
			b.setPubDown(err)
			return time.Since(start), err
		case bl, ok := <-blocks:
			if !ok {
				blocks = nil
				continue
			}
			b.setBlocked(l, bl.Active, bl.Reason)
			if bl.Active {
				log.Warn("amqp link blocked by the broker; publishes fail until it is unblocked", "reason", bl.Reason)
			} else {
				log.Info("amqp link unblocked")
			}
		}
	}
}

// declareExchange declares the durable fanout exchange; both links do, so
// that either may come up first.
func (b *Broker) declareExchange(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(b.cfg.Exchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", b.cfg.Exchange, err)
	}
	return nil
}

// setPubUp makes l the current publish link.
func (b *Broker) setPubUp(l *pubLink) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pub, b.pubErr, b.blocked, b.blockedWhy = l, nil, false, ""
	b.pubChangedLocked()
}

// setPubDown records that there is no publish link, and why.
func (b *Broker) setPubDown(err error) {
	if err == nil {
		err = errors.New("publish link lost")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pub, b.pubErr, b.blocked, b.blockedWhy = nil, err, false, ""
	b.pubChangedLocked()
}

// setBlocked records connection.blocked/unblocked for link l, if l is still
// the current link.
func (b *Broker) setBlocked(l *pubLink, active bool, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pub != l {
		return
	}
	b.blocked, b.blockedWhy = active, reason
	b.pubChangedLocked()
}

// pubChangedLocked wakes the publishes waiting in nextLink. b.mu must be held.
func (b *Broker) pubChangedLocked() {
	close(b.pubChanged)
	b.pubChanged = make(chan struct{})
}
