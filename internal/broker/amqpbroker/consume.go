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

// Consume implements broker.Broker. It keeps a consume link up until ctx ends
// or Close is called, and then returns nil; it never gives up while ctx lives.
// On each (re)connect it declares a fresh exclusive queue, so bodies published
// while the link was down are not delivered: h.LinkUp tells h to repair from
// the store. h.LinkDown is called once after each LinkUp when that link is
// lost; before the first LinkUp the link counts as down. All calls to h happen
// on the goroutine that called Consume, one at a time; none happen after
// Consume returns (ending it is not a LinkDown).
//
// Consume returns an error only if it cannot start: after Close
// (broker.ErrClosed) or while another Consume runs (ErrConsuming).
func (b *Broker) Consume(ctx context.Context, h broker.Handler) error {
	done, err := b.startConsume()
	if err != nil {
		return fmt.Errorf("amqpbroker: consume: %w", err)
	}
	defer b.endConsume(done)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.life, cancel)
	defer stop()

	log := b.log.With("link", "consume")
	attempt := 0
	for {
		lasted, wasUp, err := b.runConsumeLink(ctx, log, h)
		if ctx.Err() != nil {
			return nil
		}
		b.setConsDown(err)
		if wasUp {
			h.LinkDown(err)
			if lasted >= b.backoff.cap {
				attempt = 0
			}
		}
		d := b.backoff.delay(attempt)
		attempt++
		log.Warn("amqp link down, reconnecting", "err", err, "attempt", attempt, "delay", d)
		if !sleepCtx(ctx, d) {
			return nil
		}
	}
}

// startConsume registers a running Consume.
func (b *Broker) startConsume() (chan struct{}, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closing:
		return nil, broker.ErrClosed
	case b.consDone != nil:
		return nil, ErrConsuming
	}
	b.consDone = make(chan struct{})
	b.consUp, b.consErr, b.queue = false, nil, ""
	return b.consDone, nil
}

// endConsume unregisters the Consume that startConsume registered.
func (b *Broker) endConsume(done chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.consDone = nil
	b.consUp, b.consErr, b.queue = false, nil, ""
	close(done)
}

// runConsumeLink connects a consume link, declares and binds a fresh queue,
// calls h.LinkUp and delivers to h until the link is lost (returning why) or
// ctx ends (returning nil). It closes the connection before returning and
// reports how long the link was up and whether LinkUp was called.
func (b *Broker) runConsumeLink(ctx context.Context, log *slog.Logger, h broker.Handler) (time.Duration, bool, error) {
	conn, err := b.dial(ctx, "consume")
	if err != nil {
		return 0, false, err
	}
	defer b.closeConn(conn, "consume")
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))

	ch, err := conn.Channel()
	if err != nil {
		return 0, false, fmt.Errorf("open consume channel: %w", err)
	}
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := b.declareExchange(ch); err != nil {
		return 0, false, err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{
		"x-max-length": int64(b.cfg.QueueMaxLength),
		"x-overflow":   "drop-head",
	})
	if err != nil {
		return 0, false, fmt.Errorf("declare queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, "", b.cfg.Exchange, false, nil); err != nil {
		return 0, false, fmt.Errorf("bind queue %s to exchange %q: %w", q.Name, b.cfg.Exchange, err)
	}
	if err := ch.Qos(b.cfg.Prefetch, 0, false); err != nil {
		return 0, false, fmt.Errorf("set prefetch: %w", err)
	}
	deliveries, err := ch.Consume(q.Name, "", false, true, false, false, nil)
	if err != nil {
		return 0, false, fmt.Errorf("consume queue %s: %w", q.Name, err)
	}

	b.setConsUp(q.Name)
	log.Info("amqp link up", "queue", q.Name)
	h.LinkUp()
	start := time.Now()
	err = b.deliver(ctx, ch, deliveries, connClosed, chClosed, h)
	return time.Since(start), true, err
}

// ackIdle is how long deliveries may pause before the ones not yet acked
// are acked anyway. Nothing waits on those acks (see deliver); they only
// keep RabbitMQ's count of unacked messages true while a room is quiet.
const ackIdle = 100 * time.Millisecond

// deliver hands deliveries to h until the link is lost (returning why) or ctx
// ends (returning nil). It acks after h.Deliver returns, many deliveries at
// once (multiple=true): whenever a quarter of the prefetch window is
// unacked, and when deliveries pause for ackIdle. So RabbitMQ never waits on
// an ack that is held back, and gets one ack per hundred or so messages
// under load. deliver once acked whenever no delivery was waiting, at W3
// (1,000 messages a second) an ack per one or two messages; acking in
// batches cut RabbitMQ's and Redis's CPU there by 23% and W3's p99 by a
// quarter (docs/benchmarks.md).
func (b *Broker) deliver(ctx context.Context, ch *amqp.Channel, deliveries <-chan amqp.Delivery,
	connClosed, chClosed <-chan *amqp.Error, h broker.Handler,
) error {
	ackEvery := max(1, b.cfg.Prefetch/4)
	var (
		lastTag uint64
		unacked int
	)
	idle := time.NewTimer(ackIdle)
	idle.Stop()
	defer idle.Stop()
	flush := func() error {
		if unacked == 0 {
			return nil
		}
		unacked = 0
		if err := ch.Ack(lastTag, true); err != nil {
			return fmt.Errorf("ack deliveries up to %d: %w", lastTag, err)
		}
		return nil
	}
	for {
		if ctx.Err() != nil {
			// Acks go out before connection.close, so RabbitMQ sees them.
			_ = flush()
			return nil
		}
		var (
			d  amqp.Delivery
			ok bool
		)
		select {
		case d, ok = <-deliveries:
		default:
			if unacked > 0 {
				idle.Reset(ackIdle)
			}
			select {
			case d, ok = <-deliveries:
			case <-idle.C:
				if err := flush(); err != nil {
					return err
				}
				continue
			case <-ctx.Done():
				continue // to ack what is unacked
			case e, ok := <-connClosed:
				return linkLost("consume connection", e, ok)
			case e, ok := <-chClosed:
				return linkLost("consume channel", e, ok)
			}
		}
		if !ok {
			// The library closes deliveries when the channel or connection
			// goes, after it notified why; or when RabbitMQ cancelled the
			// consumer (the queue was deleted), with the link still up.
			select {
			case e, ok := <-connClosed:
				return linkLost("consume connection", e, ok)
			case e, ok := <-chClosed:
				return linkLost("consume channel", e, ok)
			default:
				return errors.New("consumer cancelled by the broker")
			}
		}
		h.Deliver(d.Body)
		lastTag = d.DeliveryTag
		unacked++
		if unacked >= ackEvery {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// setConsUp records that the running Consume has a live consumer on queue.
func (b *Broker) setConsUp(queue string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.consUp, b.consErr, b.queue = true, nil, queue
}

// setConsDown records that the running Consume lost its link, and why.
func (b *Broker) setConsDown(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.consUp, b.consErr, b.queue = false, err, ""
}
