package gateway

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/parleychat/parley/internal/poller"
)

// Parking: an idle connection keeps no goroutine.
//
// A goroutine blocked in a read is most of what an idle connection costs
// (its stack grows to 8 KB handling a join). So once a connection's reading
// goroutine has handled everything the client sent, and the library has no
// bytes buffered, it arms the socket with the gateway's poller and ends.
// When the client sends more, the poller calls readable, which starts a new
// reading goroutine; a close started meanwhile does the same, so that the
// goroutine sees the connection end and cleans up (see unparkLocked).
//
// Pings need care. The library's Ping waits for its pong, which only a
// reading goroutine sees, and a reading goroutine whose library has read a
// control frame blocks waiting for the next data frame: pinging through the
// library would give every idle connection its goroutine back after the
// first ping. So a parked connection is pinged by writing the ping frame to
// its socket directly, and pongs are taken off the stream before the
// library sees them: from the head of the socket by readable, from the head
// of the read buffer by park. Writing and reading past the library is safe
// because a parked connection has no reader (which could answer the
// client's pings or close), and the ping is written only when no writer is
// running and no close has started, or by the writer itself, all under mu.
// A connection that is being read when its ping is due is pinged through
// the library. A client that pings the gateway (browsers do not) keeps a
// reading goroutine until its next frame.

// pingFrame is an unmasked WebSocket ping with no payload.
var pingFrame = []byte{0x89, 0x00}

// park hands the connection to the poller if the library has nothing
// buffered, after waiting readLinger for more if linger is set; it reports
// whether it did, and the caller's goroutine must then end without touching
// the handler's fields.
func (c *conn) park(linger bool) bool {
	p := c.g.poller
	if p == nil || c.noPark {
		return false
	}
	if c.sock == nil {
		sc, ok := c.netConn.(syscall.Conn)
		if !ok {
			c.noPark = true
			return false
		}
		s, err := p.Register(sc, c.readable)
		if err != nil {
			c.noPark = true
			c.g.log.Debug("connection cannot park", "user", c.userID, "err", err)
			return false
		}
		c.sock = s
	}
	if !c.quiet(false) {
		return false
	}
	// Parking and resuming cost two scheduling hops and a few system calls
	// per frame, which showed in the send latency of W1's publishers (ack
	// p50 +3 ms on a saturated machine). A client that keeps sending is
	// waited for instead, reading the pongs that come meanwhile. Only a
	// sender: a goroutine lingering after every join made a reconnect
	// storm's peak, and so the gateway's RSS, a quarter higher.
	for end := time.Now().Add(readLinger); linger; {
		left := time.Until(end)
		if left <= 0 || !c.sock.WaitReadable(left) {
			break
		}
		if !c.takePongs() {
			return false // a frame for the library
		}
	}
	if !c.quiet(true) {
		return false
	}
	if err := c.sock.Arm(); err != nil {
		c.mu.Lock()
		mine := c.parked
		c.parked = false
		c.mu.Unlock()
		if !mine {
			return true // a close took the connection over meanwhile
		}
		// The poller has stopped (the gateway is shutting down).
		c.noPark = true
		return false
	}
	return true
}

// readLinger is how long a reading goroutine waits for more from a client
// that sent a message before the connection parks.
const readLinger = time.Second

// quiet reports whether the library has nothing buffered to read, after
// dropping the pongs it has; with park, it parks the connection if so.
func (c *conn) quiet(park bool) bool {
	c.mu.Lock()
	// Under mu, no close has started, so the library's close handshake is
	// not reading the buffer.
	if c.closing {
		c.mu.Unlock()
		return false
	}
	rtt := c.skipPongsLocked()
	quiet := c.br.Buffered() == 0
	c.parked = quiet && park
	c.mu.Unlock()
	c.observePing(rtt)
	return quiet
}

// skipPongsLocked drops the whole pongs at the head of the library's read
// buffer and notes them, returning the round trip of the written ping they
// answer. The library would read them and then block waiting for the next
// frame, keeping the reading goroutine the connection is about to give up.
func (c *conn) skipPongsLocked() time.Duration {
	b, _ := c.br.Peek(c.br.Buffered()) // what is buffered: no read
	k := pongBytes(b)
	if k == 0 {
		return 0
	}
	_, _ = c.br.Discard(k)
	return c.pongedLocked(time.Now())
}

// readable is the poller's callback for a parked connection: the client
// sent something or went away, or the poller stopped. Pongs are read here;
// anything else is read by a new reading goroutine.
func (c *conn) readable() {
	c.mu.Lock()
	if !c.parked {
		c.mu.Unlock()
		return
	}
	rtt, more := c.readPongsLocked()
	stay := !more && c.sock.Arm() == nil
	if !stay {
		c.parked = false
	}
	c.mu.Unlock()
	c.observePing(rtt)
	if !stay {
		go c.serve()
	}
}

// takePongs reads the pongs at the head of the socket of a connection whose
// reading goroutine is not in the library, and reports whether that was all
// there was to read.
func (c *conn) takePongs() bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	rtt, more := c.readPongsLocked()
	c.mu.Unlock()
	c.observePing(rtt)
	return !more
}

// readPongsLocked consumes and notes the whole pong frames at the head of
// the socket of a connection nobody else reads, returning the round trip of
// the written ping they answer (0: none). more reports that something else
// is there (a frame, the end of the stream, an error) for the library.
func (c *conn) readPongsLocked() (rtt time.Duration, more bool) {
	var buf [128]byte
	n, err := c.sock.Peek(buf[:])
	if errors.Is(err, poller.ErrWouldBlock) {
		return 0, false
	}
	if err != nil || n == 0 {
		return 0, true
	}
	k := pongBytes(buf[:n])
	if k == 0 {
		return 0, true
	}
	if err := c.sock.Discard(k); err != nil {
		return 0, true
	}
	return c.pongedLocked(time.Now()), k < n
}

// pongBytes returns how many bytes at the head of b are whole pong frames
// as a client sends them: final, masked, with a payload of at most 125
// bytes. Anything else is left to the library, which validates it.
func pongBytes(b []byte) int {
	k := 0
	for len(b)-k >= 2 && b[k] == 0x8A && b[k+1]&0x80 != 0 && b[k+1]&0x7F <= 125 {
		size := 2 + 4 + int(b[k+1]&0x7F)
		if k+size > len(b) {
			break
		}
		k += size
	}
	return k
}

// unparkLocked takes a parked connection back from the poller for a close;
// when it reports true, the caller starts serve, which sees the connection
// end and cleans up.
func (c *conn) unparkLocked() bool {
	if !c.parked {
		return false
	}
	c.parked = false
	return true
}

// abort cuts the connection off without a close handshake: the peer is gone
// or does not answer.
func (c *conn) abort() {
	c.mu.Lock()
	c.closing = true
	c.out.reset()
	resume := c.unparkLocked()
	c.mu.Unlock()
	c.wakeWriter()
	_ = c.ws.CloseNow()
	if resume {
		go c.serve()
	}
}

// ping checks that the client is alive; the gateway's pinger calls it for
// every connection once per ping interval. A parked connection is pinged
// here (or by its writer, if one is running), and its pong is read by
// readable or by the next reading goroutine; tick closes it if the pong
// does not come in time. Otherwise ping returns a function that pings
// through the library, which waits for the pong and so needs a goroutine.
func (c *conn) ping(now time.Time) (slow func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing || c.pingSent != 0 || c.pinging:
		return nil
	case c.parked:
		if c.pingParkedLocked(now) {
			c.wakeWriter()
		}
		return nil
	}
	c.pinging = true
	return c.libraryPing
}

// pingParkedLocked pings a parked connection: it writes the ping now, or,
// while a writer runs, leaves it to the writer to write between its writes
// and reports that the writer is to be woken.
func (c *conn) pingParkedLocked(now time.Time) (wakeWriter bool) {
	if c.writing {
		c.pingDue = true
		return true
	}
	c.writePingLocked(now)
	return false
}

// writePingLocked writes a ping to the socket of a parked connection, which
// nothing else is writing (see ping). When the socket's buffer is full the
// ping is owed and tick tries again; the pong timeout runs from the first
// attempt, as it would for a ping blocked in a write.
func (c *conn) writePingLocked(now time.Time) {
	if c.pingSent == 0 {
		c.pingSent = now.UnixNano()
	}
	n, err := c.sock.Write(pingFrame)
	c.pingOwed = errors.Is(err, poller.ErrWouldBlock)
	if !c.pingOwed && (err != nil || n != len(pingFrame)) {
		// A broken socket, or half a frame written: the stream cannot go
		// on. Timing the ping out at once closes the connection at the
		// next tick.
		c.pingSent = 1
	}
}

// libraryPing pings through the library, for a connection that is being
// read. The connection may park before the pong comes; readable then reads
// the pong, the library's Ping waits in vain, and lastPong tells the client
// answered. (Keeping the connection from parking instead would leave its
// reading goroutine blocked after the pong until the client sends a frame.)
func (c *conn) libraryPing() {
	ctx, cancel := context.WithTimeout(c.ctx, c.g.opts.PongTimeout)
	defer cancel()
	start := time.Now()
	err := c.ws.Ping(ctx)
	c.mu.Lock()
	c.pinging = false
	closing := c.closing
	answered := c.lastPong >= start.UnixNano()
	rtt := time.Duration(c.lastPong - start.UnixNano())
	c.mu.Unlock()
	switch {
	case err == nil:
		c.observePing(time.Since(start))
	case answered:
		c.observePing(rtt)
	case !closing:
		c.g.log.Info("closing unresponsive client", "user", c.userID, "err", err)
		c.g.metrics.deadClosed.Inc()
		c.abort()
	}
}

// ponged notes a pong the library read (see the AcceptOptions in serveWS).
func (c *conn) ponged() {
	c.mu.Lock()
	rtt := c.pongedLocked(time.Now())
	c.mu.Unlock()
	c.observePing(rtt)
}

// observePing records a ping's round trip, if there was one.
func (c *conn) observePing(rtt time.Duration) {
	if rtt > 0 {
		c.g.metrics.pingRTT.Observe(rtt.Seconds())
	}
}

// pongedLocked notes a pong and ends the wait for the written ping's,
// returning its round trip (0 if none was awaited).
func (c *conn) pongedLocked(now time.Time) time.Duration {
	c.lastPong = now.UnixNano()
	if c.pingSent == 0 || c.pingOwed {
		return 0
	}
	rtt := time.Duration(now.UnixNano() - c.pingSent)
	c.pingSent = 0
	return max(rtt, 1)
}

// tick is the gateway's once-a-second look at the connection. It notes
// whether the writer was busy and retires one that wrote nothing since the
// last tick, so the writer of a busy connection lingers one to two seconds
// after its last write (long enough that it does not start a goroutine per
// message, short enough that idle connections keep none; see writeLoop); it
// writes an owed ping; and it reports whether the written ping went
// unanswered for longer than pongTimeout.
func (c *conn) tick(now time.Time, pongTimeout time.Duration) (unresponsive bool) {
	c.mu.Lock()
	idle := c.writing && !c.wrote && c.out.len() == 0 && c.closeAfter == nil
	c.busy, c.wrote = c.wrote, false
	if idle {
		c.retire = true
	}
	if c.pingOwed {
		switch {
		case !c.parked || c.closing:
			// Being read again: the library pings it next time.
			c.pingSent, c.pingOwed = 0, false
		default:
			c.pingParkedLocked(now)
		}
	}
	unresponsive = c.pingSent != 0 && !c.closing && now.UnixNano()-c.pingSent > int64(pongTimeout)
	wake := idle || c.pingDue
	c.mu.Unlock()
	if wake {
		c.wakeWriter()
	}
	return unresponsive
}
