package gateway

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleychat/parley/internal/poller"
)

// A flusher writes the queues of parked connections that have no writer.
//
// At W1 (a message for each of 1,000 clients every 10 ms), the profile put a
// microsecond per delivery into waking, scheduling and parking each
// connection's writer goroutine, around a write(2) of 6 us. A parked
// connection (one nobody reads, see park) instead goes on a flusher's list,
// and the flusher writes the queues on its list one after another without
// waiting: a hub fan-out to 500 members wakes one goroutine, not 500. When
// a flusher falls behind, a connection's queue holds several frames by its
// turn and they go out as one message, as with a writer.
//
// It never waits on one client: the write does not block (see
// conn.flushParked), and a connection whose socket cannot take all of it
// gets a writer goroutine of its own for the rest.
//
// With a delay (PARLEY_WRITE_DELAY), a woken flusher waits that long before
// it writes: every client's messages of the interval then share one write,
// the lever for CPU per delivery when clients get a message every few
// milliseconds (see docs/benchmarks.md).
//
// With a poller.Batch (io_uring), it writes up to yieldEvery sockets with one
// system call rather than one each: about 6% less CPU per delivery at W1
// (docs/benchmarks.md).
type flusher struct {
	delay   time.Duration
	log     *slog.Logger
	batched prometheus.Counter // writes made through a poller.Batch
	mu      sync.Mutex
	running bool // run is taking connections; add fails otherwise
	dirty   []*conn
	spare   []*conn
	wake    chan struct{}
}

// yieldEvery is how many connections a flusher writes between letting other
// goroutines run, about 0.3 ms of writes at 10 us each, and so how many
// sockets one batch writes.
const yieldEvery = 32

func newFlusher(delay time.Duration, log *slog.Logger, batched prometheus.Counter) *flusher {
	return &flusher{delay: delay, log: log, batched: batched, wake: make(chan struct{}, 1)}
}

// add puts c on the list; it reports false when the flusher is not running,
// and the caller must then start c's writer.
func (f *flusher) add(c *conn) bool {
	f.mu.Lock()
	if !f.running {
		f.mu.Unlock()
		return false
	}
	f.dirty = append(f.dirty, c)
	first := len(f.dirty) == 1
	f.mu.Unlock()
	if first {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// run flushes connections until ctx ends; those still listed then get
// writers. batch, if not nil, is the flusher's to write with and to close.
func (f *flusher) run(ctx context.Context, batch *poller.Batch) {
	f.mu.Lock()
	f.running = true
	f.mu.Unlock()
	defer func() {
		if batch != nil {
			batch.Close()
		}
		f.mu.Lock()
		f.running = false
		left := f.dirty
		f.dirty = nil
		f.mu.Unlock()
		for _, c := range left {
			c.flushParked(false)
		}
	}()
	var delay *time.Timer
	if f.delay > 0 {
		delay = time.NewTimer(f.delay)
		delay.Stop()
		defer delay.Stop()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		}
		if delay != nil {
			delay.Reset(f.delay)
			select {
			case <-ctx.Done():
				return
			case <-delay.C:
			}
		}
		f.mu.Lock()
		list := f.dirty
		f.dirty = f.spare[:0]
		f.mu.Unlock()
		for i := 0; i < len(list); i += yieldEvery {
			chunk := list[i:min(i+yieldEvery, len(list))]
			if batch != nil {
				batch = f.writeBatch(chunk, batch)
			} else {
				for _, c := range chunk {
					c.flushParked(true)
				}
			}
			clear(chunk)
			if len(chunk) == yieldEvery {
				// Writes do not give the processor up (see
				// poller.Socket.Write), and a pass to thousands of
				// members takes milliseconds: let the broker's reader
				// and the senders' goroutines run meanwhile. The next
				// message then reaches queues this pass has not written
				// yet, and shares their write.
				runtime.Gosched()
			}
		}
		f.spare = list[:0]
	}
}

// flushWrite is one connection's part of a batch.
type flushWrite struct {
	c     *conn
	batch []queued
	index int   // in the poller.Batch
	err   error // from beginFlush
}

// writeBatch flushes chunk as flushParked would, writing all of it with one
// system call. It returns batch, or nil once the ring failed: the flusher
// then writes socket by socket, and what the failed batch did not write
// goes to writer goroutines.
func (f *flusher) writeBatch(chunk []*conn, batch *poller.Batch) *poller.Batch {
	var buf [yieldEvery]flushWrite
	writes := buf[:0]
	for _, c := range chunk {
		b, ok, err := c.beginFlush(true)
		if !ok {
			continue
		}
		writes = append(writes, flushWrite{c: c, batch: b, err: err, index: batch.Add(c.sock, c.sw.hold())})
	}
	werr := batch.Write()
	if werr == nil {
		f.batched.Add(float64(batch.Len()))
	}
	for _, w := range writes {
		n, err := 0, error(nil)
		if werr == nil {
			n, err = batch.Result(w.index)
		}
		pending, err := w.c.sw.wrote(n, err)
		if w.err != nil {
			err = w.err
		}
		w.c.endFlush(w.batch, pending, err)
	}
	batch.Reset()
	if werr != nil {
		f.log.Error("batched writes failed; writing socket by socket from now on", "err", werr)
		return nil
	}
	return batch
}
