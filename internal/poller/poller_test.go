//go:build linux

package poller_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/poller"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

// running starts a poller that stops when the test ends.
func running(t *testing.T) *poller.Poller {
	t.Helper()
	p, err := poller.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

// armed registers conn and arms it.
func armed(t *testing.T, p *poller.Poller, conn net.Conn, ready chan struct{}) *poller.Socket {
	t.Helper()
	s, err := p.Register(conn.(syscall.Conn), func() { ready <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Arm(); err != nil {
		t.Fatal(err)
	}
	return s
}

func wait(t *testing.T, ready chan struct{}) {
	t.Helper()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("no ready callback")
	}
}

func TestReadyOncePerArmWithWhatArrived(t *testing.T) {
	p := running(t)
	server, client := pair(t)
	ready := make(chan struct{}, 4)
	s := armed(t, p, server, ready)
	buf := make([]byte, 16)
	if _, err := s.Peek(buf); !errors.Is(err, poller.ErrWouldBlock) {
		t.Fatalf("peek on an empty socket: %v, want ErrWouldBlock", err)
	}

	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	wait(t, ready)
	n, err := s.Peek(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("peek: %q, %v", buf[:n], err)
	}
	// Peeking does not consume: a blocking read sees the same bytes.
	got := make([]byte, 2)
	if _, err := server.Read(got); err != nil || string(got) != "pi" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := s.Discard(2); err != nil {
		t.Fatal(err)
	}

	// One-shot: the second write is reported only after the next Arm, and
	// level-triggered: bytes that came before the Arm are reported at once.
	if _, err := client.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if err := s.Arm(); err != nil {
		t.Fatal(err)
	}
	wait(t, ready)
	if n, err := s.Peek(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("after re-arm, peek: %q, %v", buf[:n], err)
	}
	if len(ready) != 0 {
		t.Fatalf("%d extra callbacks for one Arm", len(ready))
	}
	s.Release()
}

func TestPeerCloseIsReportedAsEmptyPeek(t *testing.T) {
	p := running(t)
	server, client := pair(t)
	ready := make(chan struct{}, 1)
	s := armed(t, p, server, ready)
	_ = client.Close()
	wait(t, ready)
	if n, err := s.Peek(make([]byte, 8)); n != 0 || err != nil {
		t.Fatalf("peek after the peer closed: %d, %v; want 0, nil", n, err)
	}
}

func TestWriteDoesNotWait(t *testing.T) {
	p := running(t)
	server, _ := pair(t) // the client never reads
	s := armed(t, p, server, make(chan struct{}, 1))
	chunk := make([]byte, 64<<10)
	total := 0
	for {
		n, err := s.Write(chunk)
		total += n
		if errors.Is(err, poller.ErrWouldBlock) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if total > 256<<20 {
			t.Fatal("256 MB written to a peer that never reads")
		}
	}
	if total == 0 {
		t.Fatal("nothing written before the buffers filled")
	}
}

func TestStoppedPollerHandsSocketsBack(t *testing.T) {
	p, err := poller.New()
	if err != nil {
		t.Fatal(err)
	}
	server, _ := pair(t)
	ready := make(chan struct{}, 2)
	s, err := p.Register(server.(syscall.Conn), func() { ready <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	// Armed before Run: the callback waits for Run.
	if err := s.Arm(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Run(ctx)
	// The socket was armed and nothing arrived: it is handed back once.
	wait(t, ready)
	if err := s.Arm(); !errors.Is(err, poller.ErrClosed) {
		t.Fatalf("arm after Run: %v, want ErrClosed", err)
	}
}

func TestWaitReadable(t *testing.T) {
	p := running(t)
	server, client := pair(t)
	s, err := p.Register(server.(syscall.Conn), func() {})
	if err != nil {
		t.Fatal(err)
	}
	if s.WaitReadable(20 * time.Millisecond) {
		t.Fatal("readable with nothing sent")
	}
	go func() { _, _ = client.Write([]byte("x")) }()
	if !s.WaitReadable(5 * time.Second) {
		t.Fatal("not readable after a write")
	}
	// It read nothing, and left no deadline behind: a read gets the byte
	// after the wait's deadline has passed.
	time.Sleep(30 * time.Millisecond) // past the first wait's deadline
	b := make([]byte, 1)
	if _, err := server.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("read %q, %v", b, err)
	}
}
