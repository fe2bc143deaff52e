package gateway

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/parleychat/parley/internal/auth"
	"github.com/parleychat/parley/internal/hub"
)

// maxBatchBytes bounds how much of a client's backlog is written as one
// WebSocket message (objects separated by '\n'): large enough that a backlog
// costs few writes, small enough that no client needs a large buffer.
const maxBatchBytes = 32 << 10

// conn is one client connection.
//
// Its handler goroutine reads and handles frames. Writing is done by a
// goroutine that exists only while there is something to write: an idle
// connection costs one goroutine, not two. Everything the connection is sent
// (its own replies and the hub's messages) goes through one bounded queue,
// so replies and messages reach the client in the order they were queued.
type conn struct {
	g  *Gateway
	ws *websocket.Conn
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
	// wrote says the writer wrote since the gateway's last look at it;
	// retire tells a waiting writer to end (see retireIdleWriter).
	wrote, retire bool
	closing       bool // a close was started; nothing more is queued
	// closeAfter is the close the writer sends once the queue is written
	// (see closeFlushed); nil for a close that drops the queue.
	closeAfter *closeReq
	// handling is true while the read loop handles a frame, and draining
	// once the gateway shuts down (see drain).
	handling, draining bool

	// wake tells a waiting writer that there is more to write.
	wake chan struct{}
	// writeCtx is never done: writes are bounded by the gateway's watchdog,
	// which closes a connection whose write started (writeStart, Unix ns;
	// 0 when not writing) longer than WriteTimeout ago.
	writeCtx   context.Context
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
	start := !c.writing && !shed.mustClose && c.out.len() > 0
	running := c.writing
	if start {
		c.writing = true
		c.done.Add(1)
	}
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
	if start {
		go c.writeLoop()
	} else if running {
		c.wakeWriter()
	}
}

// writeLoop writes the queue, waits for more, and ends when the connection
// closes or the gateway retires it for having nothing to write.
//
// It waits on its wake channel alone: W1's profile (docs/benchmarks.md)
// put 0.8us per delivery in a three-way select and in resetting an idle
// timer each time the queue emptied, which at one message per write was
// every delivery. Idle writers are retired from the gateway's once-a-second
// tick instead (see retireIdleWriter), so a busy connection keeps one
// goroutine and an idle one none.
func (c *conn) writeLoop() {
	defer c.done.Done()
	for {
		c.mu.Lock()
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
			if c.retire {
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
			if !errors.Is(err, context.Canceled) && websocket.CloseStatus(err) == -1 {
				c.g.log.Debug("write failed", "user", c.userID, "err", err)
			}
			// The connection is broken: a close handshake would fail too.
			c.mu.Lock()
			c.writing, c.closing = false, true
			c.out.reset()
			c.mu.Unlock()
			_ = c.ws.CloseNow()
			return
		}
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
}

// write writes a batch of frames as one WebSocket message, separated by
// newlines. Its time is bounded by WriteTimeout through the gateway's
// watchdog (see Gateway.closeStuckWriters) rather than a context per write,
// which would cost a timer, a child context and garbage on every write.
func (c *conn) write(batch []queued) error {
	c.writeStart.Store(time.Now().UnixNano())
	defer c.writeStart.Store(0)
	if len(batch) == 1 {
		return c.ws.Write(c.writeCtx, websocket.MessageText, batch[0].Data)
	}
	buf := c.g.batchBufs.Get().(*bytes.Buffer)
	defer c.g.batchBufs.Put(buf)
	buf.Reset()
	for i, it := range batch {
		if i > 0 {
			buf.WriteByte('\n')
		}
		buf.Write(it.Data)
	}
	return c.ws.Write(c.writeCtx, websocket.MessageText, buf.Bytes())
}

// wakeWriter tells a waiting writer there is something to do.
func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default: // it has been told already
	}
}

// retireIdleWriter ends the connection's writer if it has written nothing
// since the last call. The gateway calls it for every connection once a
// second, so a writer lingers one to two seconds after its last write: long
// enough that a busy connection does not start a goroutine per message,
// short enough that idle ones keep none.
func (c *conn) retireIdleWriter() {
	c.mu.Lock()
	idle := c.writing && !c.wrote && c.out.len() == 0 && c.closeAfter == nil
	c.wrote = false
	if idle {
		c.retire = true
	}
	c.mu.Unlock()
	if idle {
		c.wakeWriter()
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
	c.mu.Unlock()
	c.wakeWriter() // a waiting writer ends now rather than after its linger
	go func() {
		defer c.done.Done()
		// The close handshake waits for the peer; the library bounds it.
		_ = c.ws.Close(code, reason)
	}()
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
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	} else {
		c.wakeWriter()
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

// ping checks that the peer is alive. It is called by the gateway's pinger
// from a short-lived goroutine, since a ping waits for its pong.
func (c *conn) ping() {
	ctx, cancel := context.WithTimeout(c.ctx, c.g.opts.PongTimeout)
	defer cancel()
	start := time.Now()
	if err := c.ws.Ping(ctx); err != nil {
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if !closing {
			c.g.log.Info("closing unresponsive client", "user", c.userID, "err", err)
			c.g.metrics.deadClosed.Inc()
			// A peer that does not answer pings will not answer a close
			// handshake either.
			_ = c.ws.CloseNow()
		}
		return
	}
	c.g.metrics.pingRTT.Observe(time.Since(start).Seconds())
}
