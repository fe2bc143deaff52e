package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/gateway"
	"github.com/parleychat/parley/internal/gatewaytest"
)

// BenchmarkFanOutWebSocket measures a gateway's whole delivery path in one
// process, over loopback WebSockets: a publisher sends, the message is
// stored and published (embedded store and broker), and the hub pushes it to
// every member's queue, whose writer writes it to the member's socket.
// ns/delivery is the elapsed time per message per member, cpu-ns/delivery
// the process's CPU per delivery, both with the members' reading included;
// run it with -cpuprofile and look at the gateway's
// functions (conn.send, writeLoop, hub) to see where a delivery's CPU goes
// without RabbitMQ, Redis or another process in the picture.
//
//	go test ./internal/gateway -run '^$' -bench FanOutWebSocket -benchmem -cpuprofile cpu.out
//
// In the "backlog" runs the publisher keeps up to 64 messages per member in
// flight, so members' queues hold several messages and the gateway writes
// them as one WebSocket message (the batched path); in the "one-by-one" runs
// it sends the next message only when every member has the last one, so
// every delivery is a WebSocket message of its own, as in W1 at 100 msg/s.
func BenchmarkFanOutWebSocket(b *testing.B) {
	for _, members := range []int{100, 1000} {
		b.Run(strconv.Itoa(members)+"/backlog", func(b *testing.B) { benchFanOut(b, members, 64) })
		b.Run(strconv.Itoa(members)+"/one-by-one", func(b *testing.B) { benchFanOut(b, members, 1) })
	}
}

func benchFanOut(b *testing.B, members int, window int) {
	url := newFanOutGateway(b)
	ctx := context.Background()
	var received atomic.Int64 // message frames, all members together
	var readers sync.WaitGroup
	var conns []*websocket.Conn
	b.Cleanup(func() {
		for _, c := range conns {
			_ = c.CloseNow()
		}
		readers.Wait()
	})
	dial := func(i int) *websocket.Conn {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(dctx, url+"/ws?name=m"+strconv.Itoa(i), nil)
		if err != nil {
			b.Fatal(err)
		}
		c.SetReadLimit(-1)
		conns = append(conns, c)
		if err := c.Write(dctx, websocket.MessageText, []byte(`{"type":"join","room":"bench"}`)); err != nil {
			b.Fatal(err)
		}
		return c
	}
	joined := make(chan struct{}, members)
	for i := range members {
		c := dial(i)
		readers.Go(func() {
			buf := make([]byte, 0, 4096)
			for {
				_, r, err := c.Reader(ctx)
				if err != nil {
					return
				}
				buf = buf[:0]
				for {
					if len(buf) == cap(buf) {
						buf = append(buf, 0)[:len(buf)]
					}
					n, err := r.Read(buf[len(buf):cap(buf)])
					buf = buf[:len(buf)+n]
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return
					}
				}
				msgs := bytes.Count(buf, []byte(`{"type":"message"`))
				if bytes.Contains(buf, []byte(`{"type":"joined"`)) {
					joined <- struct{}{}
				}
				received.Add(int64(msgs))
			}
		})
	}
	for range members {
		select {
		case <-joined:
		case <-time.After(30 * time.Second):
			b.Fatal("members did not join")
		}
	}
	pub := dial(members) // also joins; its own copies are not counted
	readers.Go(func() {
		// The publisher's acks and copies must be read, or its queue fills.
		for {
			if _, _, err := pub.Read(ctx); err != nil {
				return
			}
		}
	})

	// Keep at most window messages per member in flight, far below the
	// gateway's send queue bound.
	frame := func(i int) []byte {
		return []byte(`{"type":"send","room":"bench","text":"hello, this is a chat message of ordinary length","client_msg_id":"c-` + strconv.Itoa(i) + `"}`)
	}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	for i := range b.N {
		for int64(i-window+1)*int64(members) > received.Load() {
			time.Sleep(50 * time.Microsecond)
		}
		if err := pub.Write(ctx, websocket.MessageText, frame(i)); err != nil {
			b.Fatal(err)
		}
	}
	want := int64(b.N) * int64(members)
	deadline := time.Now().Add(60 * time.Second)
	for received.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("members got %d of %d messages", received.Load(), want)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(want), "ns/delivery")
	// CPU of the whole process, the members' reading included.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(want), "cpu-ns/delivery")
}

// processCPU returns the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// newFanOutGateway runs a gateway on the embedded broker and store, with the
// limits a benchmark would trip lifted and logs discarded, and stops it when
// the benchmark ends.
func newFanOutGateway(b *testing.B) string {
	b.Helper()
	return gatewaytest.Start(b, gatewaytest.Config{
		Options: gateway.Options{SendRate: 1e9, SendBurst: 1e9, MaxConnsPerIP: 1e6},
	}).URL
}

// BenchmarkIdleConnMemory opens idle connections that each join a room and
// then read nothing, and reports the Go heap and goroutine stack they cost,
// per connection, both ends together (run with -benchtime 1x; the client
// end is small: a coder/websocket Conn and its buffers, no goroutine). Run
// with PARLEY_BENCH_HEAP_PROFILE=heap.out and -memprofilerate 1 to see which
// allocations stay while the connections are open.
//
//	PARLEY_BENCH_HEAP_PROFILE=heap.out go test ./internal/gateway -run '^$' -bench IdleConnMemory -benchtime 1x -memprofilerate 1
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 2000
	url := newFanOutGateway(b)
	ctx := context.Background()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var cs []*websocket.Conn
	b.Cleanup(func() {
		for _, c := range cs {
			_ = c.CloseNow()
		}
	})
	for range b.N {
		for i := range conns {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, _, err := websocket.Dial(dctx, url+"/ws?name=idle"+strconv.Itoa(i), nil)
			if err == nil {
				err = c.Write(dctx, websocket.MessageText, []byte(`{"type":"join","room":"idle`+strconv.Itoa(i%100)+`"}`))
			}
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, c)
		}
	}
	// Let the gateway answer every join before measuring.
	time.Sleep(2 * time.Second)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if path := os.Getenv("PARLEY_BENCH_HEAP_PROFILE"); path != "" {
		// -memprofile is written after the connections are closed; this is
		// the heap while they are open.
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
	}
	n := float64(len(cs))
	// Signed: with parked connections the stacks in use may shrink.
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/n, "heap-B/conn")
	b.ReportMetric(float64(int64(after.StackInuse)-int64(before.StackInuse))/n, "stack-B/conn")
}
