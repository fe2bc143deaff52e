package poller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poller watches armed sockets and calls their ready callbacks.
type Poller struct {
	epfd, wakefd int

	mu     sync.Mutex
	closed bool            // Run has ended; Arm fails
	socks  map[int]*Socket // armed or once armed, by file descriptor
}

// New returns a Poller. Sockets may be armed at once; their callbacks come
// once Run is called, which the caller must do.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl add eventfd: %w", err)
	}
	return &Poller{epfd: epfd, wakefd: wakefd, socks: make(map[int]*Socket)}, nil
}

// Run delivers readiness until ctx ends, on the calling goroutine, and then
// releases the poller. Every socket still armed at the end gets its callback
// once more, so that its owner goes back to reading it itself (its next Arm
// fails with ErrClosed). Run must be called once.
func (p *Poller) Run(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		_, _ = unix.Write(p.wakefd, one)
	})
	defer stop()

	events := make([]unix.EpollEvent, 128)
	for ctx.Err() == nil {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			break // cannot happen with a valid epoll fd; fall back to owners reading
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == p.wakefd {
				continue
			}
			p.mu.Lock()
			s := p.socks[int(ev.Fd)]
			p.mu.Unlock()
			if s != nil {
				s.ready()
			}
		}
	}

	p.mu.Lock()
	p.closed = true
	left := make([]*Socket, 0, len(p.socks))
	for _, s := range p.socks {
		left = append(left, s)
	}
	clear(p.socks)
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.wakefd)
	p.mu.Unlock()
	for _, s := range left {
		s.ready()
	}
}

// Socket is a connection's socket as the poller sees it. Its methods may be
// called from any goroutine, but the caller must make sure nobody else reads
// the socket while it uses Peek and Discard, or writes it while it uses
// Write.
type Socket struct {
	p        *Poller
	rc       syscall.RawConn
	deadline interface{ SetReadDeadline(time.Time) error } // nil if conn has none
	ready    func()
	fd       int  // under p.mu, once armed
	added    bool // registered with the epoll instance
}

// Register returns conn's socket. ready is called on the poller's goroutine,
// at most once per Arm, when the socket has bytes to read, was closed by the
// peer or failed; it must not block.
func (p *Poller) Register(conn syscall.Conn, ready func()) (*Socket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw conn: %w", err)
	}
	s := &Socket{p: p, rc: rc, ready: ready}
	s.deadline, _ = conn.(interface{ SetReadDeadline(time.Time) error })
	return s, nil
}

// WaitReadable waits up to d, on the calling goroutine and through Go's own
// network poller, until the socket has something to read or the peer has
// closed it; it reads nothing. It reports false when d passed first or the
// socket failed. It uses the connection's read deadline, so no read may run
// meanwhile.
func (s *Socket) WaitReadable(d time.Duration) bool {
	if s.deadline == nil || s.deadline.SetReadDeadline(time.Now().Add(d)) != nil {
		return false
	}
	defer func() { _ = s.deadline.SetReadDeadline(time.Time{}) }()
	ready := false
	_ = s.rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return false // wait for readability (or the deadline)
		}
		ready = true
		return true
	})
	return ready
}

// Arm asks for one call of the ready callback once the socket has something
// to read. If it has bytes already, the call comes at once.
func (s *Socket) Arm() error {
	var armErr error
	err := s.rc.Control(func(fd uintptr) {
		p := s.p
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			armErr = ErrClosed
			return
		}
		// Level-triggered and one-shot: bytes that arrived before the
		// arming are reported too, and each arming yields one callback.
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
		op := unix.EPOLL_CTL_ADD
		if s.added {
			op = unix.EPOLL_CTL_MOD
		}
		armErr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		if errors.Is(armErr, unix.EEXIST) {
			armErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		}
		if armErr != nil {
			armErr = fmt.Errorf("epoll_ctl: %w", armErr)
			return
		}
		s.added, s.fd = true, int(fd)
		p.socks[s.fd] = s
	})
	if err != nil {
		return fmt.Errorf("arm: %w", err)
	}
	return armErr
}

// Release forgets the socket; a callback already on its way may still come.
func (s *Socket) Release() {
	p := s.p
	_ = s.rc.Control(func(fd uintptr) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if s.added && !p.closed {
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		}
	})
	p.mu.Lock()
	if s.added && p.socks[s.fd] == s {
		delete(p.socks, s.fd)
	}
	p.mu.Unlock()
}

// Peek copies what the socket has to read into buf without consuming it.
// It returns 0 and no error when the peer has closed its side, and
// ErrWouldBlock when there is nothing to read.
func (s *Socket) Peek(buf []byte) (int, error) {
	return s.io(func(fd int) (int, error) {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return n, err
	})
}

// Discard consumes n bytes that Peek has shown are there.
func (s *Socket) Discard(n int) error {
	buf := make([]byte, n)
	for len(buf) > 0 {
		m, err := s.io(func(fd int) (int, error) { return unix.Read(fd, buf) })
		if err != nil {
			return fmt.Errorf("discard: %w", err)
		}
		if m == 0 {
			return fmt.Errorf("discard: %w", unix.ECONNRESET)
		}
		buf = buf[m:]
	}
	return nil
}

// Write writes b without waiting. It may write only part of b when the
// socket's buffer is nearly full; ErrWouldBlock means nothing was written.
func (s *Socket) Write(b []byte) (int, error) {
	return s.io(func(fd int) (int, error) { return rawWrite(fd, b) })
}

// rawWrite is write(2) without telling the Go scheduler. The descriptor is
// non-blocking, so the call cannot park the thread, and the scheduler has
// nothing to do for it. Told, as unix.Write tells it, the runtime enters and
// leaves a system call around every write, and its monitor (sysmon) hands
// the processor to another thread when a busy machine stretches one, then
// polls every 20 us rather than sleeping. At W1 these writes are most of a
// gateway's work; raw, they cost 3-5% less CPU per delivery
// (docs/benchmarks.md). Callers that write many sockets in a row must yield
// now and then themselves (see flusher.run).
func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		default:
			return 0, errno
		}
	}
}

// io runs op on the socket's descriptor, which Go keeps non-blocking and
// open for the duration.
func (s *Socket) io(op func(fd int) (int, error)) (int, error) {
	var n int
	var opErr error
	err := s.rc.Control(func(fd uintptr) { n, opErr = op(int(fd)) })
	if err != nil {
		return 0, err
	}
	if opErr != nil {
		return 0, ioError(opErr)
	}
	return n, nil
}

// ioError is how a failed non-blocking operation is reported: EAGAIN as
// ErrWouldBlock, anything else as it came.
func ioError(err error) error {
	if errors.Is(err, unix.EAGAIN) {
		return ErrWouldBlock
	}
	return err
}
