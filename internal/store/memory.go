package store

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/parleychat/parley/internal/protocol"
)

// Retention bounds how much history a store keeps. The zero value of a field
// means its default.
type Retention struct {
	// MaxLen is how many messages a room keeps. Zero means 10,000.
	MaxLen int
	// MaxAge is how long a message is kept, and how long an idle room's
	// history lives before it expires (the next message then starts a new
	// epoch). Zero means 7 days.
	MaxAge time.Duration
}

// WithDefaults returns r with its zero fields set to their defaults.
func (r Retention) WithDefaults() Retention {
	if r.MaxLen <= 0 {
		r.MaxLen = 10_000
	}
	if r.MaxAge <= 0 {
		r.MaxAge = 7 * 24 * time.Hour
	}
	return r
}

// Memory is a Store held in process memory: the store of the embedded
// default. Everything is lost when the process ends, so a restart starts every
// room in a new epoch, which clients handle like any lost history.
type Memory struct {
	ret Retention
	now func() time.Time

	mu      sync.Mutex
	rooms   map[string]*memRoom
	appends int // since the last sweep of idle rooms
}

var _ Store = (*Memory)(nil)

// memRoom is one room's history. Messages are contiguous in seq, so the
// message with seq s sits at index s - msgs[0].Seq.
type memRoom struct {
	epoch string
	seq   int64
	last  time.Time // TS of the newest append
	msgs  []protocol.Message
	dedup map[dedupKey]int64 // -> seq, for messages still retained
}

type dedupKey struct{ user, clientMsgID string }

// NewMemory returns an empty in-memory store. now may be nil (time.Now); tests
// pass a fake clock to exercise retention by age.
func NewMemory(ret Retention, now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{ret: ret.WithDefaults(), now: now, rooms: make(map[string]*memRoom)}
}

// Append implements Store.
func (s *Memory) Append(_ context.Context, m protocol.Message) (protocol.Message, bool, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()

	s.appends++
	if s.appends >= 10_000 {
		s.sweepLocked(now)
	}
	r := s.roomLocked(m.Room, now)
	if r == nil {
		r = &memRoom{epoch: NewEpoch(), dedup: make(map[dedupKey]int64)}
		s.rooms[m.Room] = r
	}
	if m.ClientMsgID != "" {
		if seq, ok := r.dedup[dedupKey{m.User.ID, m.ClientMsgID}]; ok {
			return r.msgs[seq-r.msgs[0].Seq], true, nil
		}
	}
	r.seq++
	m.Seq, m.Epoch, m.ID, m.TS = r.seq, r.epoch, NewID(now), now.UTC().Truncate(time.Millisecond)
	r.last = m.TS
	r.msgs = append(r.msgs, m)
	if m.ClientMsgID != "" {
		r.dedup[dedupKey{m.User.ID, m.ClientMsgID}] = m.Seq
	}
	for len(r.msgs) > s.ret.MaxLen {
		r.dropOldest()
	}
	return m, false, nil
}

// roomLocked returns the room, trimmed of messages past their age, or nil if
// it has none (never written, or expired while idle).
func (s *Memory) roomLocked(name string, now time.Time) *memRoom {
	r := s.rooms[name]
	if r == nil {
		return nil
	}
	cutoff := now.Add(-s.ret.MaxAge)
	if r.last.Before(cutoff) {
		delete(s.rooms, name)
		return nil
	}
	for len(r.msgs) > 0 && r.msgs[0].TS.Before(cutoff) {
		r.dropOldest()
	}
	return r
}

func (r *memRoom) dropOldest() {
	old := r.msgs[0]
	if old.ClientMsgID != "" {
		delete(r.dedup, dedupKey{old.User.ID, old.ClientMsgID})
	}
	r.msgs[0] = protocol.Message{} // let the text be collected
	r.msgs = r.msgs[1:]
}

// sweepLocked forgets idle rooms, so rooms nobody writes to again do not
// hold memory forever.
func (s *Memory) sweepLocked(now time.Time) {
	s.appends = 0
	for name := range s.rooms {
		s.roomLocked(name, now)
	}
}

// Recent implements Store.
func (s *Memory) Recent(_ context.Context, room string, limit int) (Page, error) {
	limit = max(limit, 0)
	return s.page(room, func(msgs []protocol.Message) []protocol.Message {
		return msgs[max(0, len(msgs)-limit):]
	}), nil
}

// After implements Store.
func (s *Memory) After(_ context.Context, room string, after int64, limit int) (Page, error) {
	limit = max(limit, 0)
	return s.page(room, func(msgs []protocol.Message) []protocol.Message {
		i := sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq > after })
		return msgs[i:min(len(msgs), i+limit)]
	}), nil
}

// Before implements Store.
func (s *Memory) Before(_ context.Context, room string, before int64, limit int) (Page, error) {
	limit = max(limit, 0)
	return s.page(room, func(msgs []protocol.Message) []protocol.Message {
		j := sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq >= before })
		return msgs[max(0, j-limit):j]
	}), nil
}

// page reads the room and copies out the part pick chooses, so callers never
// share the store's backing array.
func (s *Memory) page(room string, pick func([]protocol.Message) []protocol.Message) Page {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.roomLocked(room, s.now())
	if r == nil {
		return Page{Messages: []protocol.Message{}}
	}
	return Page{Epoch: r.epoch, Seq: r.seq, Messages: append([]protocol.Message{}, pick(r.msgs)...)}
}

// Rooms implements Store. It visits every room, which is fine for the
// embedded store's scale; ties in activity are broken by name, descending, as
// the Redis store's sorted set breaks them.
func (s *Memory) Rooms(_ context.Context, limit int) ([]RoomInfo, error) {
	out := []RoomInfo{}
	if limit <= 0 {
		return out, nil
	}
	now := s.now()
	s.mu.Lock()
	for name := range s.rooms {
		if r := s.roomLocked(name, now); r != nil {
			out = append(out, RoomInfo{Room: name, Seq: r.seq, LastActivity: r.last})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastActivity.Equal(out[j].LastActivity) {
			return out[i].LastActivity.After(out[j].LastActivity)
		}
		return out[i].Room > out[j].Room
	})
	return out[:min(len(out), limit)], nil
}

// Ping implements Store; memory is always there.
func (s *Memory) Ping(context.Context) error { return nil }
