package gateway

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/parleychat/parley/internal/auth"
	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/poller"
)

// maxBatchBytes bounds how much of a client's backlog is written as one
// WebSocket message (objects separated by '\n'): large enough that a backlog
// costs few writes, small enough that no client needs a large buffer.
const maxBatchBytes = 32 << 10

// conn is one client connection.
//
// Its frames are read and handled by a goroutine that exists only while the
// client has something to say: once everything it sent is handled, the
// connection parks and the poller starts a new one when more comes (see
// park). Writing is done by another goroutine that exists only while there
// is something to write. An idle connection thus costs no goroutine at all.
// Everything the connection is sent (its own replies and the hub's
// messages) goes through one bounded queue, so replies and messages reach
// the client in the order they were queued.
//
// Fields the comments call the handler's are used by one reading goroutine
// at a time; parking and resuming hand them over under mu.
type conn struct {
	g  *Gateway
	ws *websocket.Conn
	// netConn and br are the socket and the library's read buffer under ws,
	// sw what the library writes to (see smallBuffers).
	netConn net.Conn
	br      *bufio.Reader
	sw      *socketWriter
	ip      netip.Addr
	// sock is the socket as the poller sees it, registered when the
	// connection first parks; noPark is set, by the handler, when it cannot.
	sock   *poller.Socket
	noPark bool
	// flusher writes the queue while the connection is parked.
	flusher *flusher
	// who is the session's identity; only the handler goroutine uses it,
	// since a refresh replaces it. userID never changes (a refresh is for
	// the same user), so any goroutine may log it.
	who    auth.Identity
	userID string
	// presenceID names the connection in the presence store.
	presenceID string
	ctx        context.Context // ends when the gateway is stopped for good
	sends      *rate.Limiter
	// strikes is spent by rejected frames; when it runs out the client is
	// closed as abusive.
	strikes      *rate.Limiter
	joinDeadline *time.Timer
	// expiry fires when the session's token expires, and then again when
	// the grace for a refresh is over.
	expiryMu sync.Mutex
	expiry   *time.Timer

	// subs is the connection's rooms, and lastTyping when it last relayed
	// typing in each; only the handler goroutine uses them.
	subs        map[string]*hub.Subscription
	lastTyping  map[string]time.Time
	lastLatency time.Time

	mu      sync.Mutex
	out     outQueue
	writing bool // a writer goroutine is running (writing or waiting for more)
	// flushing is true while the connection is on its flusher's list.
	flushing bool
	// wrote says the writer wrote since the gateway's last look at it,
	// busy that it had written in the second before; retire tells a
	// waiting writer to end (see tick).
	wrote, busy, retire bool
	closing             bool // a close was started; nothing more is queued
	// closeAfter is the close the writer sends once the queue is written
	// (see closeFlushed); nil for a close that drops the queue.
	closeAfter *closeReq
	// handling is true while the read loop handles a frame, and draining
	// once the gateway shuts down (see drain).
	handling, draining bool
	// parked is true while no goroutine reads the connection and the poller
	// watches its socket instead (see park).
	parked bool
	// pingSent is when the ping awaiting its pong was written, Unix ns (0:
	// none); pingOwed says the socket was full and it is still to be
	// written, pingDue that the writer is to write it (see ping).
	pingSent          int64
	pingOwed, pingDue bool
	// pinging is true while the library's Ping waits for its pong;
	// lastPong is when the last pong came, Unix ns.
	pinging  bool
	lastPong int64

	// wake tells a waiting writer that there is more to write.
	wake chan struct{}
	// writeStart is when the write in progress started, Unix ns (0 when
	// not writing): writes are bounded by the gateway's watchdog, which
	// closes a connection whose write started longer than WriteTimeout ago.
	writeStart atomic.Int64

	// done counts the writer and closer goroutines, so the handler can wait
	// for them before it returns.
	done sync.WaitGroup

	badFrames int
}

// Push implements hub.Member.
func (c *conn) Push(f hub.Frame) { c.push(f) }

// send queues one of the connection's own frames (replies, errors, ...),
// which are never shed.
func (c *conn) send(data []byte) { c.push(hub.Frame{Data: data}) }

// push queues f. It never blocks: when the client falls behind, the queue
// sheds load in tiers (see outQueue), and only a client that does not read
// at all is closed with 1013 (try again later); it resumes from where it was
// when it reconnects.
func (c *conn) push(f hub.Frame) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	shed := c.out.push(f)
	idle := !c.writing && !c.flushing && !shed.mustClose && c.out.len() > 0
	// A parked connection's queue is written by its flusher (see flusher).
	flush := idle && c.parked && !c.pinging
	start := idle && !flush
	running := c.writing
	if start {
		c.writing = true
		c.done.Add(1)
	}
	c.flushing = c.flushing || flush
	queued := c.out.bytes
	c.mu.Unlock()

	m := c.g.metrics
	if shed.ephemeralDropped > 0 || shed.newDropped {
		m.backpressure.WithLabelValues("drop_ephemeral").Inc()
	}
	if shed.messagesGapped > 0 {
		m.backpressure.WithLabelValues("gap").Inc()
		c.g.log.Info("client falling behind: replaced its backlog by a gap", "user", c.userID, "messages", shed.messagesGapped)
	}
	if shed.mustClose {
		m.backpressure.WithLabelValues("disconnect").Inc()
		m.slowClosed.Inc()
		c.g.log.Info("closing slow client", "user", c.userID, "queued_bytes", queued)
		c.close(websocket.StatusTryAgainLater, "too slow: send queue full")
		return
	}
	switch {
	case flush:
		if !c.flusher.add(c) {
			c.flushParked(false)
		}
	case start:
		go c.writeLoop()
	case running:
		c.wakeWriter()
	}
}

// flushParked is the flusher's turn at the connection: with inline, it
// writes what is queued without waiting, if the connection is still parked
// and has no writer; anything it could not write, or cannot write that way,
// goes to a writer goroutine.
//
// While it writes it is the connection's writer (writing is set, so pushes
// only queue and pings are left to it), but it does not hold mu: the hub's
// fan-out must not wait for a write(2). The library orders its frames, and
// the socketWriter its writes, with those of a reader or close that starts
// meanwhile.
func (c *conn) flushParked(inline bool) {
	batch, ok, err := c.beginFlush(inline)
	if !ok {
		return
	}
	pending, werr := c.sw.flushNow(c.sock)
	if err == nil {
		err = werr
	}
	c.endFlush(batch, pending, err)
}

// beginFlush is flushParked up to the write: it reports whether there is a
// write to make, and if so has gathered the batch it takes from the queue,
// err saying the batch could not be framed. Either way the caller must then
// write what the socketWriter gathered (the library's frames, at least) and
// call endFlush with the first error.
func (c *conn) beginFlush(inline bool) (batch []queued, ok bool, err error) {
	c.mu.Lock()
	c.flushing = false
	if c.writing || c.closing || c.out.len() == 0 {
		c.mu.Unlock() // someone else writes, or there is nothing to
		return nil, false, nil
	}
	if !inline || !c.parked || c.pinging {
		c.writing = true
		c.done.Add(1)
		c.mu.Unlock()
		go c.writeLoop()
		return nil, false, nil
	}
	batch = c.out.take(maxBatchBytes)
	c.writing = true
	c.done.Add(1)
	c.mu.Unlock()

	c.sw.collect()
	return batch, true, c.sw.text(batch)
}

// endFlush finishes a flush once its write was made: pending says the
// socket did not take all of it.
func (c *conn) endFlush(batch []queued, pending bool, err error) {
	c.mu.Lock()
	c.wrote, c.retire = true, false
	// What the socket did not take, a ping or a close that came meanwhile:
	// a writer goroutine takes over. Messages that came meanwhile wait for
	// the flusher's next round, with those that come until then.
	more := pending || c.pingDue || c.closeAfter != nil
	requeue := err == nil && !more && c.out.len() > 0
	if err == nil && !more {
		c.writing = false
	}
	c.flushing = requeue
	c.mu.Unlock()
	switch {
	case err != nil:
		c.done.Done()
		c.writeFailed(err)
	case more:
		c.countWritten(batch)
		go c.writeLoop() // inherits the done count
	default:
		c.countWritten(batch)
		c.done.Done()
		if requeue && !c.flusher.add(c) {
			c.flushParked(false)
		}
	}
}

// writeLoop writes the queue and, if the connection has been busy, waits for
// more; it ends when the connection closes or the gateway retires it for
// having nothing to write.
//
// It waits on its wake channel alone: W1's profile (docs/benchmarks.md)
// put 0.8us per delivery in a three-way select and in resetting an idle
// timer each time the queue emptied, which at one message per write was
// every delivery. Idle writers are retired from the gateway's once-a-second
// tick instead (see tick), so a busy connection keeps one goroutine and an
// idle one none. A connection that was not busy in the last second does
// not wait at all: after a reconnect storm, thousands of writers lingering
// after their one welcome raised the gateway's peak memory, and so its RSS.
func (c *conn) writeLoop() {
	defer c.done.Done()
	for {
		if c.sw.pending() {
			// What the flusher could not write goes first.
			c.writeStart.Store(time.Now().UnixNano())
			err := c.sw.flush()
			c.writeStart.Store(0)
			if err != nil {
				c.writeFailed(err)
				return
			}
		}
		c.mu.Lock()
		if c.pingDue {
			c.pingDue = false
			if c.parked && !c.closing {
				c.writePingLocked(time.Now())
			}
		}
		if c.closing && c.closeAfter == nil {
			c.writing = false
			c.mu.Unlock()
			return
		}
		if c.out.len() == 0 {
			if after := c.closeAfter; after != nil {
				c.writing = false
				c.mu.Unlock()
				// Everything queued before the close is written.
				_ = c.ws.Close(after.code, after.reason)
				return
			}
			if c.retire || !c.busy {
				c.writing, c.retire = false, false
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			<-c.wake
			continue
		}
		c.retire = false
		c.wrote = true
		batch := c.out.take(maxBatchBytes)
		c.mu.Unlock()

		if err := c.write(batch); err != nil {
			c.writeFailed(err)
			return
		}
		c.countWritten(batch)
	}
}

// writeFailed ends the writer after a failed write: the connection is
// broken, and a close handshake would fail too.
func (c *conn) writeFailed(err error) {
	if !errors.Is(err, context.Canceled) && websocket.CloseStatus(err) == -1 {
		c.g.log.Debug("write failed", "user", c.userID, "err", err)
	}
	c.mu.Lock()
	c.writing, c.closing = false, true // no new writer starts
	c.mu.Unlock()
	c.abort()
}

// countWritten counts a written batch in the metrics and statistics.
func (c *conn) countWritten(batch []queued) {
	c.g.metrics.framesOut.Inc()
	c.g.metrics.messagesOut.Add(float64(len(batch)))
	if c.g.stats != nil {
		n := 0
		for _, it := range batch {
			if it.Kind == hub.KindMessage && !it.gap {
				n++
			}
		}
		c.g.stats.Delivered(n)
	}
}

// write writes a batch of frames as one WebSocket message, separated by
// newlines. Its time is bounded by WriteTimeout through the gateway's
// watchdog (see Gateway.closeStuckWriters) rather than a context per write,
// which would cost a timer, a child context and garbage on every write.
func (c *conn) write(batch []queued) error {
	c.writeStart.Store(time.Now().UnixNano())
	defer c.writeStart.Store(0)
	c.sw.collect()
	err := c.sw.text(batch)
	if ferr := c.sw.flush(); err == nil {
		err = ferr
	}
	return err
}

// wakeWriter tells a waiting writer there is something to do.
func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default: // it has been told already
	}
}

// close starts closing the connection with code; the handler's read loop ends
// when it is done. It never blocks and only the first call counts.
func (c *conn) close(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.out.reset()
	c.done.Add(1)
	resume := c.unparkLocked()
	c.mu.Unlock()
	c.wakeWriter() // a waiting writer ends now rather than after its linger
	go func() {
		defer c.done.Done()
		// The close handshake waits for the peer; the library bounds it.
		_ = c.ws.Close(code, reason)
	}()
	if resume {
		go c.serve()
	}
}

// closeReq is a close to send once the queue is written.
type closeReq struct {
	code   websocket.StatusCode
	reason string
}

// closeFlushed closes the connection with code after what is queued for it
// has been written; nothing more is queued meanwhile.
func (c *conn) closeFlushed(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.closeAfter = &closeReq{code: code, reason: reason}
	start := !c.writing
	if start {
		c.writing = true
		c.done.Add(1)
	}
	resume := c.unparkLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	} else {
		c.wakeWriter()
	}
	if resume {
		go c.serve()
	}
}

// drain closes the connection with 1012 as soon as it is not in the middle
// of a frame: a send being stored and published is acknowledged first.
func (c *conn) drain() {
	c.mu.Lock()
	busy := c.handling
	c.draining = true
	c.mu.Unlock()
	if !busy {
		c.closeFlushed(websocket.StatusServiceRestart, "gateway restarting; reconnect")
	}
}

// beginFrame is called by the read loop before it handles a frame. It
// reports false once the connection drains: the frame is not handled, and
// its sender, getting no answer, retries on the gateway it reconnects to.
func (c *conn) beginFrame() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining || c.closing {
		return false
	}
	c.handling = true
	// A client that sends is alive, whether or not its pong came.
	c.pingSent, c.pingOwed = 0, false
	return true
}

// endFrame is called by the read loop after it handled a frame; a drain
// that came meanwhile closes the connection now.
func (c *conn) endFrame() {
	c.mu.Lock()
	c.handling = false
	draining := c.draining
	c.mu.Unlock()
	if draining {
		c.closeFlushed(websocket.StatusServiceRestart, "gateway restarting; reconnect")
	}
}
