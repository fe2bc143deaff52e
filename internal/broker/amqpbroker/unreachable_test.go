package amqpbroker

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/broker"
	"github.com/parleychat/parley/internal/broker/brokertest"
)

// closedPortURL returns an AMQP URL on which nothing listens, so that every
// dial is refused at once. It needs no RabbitMQ.
func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "amqp://guest:guest@" + addr + "/"
}

// TestUnreachable checks what a gateway sees while RabbitMQ cannot be
// reached: Publish fails at once with ErrUnavailable instead of hanging,
// Ready says both links are down, Consume keeps retrying without calling the
// handler and returns nil when its context ends, and Close is prompt.
func TestUnreachable(t *testing.T) {
	b, err := New(Config{URL: closedPortURL(t), GatewayID: "unreachable", BackoffBase: 5 * time.Millisecond, BackoffCap: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	rec := &brokertest.Recorder{}
	done := make(chan error, 1)
	go func() { done <- b.Consume(ctx, rec) }()

	// Wait until both supervisors have failed at least once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := b.Ready()
		if err != nil && strings.Contains(err.Error(), "publish link down") && strings.Contains(err.Error(), "consume link down") {
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("Ready error %v does not wrap ErrUnavailable", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready = %v, want both links reported down", err)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}

	pubCtx, pubCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pubCancel()
	start := time.Now()
	err = b.Publish(pubCtx, []byte(`{}`), "m1")
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Publish = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Publish took %v to fail, want at once", d)
	}

	if err := b.Consume(context.Background(), rec); !errors.Is(err, ErrConsuming) {
		t.Errorf("second concurrent Consume = %v, want ErrConsuming", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Consume = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Consume did not return after its context ended")
	}
	if n := len(rec.Events()); n != 0 {
		t.Errorf("handler got %d calls without ever being linked: %v", n, rec.Events())
	}

	closeCtx, closeCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer closeCancel()
	start = time.Now()
	if err := b.Close(closeCtx); err != nil {
		t.Errorf("Close = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := b.Publish(context.Background(), []byte(`{}`), "m2"); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close = %v, want broker.ErrClosed", err)
	}
	if err := b.Consume(context.Background(), rec); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Consume after Close = %v, want broker.ErrClosed", err)
	}
	if err := b.Ready(); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Ready after Close = %v, want broker.ErrClosed", err)
	}
	if err := b.Close(closeCtx); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

// TestDialAbortsOnClose checks that Close does not wait for a handshake with
// a server that accepts TCP connections but never speaks AMQP.
func TestDialAbortsOnClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-acceptDone
		close(accepted)
		for c := range accepted {
			_ = c.Close()
		}
	})

	b, err := New(Config{URL: "amqp://guest:guest@" + l.Addr().String() + "/", GatewayID: "silent"})
	if err != nil {
		t.Fatal(err)
	}
	var first net.Conn
	select {
	case first = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the broker never dialled")
	}
	accepted <- first // for cleanup

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v while a handshake hung; want it aborted at once", d)
	}
}
