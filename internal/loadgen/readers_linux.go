package loadgen

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readers reads every connection of a session from one epoll loop per
// processor. Sockets are edge-triggered and read until a read comes back
// short, so a message that arrives alone costs one read(2) and no goroutine
// wake-up; the loops take whatever epoll_wait reports in one go.
type readers struct {
	s      *session
	wakefd int // readable in every loop once stop is called
	loops  []*readLoop
	wg     sync.WaitGroup

	mu    sync.Mutex
	next  int     // the loop the next connection goes to
	socks []*sock // every descriptor handed out, closed by stop
}

// readLoop is one epoll instance and the connections it watches.
type readLoop struct {
	epfd int
	// mu orders a connection's set-up before the loop's first look at it:
	// epoll reports readiness without telling the race detector.
	mu    sync.Mutex
	conns map[int32]*client
}

// newReaders starts the loops for s; stop ends them.
func newReaders(s *session) (*readers, error) {
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	r := &readers{s: s, wakefd: wakefd}
	for range runtime.GOMAXPROCS(0) {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err == nil {
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
			if err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
				_ = unix.Close(epfd)
			}
		}
		if err != nil {
			r.stop()
			return nil, fmt.Errorf("epoll: %w", err)
		}
		l := &readLoop{epfd: epfd, conns: make(map[int32]*client)}
		r.loops = append(r.loops, l)
		r.wg.Go(func() { r.run(l) })
	}
	return r, nil
}

// take makes conn c's connection: it takes the socket from Go's own poller.
// conn is closed in any case.
func (r *readers) take(c *client, conn net.Conn) error {
	fd, err := takeFD(conn)
	if err != nil {
		return err
	}
	k := &sock{fd: fd}
	c.conn = k
	r.mu.Lock()
	r.socks = append(r.socks, k)
	r.mu.Unlock()
	return nil
}

// watch handles rest (bytes read with the handshake) and starts reading c's
// connection. The caller must not hold the session's lock: handling a frame
// may take it.
func (r *readers) watch(c *client, rest []byte) error {
	k := c.conn.(*sock)
	if len(rest) > 0 {
		if err := c.feed(rest, r.s.now()); err != nil {
			_ = k.Close()
			return err
		}
	}
	r.mu.Lock()
	l := r.loops[r.next%len(r.loops)]
	r.next++
	r.mu.Unlock()
	l.mu.Lock()
	l.conns[int32(k.fd)] = c
	l.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(k.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, k.fd, &ev); err != nil {
		l.mu.Lock()
		delete(l.conns, int32(k.fd))
		l.mu.Unlock()
		_ = k.Close()
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// takeFD returns a duplicate of conn's descriptor and closes conn, which
// takes the socket out of Go's poller: otherwise the runtime would be woken
// for every arrival as well.
func takeFD(conn net.Conn) (int, error) {
	sc, ok := conn.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		_ = conn.Close()
		return -1, errors.New("connection without a descriptor")
	}
	rc, err := sc.SyscallConn()
	fd := -1
	if err == nil {
		cerr := rc.Control(func(orig uintptr) {
			fd, err = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
		})
		if err == nil {
			err = cerr
		}
	}
	_ = conn.Close()
	if err != nil {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return -1, fmt.Errorf("take descriptor: %w", err)
	}
	// The flag lives on the shared file description; set it regardless.
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("take descriptor: %w", err)
	}
	// Reads then say when their bytes arrived (see receiver).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("take descriptor: SO_TIMESTAMPNS: %w", err)
	}
	return fd, nil
}

// run reads l's connections until stop.
func (r *readers) run(l *readLoop) {
	events := make([]unix.EpollEvent, 256)
	rc := newReceiver(64 << 10)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			r.s.noteError("epoll_wait: " + err.Error())
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == r.wakefd {
				return
			}
			l.mu.Lock()
			c := l.conns[ev.Fd]
			l.mu.Unlock()
			if c == nil {
				continue
			}
			if err := r.drain(c, rc); err != nil {
				r.s.noteEnd(c, err)
				k := c.conn.(*sock)
				_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, k.fd, nil)
				l.mu.Lock()
				delete(l.conns, ev.Fd)
				l.mu.Unlock()
				_ = k.Close()
			}
		}
	}
}

// drain reads what c's socket has until a read comes back short: with an
// edge-triggered socket, whatever arrives after it is reported again.
func (r *readers) drain(c *client, rc *receiver) error {
	fd := c.conn.(*sock).fd
	for {
		n, stamp, err := rc.read(fd)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case err != nil:
			return err
		case n == 0:
			return io.EOF
		}
		t := time.Now()
		now := int64(t.Sub(r.s.clock))
		c.arrived = 0
		if stamp > 0 {
			// The stamp's age on the wall clock, taken off the session's
			// monotonic clock: both readings come from one time.Now.
			c.arrived = now - max(t.UnixNano()-stamp, 0)
		}
		if err := c.feed(rc.buf[:n], now); err != nil {
			return err
		}
		if n < len(rc.buf) {
			return nil
		}
	}
}

// receiver reads a socket with recvmsg(2) for the kernel's receive
// timestamp (SO_TIMESTAMPNS): on a loopback socket the time the gateway's
// write delivered the bytes, before the generator got a processor to read
// them. For TCP it is the timestamp of the last segment read, so messages
// that arrived earlier in the same read look younger than they are, never
// older. One receiver serves one loop, whose buffers it reuses.
type receiver struct {
	buf []byte
	oob []byte
	iov unix.Iovec
	msg unix.Msghdr
}

func newReceiver(size int) *receiver {
	rc := &receiver{buf: make([]byte, size), oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}
	rc.iov.Base = &rc.buf[0]
	rc.iov.SetLen(size)
	rc.msg.Iov = &rc.iov
	rc.msg.SetIovlen(1)
	rc.msg.Control = &rc.oob[0]
	return rc
}

// read reads into rc.buf and returns the byte count and the arrival stamp
// (Unix nanoseconds; 0 if the kernel gave none).
func (rc *receiver) read(fd int) (int, int64, error) {
	for {
		// The kernel shortens these to what it returned.
		rc.msg.SetControllen(len(rc.oob))
		rc.msg.Flags = 0
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&rc.msg)), 0)
		switch errno {
		case 0:
			return int(n), rc.stamp(), nil
		case unix.EINTR:
			continue
		default:
			return 0, 0, errno
		}
	}
}

// stamp finds the SCM_TIMESTAMPNS message among the control messages the
// last read returned.
func (rc *receiver) stamp() int64 {
	b := rc.oob[:rc.msg.Controllen]
	for len(b) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(b) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && int(h.Len) >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
			return ts.Nano()
		}
		b = b[min(unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0)), len(b)):]
	}
	return 0
}

// stop ends the loops and closes every descriptor. The session has shut
// the connections down and ended its publishers first, so nothing uses a
// descriptor any more (and none is reused under a writer).
func (r *readers) stop() {
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	_, _ = unix.Write(r.wakefd, one)
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.socks {
		_ = unix.Close(k.fd)
	}
	r.socks = nil
	for _, l := range r.loops {
		_ = unix.Close(l.epfd)
	}
	_ = unix.Close(r.wakefd)
}

// sock is a connection's descriptor, written by publishers and the loop
// (pongs) under the client's wmu.
type sock struct {
	fd     int
	closed atomic.Bool
}

// Write writes all of b, waiting for room in the socket's buffer.
func (k *sock) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		n, err := unix.Write(k.fd, b[written:])
		switch {
		case err == nil:
			written += n
		case errors.Is(err, unix.EAGAIN):
			if k.closed.Load() {
				return written, net.ErrClosed
			}
			// Poll rather than Go's poller, which no longer knows the socket;
			// the timeout rechecks closed.
			pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLOUT}}
			_, _ = unix.Poll(pfd, 100)
		case errors.Is(err, unix.EINTR):
		default:
			return written, err
		}
	}
	return written, nil
}

// Close shuts the connection down; the descriptor stays open until stop so
// that its number is not reused under a writer.
func (k *sock) Close() error {
	if k.closed.Swap(true) {
		return nil
	}
	return unix.Shutdown(k.fd, unix.SHUT_RDWR)
}
