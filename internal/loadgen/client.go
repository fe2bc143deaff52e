package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"

	"github.com/coder/websocket"
)

// maxMessageBytes bounds one WebSocket message from a gateway (a batch of
// frames); the gateway's own batches stay far below it.
const maxMessageBytes = 8 << 20

// ackRing is how many send times a publisher remembers, to time acks.
const ackRing = 4096

// client is one connection. After the handshake its reader goroutine owns
// everything but the atomics and ws (on which a publisher also writes).
type client struct {
	s    *session
	id   int
	room int
	ws   *websocket.Conn
	pub  *publisher // nil unless the client publishes

	joinSent int64 // when the join was sent; set before the reader starts

	buf    []byte
	base   int64 // the room's seq when the client joined
	based  bool
	seen   []uint64 // bit seq-base-1: that seq was delivered
	maxSeq int64
}

// publisher is the publishing side of a client.
type publisher struct {
	c     *client
	id    int
	frame []byte // the send frame being built; only the publish loop uses it
	sent  [maxSteps]atomic.Int64
	acked [maxSteps]atomic.Int64
	// failed counts sends answered with an error frame.
	failed [maxSteps]atomic.Int64
	// sentAt[k % ackRing] is when message k was sent, for ack latency.
	sentAt [ackRing]atomic.Int64
}

// answered reports whether every send of step has been acked or refused.
func (p *publisher) answered(step int) bool {
	return p.acked[step].Load()+p.failed[step].Load() >= p.sent[step].Load()
}

// read handles the gateway's messages until the connection ends. It uses a
// context that is never cancelled, so that the library sets no timer per
// read: the session closes the connection to end it.
func (c *client) read() {
	ctx := context.Background()
	for {
		_, r, err := c.ws.Reader(ctx)
		if err == nil {
			err = c.readMessage(r)
		}
		if err != nil {
			c.s.noteEnd(c, err)
			return
		}
		c.handle(c.buf)
	}
}

// readMessage reads one WebSocket message into c.buf, growing it as needed.
func (c *client) readMessage(r io.Reader) error {
	c.buf = c.buf[:0]
	for {
		if len(c.buf) == cap(c.buf) {
			if cap(c.buf) >= maxMessageBytes {
				return fmt.Errorf("message over %d bytes", maxMessageBytes)
			}
			c.buf = slices.Grow(c.buf, max(512, cap(c.buf)))
		}
		n, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+n]
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// handle takes one WebSocket message: one frame or several separated by
// '\n'.
func (c *client) handle(data []byte) {
	s := c.s
	now := s.now()
	frames := int64(0)
	var delivered [maxSteps]int32
	got := false
	for len(data) > 0 {
		var f []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			f, data = data[:i], data[i+1:]
		} else {
			f, data = data, nil
		}
		frames++
		switch kindOf(f) {
		case kindMessage:
			if step, ok := c.message(f, now); ok {
				delivered[step]++
				got = true
			}
		case kindAck:
			c.ack(f, now)
		case kindError:
			c.errorFrame(f)
		case kindJoined:
			c.joined(f)
		case kindGap:
			// The gateway replaced messages it could not queue by a gap
			// frame (the client is to fetch them from history): they are
			// not delivered live, and the generator does not fetch them.
			from, ok1 := intAfter(f, keyFrom)
			to, ok2 := intAfter(f, keyTo)
			s.gapFrames.Add(1)
			if ok1 && ok2 && to >= from {
				s.gapped.Add(to - from + 1)
			}
		}
	}
	s.wsMessages.Add(1)
	s.frames.Add(frames)
	if got {
		for step, n := range delivered {
			if n > 0 {
				s.delivered[step].Add(int64(n))
			}
		}
		s.lastDelivery.Store(now)
	}
}

// message takes one message frame and returns the step it was sent in,
// unless it is a repeat or not the generator's.
func (c *client) message(f []byte, now int64) (int, bool) {
	s := c.s
	seq, st, ok := messageFields(f)
	if !ok || !c.based || seq <= c.base || st.step < 0 || st.step >= maxSteps {
		s.foreign.Add(1)
		return 0, false
	}
	i := seq - c.base - 1
	w, bit := int(i/64), uint64(1)<<(i%64)
	if w >= len(c.seen) {
		if w >= maxSeenWords {
			s.foreign.Add(1)
			return 0, false
		}
		// Words past len were never written, so they are zero.
		c.seen = slices.Grow(c.seen, max(w+1, 2*len(c.seen))-len(c.seen))[:w+1]
	}
	if c.seen[w]&bit != 0 {
		s.duplicates.Add(1)
		return 0, false
	}
	c.seen[w] |= bit
	if seq < c.maxSeq {
		s.reordered.Add(1)
	} else {
		c.maxSeq = seq
	}
	lat := now - st.sent
	s.latency.Record(lat)
	s.window.Record(lat)
	return int(st.step), true
}

// maxSeenWords bounds a client's record of delivered seqs (64M messages of
// one room); past it, deliveries are not counted.
const maxSeenWords = 1 << 20

func (c *client) ack(f []byte, now int64) {
	p := c.pub
	if p == nil {
		return
	}
	id, ok := stringAfter(f, keyClientID)
	if !ok {
		return
	}
	step, k, ok := parseClientMsgID(id)
	if !ok || step >= maxSteps {
		return
	}
	p.acked[step].Add(1)
	if sent := p.sentAt[k%ackRing].Load(); sent > 0 {
		c.s.ackLatency.Record(now - sent)
	}
}

func (c *client) errorFrame(f []byte) {
	code, _ := stringAfter(f, keyCode)
	c.s.noteError(string(code))
	if c.pub == nil {
		return
	}
	if ref, ok := stringAfter(f, keyRef); ok {
		if step, _, ok := parseClientMsgID(ref); ok && step < maxSteps {
			c.pub.failed[step].Add(1)
		}
	}
}

func (c *client) joined(f []byte) {
	if c.based {
		return // a repeated join resynchronises; the generator never sends one
	}
	seq, ok := intAfter(f, keySeq)
	if !ok {
		return
	}
	c.base, c.based, c.maxSeq = seq, true, seq
	c.s.join.Record(c.s.now() - c.joinSent)
	c.s.members[c.room].Add(1)
	c.s.joined.Add(1)
}

// send writes message k of step, stamped with the time now.
func (p *publisher) send(step, k int, now int64) error {
	s := p.c.s
	b := append(p.frame[:0], `{"type":"send","room":"`...)
	b = append(b, s.rooms[p.c.room]...)
	b = append(b, `","text":"`...)
	b = appendText(b, stamp{step: int64(step), pub: int64(p.id), k: int64(k), sent: now}, s.cfg.TextBytes)
	b = append(b, `","client_msg_id":"`...)
	b = appendClientMsgID(b, int64(step), int64(k))
	b = append(b, `"}`...)
	p.frame = b
	p.sentAt[k%ackRing].Store(now)
	p.sent[step].Add(1)
	// Never cancelled, for the same reason as in read: closing the
	// connection ends a write that blocks.
	if err := p.c.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
		p.sent[step].Add(-1)
		return fmt.Errorf("publisher %d: %w", p.id, err)
	}
	return nil
}
