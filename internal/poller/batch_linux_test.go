//go:build linux

package poller_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/parleychat/parley/internal/poller"
)

// TestBatchWrites writes to three sockets in one batch, one of them closed:
// the open ones get their bytes, the closed one an error and no write.
func TestBatchWrites(t *testing.T) {
	p := running(t)
	b, err := poller.NewBatch(8)
	if err != nil {
		t.Fatalf("io_uring: %v", err) // the machines this suite runs on allow it
	}
	defer b.Close()
	var clients []net.Conn
	var socks []*poller.Socket
	for range 3 {
		server, client := pair(t)
		s, err := p.Register(server.(*net.TCPConn), func() {})
		if err != nil {
			t.Fatal(err)
		}
		clients, socks = append(clients, client), append(socks, s)
		if len(socks) == 2 {
			_ = server.Close()
		}
	}
	msgs := [][]byte{[]byte("first"), []byte("second"), []byte("third")}
	for i, s := range socks {
		if got := b.Add(s, msgs[i]); got != i {
			t.Fatalf("Add returned %d, want %d", got, i)
		}
	}
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		n, err := b.Result(i)
		if err != nil || n != len(msgs[i]) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
		got := make([]byte, len(msgs[i]))
		if _, err := io.ReadFull(clients[i], got); err != nil || !bytes.Equal(got, msgs[i]) {
			t.Fatalf("socket %d got %q, %v", i, got, err)
		}
	}
	if n, err := b.Result(1); !errors.Is(err, net.ErrClosed) || n != 0 {
		t.Fatalf("write to the closed socket: %d, %v; want net.ErrClosed", n, err)
	}
	b.Reset()
	if b.Len() != 0 || b.Cap() != 8 {
		t.Fatalf("after Reset: Len %d Cap %d", b.Len(), b.Cap())
	}
}

// TestBatchWouldBlock fills a socket nobody reads: the batch reports a short
// write or ErrWouldBlock, never waits, and the bytes it reports written are
// the ones that arrive.
func TestBatchWouldBlock(t *testing.T) {
	p := running(t)
	b, err := poller.NewBatch(1)
	if err != nil {
		t.Fatalf("io_uring: %v", err)
	}
	defer b.Close()
	server, client := pair(t)
	s, err := p.Register(server.(*net.TCPConn), func() {})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	written := 0
	for {
		b.Reset()
		b.Add(s, chunk)
		if err := b.Write(); err != nil {
			t.Fatal(err)
		}
		n, err := b.Result(0)
		written += n
		if errors.Is(err, poller.ErrWouldBlock) || (err == nil && n < len(chunk)) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if written > 256<<20 {
			t.Fatal("256 MB written to a socket nobody reads")
		}
	}
	_ = server.Close()
	got, err := io.Copy(io.Discard, client)
	if err != nil || got != int64(written) {
		t.Fatalf("client read %d bytes (%v), the batch wrote %d", got, err, written)
	}
}
