package loadgen

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/internal/wsframe"
)

// maxMessageBytes bounds one WebSocket message from a gateway (a batch of
// frames); the gateway's own batches stay far below it.
const maxMessageBytes = 8 << 20

// ackRing is how many send times a publisher remembers, to time acks.
const ackRing = 4096

// client is one connection. After the handshake its read loop owns
// everything but the atomics and the writing side, which publishers share
// with it under wmu.
type client struct {
	s    *session
	id   int
	room int
	pub  *publisher // nil unless the client publishes

	joinSent  int64 // when the join was first sent; set before reading starts
	joinTries int   // joins sent; the read loop's

	pending []byte // the start of a frame whose end has not arrived yet
	msg     []byte // a fragmented message's frames so far
	inMsg   bool   // a fragmented message has begun
	base    int64  // the room's seq when the client joined
	based   bool
	seen    []uint64 // bit seq-base-1: that seq was delivered
	maxSeq  int64
	// arrived is when the bytes being fed reached the socket, by the
	// kernel's receive timestamp on the session's clock; 0 when unknown.
	arrived int64

	wmu  sync.Mutex
	conn wire   // under wmu for writing; Close may be called at any time
	wbuf []byte // the frame being written, under wmu
}

// wire is a client's connection as its writers see it.
type wire interface {
	Write(b []byte) (int, error)
	// Close ends the connection, making a blocked Write and the reading
	// side fail; the descriptor itself is released when the session ends.
	Close() error
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

// feed takes bytes read from the connection at now: complete frames are
// handled and the start of an incomplete one is kept for the next call. An
// error ends the connection.
func (c *client) feed(b []byte, now int64) error {
	data := b
	if len(c.pending) > 0 {
		c.pending = append(c.pending, b...)
		data = c.pending
	}
	for {
		f, n, err := parseFrame(data)
		if errors.Is(err, errIncomplete) {
			break
		}
		if err != nil {
			return err
		}
		data = data[n:]
		if err := c.frame(f, now); err != nil {
			return err
		}
	}
	// data may overlap pending; append copies as memmove does.
	c.pending = append(c.pending[:0], data...)
	return nil
}

// frame takes one frame: data frames make up messages, pings are answered
// and a close frame ends the connection.
func (c *client) frame(f frame, now int64) error {
	switch f.op {
	case wsframe.OpText, wsframe.OpBinary, wsframe.OpContinuation:
		if (f.op == wsframe.OpContinuation) != c.inMsg {
			return errors.New("continuation frame out of place")
		}
		if f.fin && !c.inMsg {
			c.handle(f.payload, now)
			return nil
		}
		if len(c.msg)+len(f.payload) > maxMessageBytes {
			return fmt.Errorf("message over %d bytes", maxMessageBytes)
		}
		c.msg, c.inMsg = append(c.msg, f.payload...), !f.fin
		if f.fin {
			c.handle(c.msg, now)
			c.msg = c.msg[:0]
		}
		return nil
	case wsframe.OpPing:
		return c.write(wsframe.OpPong, f.payload)
	case wsframe.OpPong:
		return nil
	case wsframe.OpClose:
		code := 1005
		if len(f.payload) >= 2 {
			code = int(binary.BigEndian.Uint16(f.payload))
		}
		return closeError{code}
	default:
		return fmt.Errorf("frame with unknown opcode %d", f.op)
	}
}

// write sends one frame; publishers and the read loop share the connection.
func (c *client) write(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendFrame(c.wbuf[:0], op, payload)
	_, err := c.conn.Write(c.wbuf)
	return err
}

// handle takes one WebSocket message: one frame or several separated by
// '\n'.
func (c *client) handle(data []byte, now int64) {
	s := c.s
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
	if c.arrived > 0 {
		s.arrival.Record(c.arrived - st.sent)
	}
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
	ref, hasRef := stringAfter(f, keyRef)
	if !hasRef && !c.based && string(code) == "unavailable" && c.joinTries < maxJoinTries {
		c.retryJoin()
		return
	}
	if c.pub == nil {
		return
	}
	if hasRef {
		if step, _, ok := parseClientMsgID(ref); ok && step < maxSteps {
			c.pub.failed[step].Add(1)
		}
	}
}

// maxJoinTries bounds the joins a client sends when the gateway answers
// "unavailable" (it could not read the room's history in time, as when
// thousands of clients join at once on a starved machine).
const maxJoinTries = 5

// sendJoin sends the client's join.
func (c *client) sendJoin() {
	frame := `{"type":"join","room":"` + c.s.rooms[c.room] + `"}`
	if err := c.write(wsframe.OpText, []byte(frame)); err != nil {
		c.s.noteEnd(c, err)
	}
}

// retryJoin sends the join again after a backoff, as a client is told to.
func (c *client) retryJoin() {
	c.joinTries++
	c.s.joinRetries.Add(1)
	time.AfterFunc(time.Duration(c.joinTries)*200*time.Millisecond, func() {
		if !c.s.closing.Load() {
			c.sendJoin()
		}
	})
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
	if err := p.c.write(wsframe.OpText, b); err != nil {
		p.sent[step].Add(-1)
		return fmt.Errorf("publisher %d: %w", p.id, err)
	}
	return nil
}
