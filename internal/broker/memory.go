package broker

import (
	"context"
	"errors"
	"sync"
)

// Memory is a Broker inside one process: the broker of the embedded default.
// Publish hands the body to every consumer before it returns, which is the
// in-process equivalent of a publisher confirm. The zero value is ready to
// use.
type Memory struct {
	mu       sync.Mutex // serialises deliveries: Handler is called one at a time
	closed   bool
	handlers map[*Handler]Handler
}

var _ Broker = (*Memory)(nil)

// ErrClosed is returned by Memory.Publish after Close.
var ErrClosed = errors.New("broker closed")

// Publish implements Broker. Each consumer gets its own copy of body, as it
// would from a network broker.
func (b *Memory) Publish(ctx context.Context, body []byte, _ string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	for _, h := range b.handlers {
		h.Deliver(append([]byte(nil), body...))
	}
	return nil
}

// Consume implements Broker.
func (b *Memory) Consume(ctx context.Context, h Handler) error {
	key := &h
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if b.handlers == nil {
		b.handlers = make(map[*Handler]Handler)
	}
	b.handlers[key] = h
	h.LinkUp()
	b.mu.Unlock()

	<-ctx.Done()

	b.mu.Lock()
	delete(b.handlers, key)
	b.mu.Unlock()
	return nil
}

// Ready implements Broker.
func (b *Memory) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	return nil
}

// Close makes further publishes fail. Consumers keep running until their
// context ends.
func (b *Memory) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}
