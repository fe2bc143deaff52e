package gateway

import (
	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/protocol"
)

// outQueue is a connection's bounded queue of frames waiting to be written.
// It is not safe for concurrent use; conn guards it.
//
// When a frame would take the queue past its byte limit, the queue sheds
// load in tiers, cheapest loss first:
//
//  1. ephemeral frames (typing, presence) are dropped: newer ones supersede
//     them anyway;
//  2. each room's queued messages are replaced by one gap frame (from, to):
//     the client fetches them from history when it catches up, so nothing
//     is lost, only delayed;
//  3. if a gap frame is still waiting when the queue fills again, the client
//     is not reading at all, and push reports that it must be closed (1013).
type outQueue struct {
	items []queued
	bytes int
	limit int
	gaps  int // gap frames in items
}

type queued struct {
	hub.Frame
	gap bool
}

// shed says what a push had to do to make room.
type shed struct {
	ephemeralDropped int  // tier 1: queued ephemeral frames dropped
	newDropped       bool // the pushed frame was ephemeral and did not fit
	messagesGapped   int  // tier 2: queued messages replaced by gap frames
	mustClose        bool // tier 3
}

func (q *outQueue) fits(f hub.Frame) bool { return q.bytes+len(f.Data) <= q.limit }

func (q *outQueue) add(f hub.Frame, gap bool) {
	q.items = append(q.items, queued{Frame: f, gap: gap})
	q.bytes += len(f.Data)
	if gap {
		q.gaps++
	}
}

// push queues f, shedding load first if it would not fit. A control frame
// that is larger than the limit on its own is taken into an empty queue:
// a reply the gateway chose to send must not close a client that is
// keeping up.
func (q *outQueue) push(f hub.Frame) (s shed) {
	if q.fits(f) || f.Kind == hub.KindControl && len(q.items) == 0 {
		q.add(f, false)
		return s
	}
	s.ephemeralDropped = q.drop(hub.KindEphemeral)
	if f.Kind == hub.KindEphemeral {
		s.newDropped = true
		return s
	}
	if q.fits(f) {
		q.add(f, false)
		return s
	}
	if q.gaps > 0 {
		s.mustClose = true
		return s
	}
	s.messagesGapped = q.gapMessages()
	if !q.fits(f) {
		s.mustClose = true
		return s
	}
	q.add(f, false)
	return s
}

// drop removes the queued frames of kind and returns how many there were.
func (q *outQueue) drop(kind hub.Kind) int {
	n := 0
	kept := q.items[:0]
	for _, it := range q.items {
		if it.Kind == kind {
			q.bytes -= len(it.Data)
			n++
			continue
		}
		kept = append(kept, it)
	}
	clear(q.items[len(kept):])
	q.items = kept
	return n
}

// gapMessages replaces each room's queued messages by one gap frame where
// the first of them stood, and returns how many messages it replaced.
func (q *outQueue) gapMessages() int {
	type span struct {
		at       int // index in the new items of the room's gap frame
		from, to int64
	}
	spans := make(map[string]*span)
	n := 0
	kept := q.items[:0]
	for _, it := range q.items {
		if it.Kind != hub.KindMessage {
			kept = append(kept, it)
			continue
		}
		n++
		q.bytes -= len(it.Data)
		if sp := spans[it.Room]; sp != nil {
			sp.from, sp.to = min(sp.from, it.Seq), max(sp.to, it.Seq)
			continue
		}
		spans[it.Room] = &span{at: len(kept), from: it.Seq, to: it.Seq}
		kept = append(kept, queued{}) // the gap frame's place, filled below
	}
	clear(q.items[len(kept):])
	q.items = kept
	for room, sp := range spans {
		f := hub.Frame{Data: protocol.Encode(protocol.TypeGap, protocol.Gap{Room: room, From: sp.from, To: sp.to}), Room: room}
		q.items[sp.at] = queued{Frame: f, gap: true}
		q.bytes += len(f.Data)
		q.gaps++
	}
	return n
}

// take removes and returns the frames at the head of the queue that fit in
// maxBytes when joined with newlines (at least one frame).
func (q *outQueue) take(maxBytes int) []queued {
	n, size := 0, 0
	for n < len(q.items) && (n == 0 || size+len(q.items[n].Data)+1 <= maxBytes) {
		size += len(q.items[n].Data) + 1
		n++
	}
	batch := make([]queued, n)
	copy(batch, q.items[:n])
	clear(q.items[:n])
	q.items = q.items[n:]
	if len(q.items) == 0 {
		q.items = q.items[:0:0] // let an emptied backlog's array go
	}
	for _, it := range batch {
		q.bytes -= len(it.Data)
		if it.gap {
			q.gaps--
		}
	}
	return batch
}

func (q *outQueue) len() int { return len(q.items) }

// reset empties the queue.
func (q *outQueue) reset() {
	q.items, q.bytes, q.gaps = nil, 0, 0
}
