package poller

import (
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// This file measures the floor under the gateway's CPU per delivery: what
// one small send on a loopback TCP socket costs the thread that makes it,
// written the gateway's way (a raw write(2) per socket) and the cheapest
// other way Linux offers for many sockets at once (io_uring, one system call
// for a batch of sends, as Batch makes them).

// BenchmarkLoopbackSend sends a 120-byte message to each of 500 loopback
// sockets per pass, as a gateway's flusher does for a message to a room of
// 500 local members, and waits for a reader on another thread to receive
// the pass before the next. It reports the sending thread's CPU per send
// (cpu-ns/send), which includes the loopback receive the kernel does in the
// sender's context.
func BenchmarkLoopbackSend(b *testing.B) {
	for _, mode := range []struct {
		name  string
		batch int // sends per io_uring_enter; 0 for write(2)
	}{{"write", 0}, {"io_uring-32", 32}, {"io_uring-256", 256}} {
		b.Run(mode.name, func(b *testing.B) { benchSend(b, mode.batch) })
	}
}

func benchSend(b *testing.B, batch int) {
	const conns, size = 500, 120
	pairs := loopbackPairs(b, conns)
	recv := startDrain(b, pairs)
	var ring *sendRing
	if batch > 0 {
		var err error
		if ring, err = newSendRing(uint32(batch)); err != nil {
			b.Skipf("io_uring unavailable here: %v", err)
		}
		b.Cleanup(ring.close)
	}
	msg := make([]byte, size)
	res := make([]int32, batch)
	fds := make([]int, 0, batch)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = msg
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpu time.Duration
	want := 0
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(conns, b.N-sent)
		start := threadCPU()
		if ring == nil {
			for _, p := range pairs[:n] {
				if m, err := rawWrite(p.w, msg); err != nil || m != size {
					b.Fatalf("write: %d, %v", m, err)
				}
			}
		} else {
			for i := 0; i < n; i += batch {
				chunk := pairs[i:min(i+batch, n)]
				fds = fds[:0]
				for _, p := range chunk {
					fds = append(fds, p.w)
				}
				if err := ring.send(fds, bufs[:len(fds)], res[:len(fds)]); err != nil {
					b.Fatal(err)
				}
				for _, r := range res[:len(fds)] {
					if r != size {
						b.Fatalf("io_uring send: %d", r)
					}
				}
			}
		}
		cpu += threadCPU() - start
		sent += n
		want += n * size
		recv.wait(want)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/send")
}

// pair is a connected loopback TCP socket pair: w the gateway's end
// (non-blocking, no Nagle, as the gateway's), r the client's.
type pair struct{ w, r int }

func loopbackPairs(tb testing.TB, n int) []pair {
	tb.Helper()
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Listen(l, n); err != nil {
		tb.Fatal(err)
	}
	addr, err := unix.Getsockname(l)
	if err != nil {
		tb.Fatal(err)
	}
	pairs := make([]pair, 0, n)
	tb.Cleanup(func() {
		for _, p := range pairs {
			_ = unix.Close(p.w)
			_ = unix.Close(p.r)
		}
	})
	for range n {
		r, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Fatal(err)
		}
		if err := unix.Connect(r, addr); err != nil {
			_ = unix.Close(r)
			tb.Fatal(err)
		}
		w, _, err := unix.Accept4(l, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			_ = unix.Close(r)
			tb.Fatal(err)
		}
		pairs = append(pairs, pair{w: w, r: r})
		if err := unix.SetsockoptInt(w, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			tb.Fatal(err)
		}
	}
	return pairs
}

// drain reads every pair's client end on a thread of its own, as the load
// generator does, and counts the bytes.
type drain struct {
	mu    sync.Mutex
	cond  *sync.Cond
	total int
}

// wait returns once total bytes have arrived in all.
func (d *drain) wait(total int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.total < total {
		d.cond.Wait()
	}
}

func startDrain(tb testing.TB, pairs []pair) *drain {
	tb.Helper()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		tb.Fatal(err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		tb.Fatal(err)
	}
	fds := append([]int{stop}, make([]int, 0, len(pairs))...)
	for _, p := range pairs {
		fds = append(fds, p.r)
	}
	for _, fd := range fds {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			tb.Fatal(err)
		}
	}
	d := &drain{}
	d.cond = sync.NewCond(&d.mu)
	var done sync.WaitGroup
	done.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		events := make([]unix.EpollEvent, 128)
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.EpollWait(ep, events, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			got := 0
			for _, ev := range events[:n] {
				if int(ev.Fd) == stop {
					return
				}
				m, err := unix.Read(int(ev.Fd), buf)
				if err == nil {
					got += m
				}
			}
			d.mu.Lock()
			d.total += got
			d.mu.Unlock()
			d.cond.Broadcast()
		}
	})
	tb.Cleanup(func() {
		_, _ = unix.Write(stop, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		done.Wait()
		_ = unix.Close(stop)
		_ = unix.Close(ep)
	})
	return d
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}
