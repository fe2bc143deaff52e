package gateway

import (
	"bytes"
	"context"
	"errors"
	"sync"
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
	g     *Gateway
	ws    *websocket.Conn
	who   auth.Identity
	ctx   context.Context // ends when the gateway is stopped for good
	sends *rate.Limiter
	// strikes is spent by rejected frames; when it runs out the client is
	// closed as abusive.
	strikes      *rate.Limiter
	joinDeadline *time.Timer

	// subs is the connection's rooms; only the handler goroutine uses it.
	subs map[string]*hub.Subscription

	mu      sync.Mutex
	queue   [][]byte
	queued  int  // bytes in queue
	writing bool // a writer goroutine is running
	closing bool // a close was started; nothing more is queued
	spare   [][]byte

	// done counts the writer and closer goroutines, so the handler can wait
	// for them before it returns.
	done sync.WaitGroup

	badFrames int
}

// Push implements hub.Member.
func (c *conn) Push(f hub.Frame) { c.send(f.Data) }

// send queues one encoded frame. It never blocks: a client whose queue passes
// the gateway's bound is closed with 1013 (try again later), and resumes
// from where it was when it reconnects.
func (c *conn) send(data []byte) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.queued+len(data) > c.g.opts.SendQueueBytes {
		c.mu.Unlock()
		c.g.metrics.slowClosed.Inc()
		c.g.log.Info("closing slow client", "user", c.who.User.ID, "queued_bytes", c.queued)
		c.close(websocket.StatusTryAgainLater, "too slow: send queue full")
		return
	}
	c.queue = append(c.queue, data)
	c.queued += len(data)
	start := !c.writing
	c.writing = true
	if start {
		c.done.Add(1)
	}
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// writeLoop writes the queue until it is empty, then ends.
func (c *conn) writeLoop() {
	defer c.done.Done()
	var buf bytes.Buffer
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.closing {
			c.writing = false
			c.mu.Unlock()
			return
		}
		// Take as much of the queue as fits in one batch (at least one frame).
		n, size := 0, 0
		for n < len(c.queue) && (n == 0 || size+len(c.queue[n])+1 <= maxBatchBytes) {
			size += len(c.queue[n]) + 1
			n++
		}
		batch := c.queue[:n]
		var msg []byte
		if n == 1 {
			msg = batch[0]
		} else {
			buf.Reset()
			for i, b := range batch {
				if i > 0 {
					buf.WriteByte('\n')
				}
				buf.Write(b)
			}
			msg = buf.Bytes()
		}
		clear(batch)
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = c.spare[:0]
			c.spare = batch[:0]
		}
		c.queued -= size - n
		c.mu.Unlock()

		ctx, cancel := context.WithTimeout(c.ctx, c.g.opts.WriteTimeout)
		err := c.ws.Write(ctx, websocket.MessageText, msg)
		cancel()
		if err != nil {
			if !errors.Is(err, context.Canceled) && websocket.CloseStatus(err) == -1 {
				c.g.log.Debug("write failed", "user", c.who.User.ID, "err", err)
			}
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			c.close(websocket.StatusGoingAway, "write failed")
			return
		}
		c.g.metrics.framesOut.Inc()
		c.g.metrics.messagesOut.Add(float64(n))
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
	c.queue, c.queued = nil, 0
	c.done.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.done.Done()
		// The close handshake waits for the peer; the library bounds it.
		_ = c.ws.Close(code, reason)
	}()
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
			c.g.log.Info("closing unresponsive client", "user", c.who.User.ID, "err", err)
			c.g.metrics.deadClosed.Inc()
			// A peer that does not answer pings will not answer a close
			// handshake either.
			_ = c.ws.CloseNow()
		}
		return
	}
	c.g.metrics.pingRTT.Observe(time.Since(start).Seconds())
}
