package hub

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

// room sequences one room's messages for its local members.
//
// Until its first subscription starts, the room does not know where the
// stream stands (based is false) and holds what arrives; Start tells it the
// seq its first member's history ended at.
type room struct {
	name string

	mu    sync.Mutex
	subs  map[*Subscription]struct{}
	gone  bool // removed from the hub: the last member left
	based bool
	epoch string
	last  int64 // the last seq emitted to members
	// held are messages that arrived before the one after last, by seq.
	held map[int64][]byte
	// retired are epochs this room has moved away from; a late message of
	// one must not switch the room back.
	retired []string
	timer   *time.Timer // requests a repair of the hole after RepairDelay
}

// offer hands the room one message, from the broker or from a repair read.
func (r *room) offer(h *Hub, seq int64, epoch string, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.offerLocked(h, seq, epoch, data)
}

func (r *room) offerLocked(h *Hub, seq int64, epoch string, data []byte) {
	if r.gone || slices.Contains(r.retired, epoch) {
		return
	}
	if !r.based {
		if len(r.held) < h.cfg.MaxHeld {
			r.hold(seq, data)
		}
		return
	}
	switch {
	case epoch == r.epoch:
	case r.epoch == "":
		r.epoch = epoch // the room was empty when it was based: its first epoch
	default:
		r.switchEpochLocked(h, epoch)
	}
	switch {
	case seq <= r.last:
		return // a repeat: already emitted
	case seq == r.last+1:
		r.emitLocked(h, seq, data)
		r.drainHeldLocked(h)
	default:
		r.hold(seq, data)
		if len(r.held) > h.cfg.MaxHeld {
			// Waiting longer only costs memory: repair now.
			r.stopTimerLocked()
			h.requestRepair(r)
		} else {
			r.armLocked(h)
		}
	}
}

// switchEpochLocked follows the room into a new epoch: its history was lost
// and numbering restarted at 1. Members' floors refer to the old numbering,
// so they are reset too; clients see the new epoch on the next message and
// start the room afresh.
func (r *room) switchEpochLocked(h *Hub, epoch string) {
	if r.epoch != "" {
		h.log.Info("room epoch changed", "room", r.name, "old", r.epoch, "new", epoch)
		r.retired = append(r.retired, r.epoch)
		if len(r.retired) > 4 {
			r.retired = r.retired[1:]
		}
	}
	r.epoch, r.last, r.held = epoch, 0, nil
	for s := range r.subs {
		s.floor = 0
	}
}

func (r *room) hold(seq int64, data []byte) {
	if r.held == nil {
		r.held = make(map[int64][]byte)
	}
	r.held[seq] = data
}

// drainHeldLocked emits the held messages that now follow on, and forgets
// held ones that can no longer be emitted.
func (r *room) drainHeldLocked(h *Hub) {
	maps.DeleteFunc(r.held, func(seq int64, _ []byte) bool { return seq <= r.last })
	for len(r.held) > 0 {
		data, ok := r.held[r.last+1]
		if !ok {
			break
		}
		delete(r.held, r.last+1)
		r.emitLocked(h, r.last+1, data)
	}
	if len(r.held) == 0 {
		r.held = nil
		r.stopTimerLocked()
	}
}

func (r *room) emitLocked(h *Hub, seq int64, data []byte) {
	r.last = seq
	f := Frame{Data: data, Kind: KindMessage, Room: r.name, Seq: seq}
	for s := range r.subs {
		s.deliverLocked(f)
	}
	h.emitted.Add(1)
	h.fannedOut.Add(uint64(len(r.subs)))
}

// broadcast pushes an ephemeral frame to the room's started members. It is
// outside the seq order: it may overtake messages, and a member that joins
// later does not get it.
func (r *room) broadcast(data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := Frame{Data: data, Kind: KindEphemeral, Room: r.name}
	for s := range r.subs {
		if s.started {
			s.member.Push(f)
		}
	}
}

// firstHeldLocked returns the lowest held seq, or 0 when nothing is held.
func (r *room) firstHeldLocked() int64 {
	if len(r.held) == 0 {
		return 0
	}
	return slices.Min(slices.Collect(maps.Keys(r.held)))
}

// fill takes a page the repair read from the store. heldBefore is the lowest
// seq the room held when the read began (0 if none): only messages held then
// were surely in the store when it was read.
func (r *room) fill(h *Hub, page store.Page, heldBefore int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone || !r.based {
		return
	}
	switch {
	case page.Epoch == r.epoch || r.epoch == "":
		r.epoch = page.Epoch
	case slices.Contains(r.retired, page.Epoch):
		return // a stale page
	case page.Epoch != "":
		// The page was read after "last" of the old numbering; read the new
		// epoch again from its start.
		r.switchEpochLocked(h, page.Epoch)
		h.requestRepair(r)
		return
	default:
		// The store lost the room: there is nothing to fill the hole from,
		// so what is held is emitted below, as for a trimmed hole.
		page.Messages = nil
	}
	msgs := page.Messages
	if len(msgs) > 0 && msgs[0].Seq > r.last+1 {
		// The store no longer has what follows last (trimmed away): skip
		// the hole. Clients see the jump, ask history, and find the same.
		r.last = msgs[0].Seq - 1
	}
	for _, m := range msgs {
		r.offerLocked(h, m.Seq, m.Epoch, protocol.EncodeMessage(m))
	}
	if len(msgs) == 0 && heldBefore > r.last+1 {
		// Messages held before the read came from the broker, so the store
		// had them; if it had nothing after last, the hole aged out: emit
		// from the first of them. Not from one that arrived during the read:
		// the store may have taken it, and the hole's messages, after the
		// read, and skipping to it would lose them.
		r.last = heldBefore - 1
		r.drainHeldLocked(h)
	}
	if len(r.held) > 0 {
		r.armLocked(h)
	}
}

// armLocked makes sure a repair of the current hole is coming.
func (r *room) armLocked(h *Hub) {
	if r.timer != nil || r.gone {
		return
	}
	r.timer = time.AfterFunc(h.cfg.RepairDelay, func() {
		r.mu.Lock()
		r.timer = nil
		due := !r.gone && len(r.held) > 0
		r.mu.Unlock()
		if due {
			h.requestRepair(r)
		}
	})
}

func (r *room) stopTimerLocked() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}
