// Package broker carries published frames from the gateway that accepted them
// to every gateway, the publisher included, so that all gateways deliver one
// stream through one path.
//
// Broker is the contract; Memory implements it in process (the embedded
// default, one gateway) and the amqpbroker package on a RabbitMQ fanout
// exchange (a cluster). The broker is the doorbell, not the record: a body it
// failed to deliver is repaired from the store, which is why Handler hears
// when the link comes back.
package broker

import "context"

// Broker fans published bodies out to every consuming gateway. All methods are
// safe for concurrent use.
type Broker interface {
	// Publish sends body to every gateway and returns once the broker has
	// taken it (for RabbitMQ: a publisher confirm). id is the message id, for
	// tracing. An error means the body may not have been delivered; the
	// caller decides whether to retry.
	Publish(ctx context.Context, body []byte, id string) error

	// Consume delivers every published body to h until ctx is done, and then
	// returns nil. It returns an error only if consuming cannot start at all.
	// Consume calls h from a single goroutine.
	Consume(ctx context.Context, h Handler) error

	// Ready returns nil when publishing and consuming both work, and
	// otherwise says what does not.
	Ready() error
}

// Handler receives what a Broker delivers. Its methods are called from one
// goroutine, one at a time, and must not block: a slow handler stalls every
// room on the gateway.
type Handler interface {
	// Deliver hands over one published body. body is the handler's to keep.
	Deliver(body []byte)

	// LinkUp is called each time consuming (re)starts. Bodies published while
	// the link was down were lost for this gateway, so the handler repairs
	// its rooms from the store; LinkUp is also called on the first start,
	// where there is nothing to repair.
	LinkUp()

	// LinkDown is called when consuming stops until further notice. The
	// handler then reads new messages from the store until LinkUp.
	LinkDown(err error)
}
