//go:build integration

package amqpbroker

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/parleychat/parley/internal/testenv"
)

// faultProxy is a TCP proxy between a Broker and the real RabbitMQ that can
// inject network faults RabbitMQ itself cannot be asked for: it can hold back
// or swallow everything RabbitMQ sends on the open connections (so confirms
// are late or lost while publishes still arrive) and cut them.
type faultProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and every copier

	mu    sync.Mutex
	conns []*proxiedConn
	held  chan struct{} // non-nil while holding: closed on release
}

// proxiedConn is one client connection and its connection to RabbitMQ.
type proxiedConn struct {
	client, server net.Conn
	muted          atomic.Bool // drop what RabbitMQ sends
}

// newFaultProxy starts a proxy to the test RabbitMQ and stops it when the
// test ends. Its URL() has the test RabbitMQ's credentials and vhost.
func newFaultProxy(tb testing.TB) *faultProxy {
	tb.Helper()
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		tb.Fatal(err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5672")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &faultProxy{l: l, target: target}
	p.wg.Go(p.accept)
	tb.Cleanup(func() {
		_ = p.l.Close()
		p.release()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// URL returns the test RabbitMQ's URL with the proxy as its host.
func (p *faultProxy) URL(tb testing.TB) string {
	u, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		tb.Fatal(err)
	}
	u.Host = p.l.Addr().String()
	return u.String()
}

func (p *faultProxy) accept() {
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		c := &proxiedConn{client: client, server: server}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(c, c.client, c.server, false) })
		p.wg.Go(func() { p.pipe(c, c.server, c.client, true) })
	}
}

// pipe copies from src to dst until either side closes, then closes both.
// Data from RabbitMQ (fromServer) is dropped while c is muted.
func (p *faultProxy) pipe(c *proxiedConn, src, dst net.Conn, fromServer bool) {
	defer func() {
		_ = c.client.Close()
		_ = c.server.Close()
	}()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 && fromServer {
			p.mu.Lock()
			held := p.held
			p.mu.Unlock()
			if held != nil {
				<-held
			}
		}
		if n > 0 {
			if !fromServer || !c.muted.Load() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// mute makes every open connection drop what RabbitMQ sends from now on;
// connections opened later are not muted.
func (p *faultProxy) mute() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.muted.Store(true)
	}
}

// hold makes every connection keep what RabbitMQ sends until release.
func (p *faultProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = make(chan struct{})
	}
}

// release passes on what hold kept back, and everything after.
func (p *faultProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held != nil {
		close(p.held)
		p.held = nil
	}
}

// cut closes every open connection, as a network failure would.
func (p *faultProxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.client.Close()
		_ = c.server.Close()
	}
}
