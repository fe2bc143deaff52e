package hub

// maxPending bounds the frames a subscription holds between Subscribe and
// Start (one store read). Past it frames are dropped; the client sees the
// jump in seqs and fills it with a history request, as after any gap.
const maxPending = 1000

// Subscription is one member's membership of one room. Its state is guarded
// by the room's lock.
type Subscription struct {
	hub    *Hub
	room   *room
	member Member

	started bool
	closed  bool
	// floor is the last seq the member got from history at join: live
	// messages up to it are not sent again.
	floor   int64
	pending []Frame
}

func (s *Subscription) deliverLocked(f Frame) {
	if !s.started {
		if len(s.pending) < maxPending {
			s.pending = append(s.pending, f)
		}
		return
	}
	if f.Seq > s.floor {
		s.member.Push(f)
	}
}

// Start pushes first (the frame that carries the history the caller read)
// and then every live message after seq floor, and from then on delivers
// live messages as they come. epoch and floor describe the history read:
// its epoch and the room's latest seq at the time.
func (s *Subscription) Start(first []byte, epoch string, floor int64) {
	r := s.room
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.closed {
		return
	}
	if !r.based {
		// The first member tells the room where the stream stands. Held
		// messages up to floor are in its history; later ones go to the
		// members' pending frames (this one's included) as they follow on.
		r.based, r.epoch, r.last = true, epoch, floor
		r.drainHeldLocked(s.hub)
		if len(r.held) > 0 {
			r.armLocked(s.hub)
		}
	} else if floor > r.last && epoch == r.epoch {
		// The store is ahead of what the room delivered: usually messages
		// still on their way through the broker, but possibly one that was
		// stored and never published. A read settles it.
		s.hub.requestRepair(r)
	}
	s.member.Push(Frame{Data: first})
	for _, f := range s.pending {
		if f.Seq > floor {
			s.member.Push(f)
		}
	}
	s.pending, s.started, s.floor = nil, true, floor
}

// Close ends the membership; the member gets nothing more of the room. It
// is safe to call more than once.
func (s *Subscription) Close() {
	s.room.mu.Lock()
	closed := s.closed
	s.closed = true
	s.pending = nil
	s.room.mu.Unlock()
	if !closed {
		s.hub.unsubscribe(s)
	}
}
