package presence

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/parleychat/parley/internal/protocol"
)

// Memory is a Store held in process memory: the presence of the embedded
// default, where one gateway is the whole cluster. It keeps the same rules as
// the Redis store (millisecond expiry, versions, removal tombstones), so the
// embedded default behaves like a cluster of one.
type Memory struct {
	ttl int64 // ms
	now func() time.Time

	mu    sync.Mutex
	rooms map[string]*memRoom
	gen   uint64 // the last version handed out, in any room
	ops   int    // since the last sweep of idle rooms
}

var _ Store = (*Memory)(nil)

// memRoom is one room. After prune, every connection in conns is live and
// users holds exactly the users with at least one of them.
type memRoom struct {
	conns   map[string]*memConn
	users   map[string]*memUser
	gone    map[string]int64 // removed connection -> when its tombstone ends (ms)
	version Version          // "" while the room is empty
	// nextExp is at most the earliest expiry in conns, so that prune can
	// skip its scan until something may have expired.
	nextExp int64
	// nextGone is the same for gone.
	nextGone int64
}

type memConn struct {
	user    protocol.User
	gateway string
	exp     int64 // ms
}

type memUser struct {
	name string
	tabs int
}

// NewMemory returns an empty in-memory presence store. A ttl of zero or less
// means DefaultTTL; now may be nil (time.Now), tests pass a fake clock.
func NewMemory(ttl time.Duration, now func() time.Time) *Memory {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Memory{ttl: max(ttl.Milliseconds(), 1), now: now, rooms: make(map[string]*memRoom)}
}

// TTL implements Store.
func (m *Memory) TTL() time.Duration { return time.Duration(m.ttl) * time.Millisecond }

// nowMS reads the clock at the precision entries expire at, the same as in
// Redis.
func (m *Memory) nowMS() int64 { return m.now().UnixMilli() }

// roomLocked returns the room, pruned of what expired by now, creating it if
// create is set; nil if it does not exist and create is not set.
func (m *Memory) roomLocked(name string, now int64, create bool) *memRoom {
	m.ops++
	if m.ops >= 10_000 {
		m.sweepLocked(now)
	}
	r := m.rooms[name]
	if r == nil {
		if !create {
			return nil
		}
		r = &memRoom{
			conns: make(map[string]*memConn), users: make(map[string]*memUser), gone: make(map[string]int64),
			nextExp: now + m.ttl, nextGone: now + m.ttl,
		}
		m.rooms[name] = r
		return r
	}
	if m.pruneLocked(r, now) {
		m.bumpLocked(r)
	}
	if !create && len(r.conns) == 0 && len(r.gone) == 0 {
		delete(m.rooms, name)
		return nil
	}
	return r
}

// sweepLocked prunes every room and forgets the empty ones, so that rooms
// nobody touches again do not hold memory forever.
func (m *Memory) sweepLocked(now int64) {
	m.ops = 0
	for name, r := range m.rooms {
		if m.pruneLocked(r, now) {
			m.bumpLocked(r)
		}
		m.forgetIfEmptyLocked(name, r)
	}
}

// pruneLocked drops expired connections and tombstones and reports whether
// the member list changed.
func (m *Memory) pruneLocked(r *memRoom, now int64) bool {
	if now >= r.nextGone {
		r.nextGone = now + m.ttl
		for id, end := range r.gone {
			if end <= now {
				delete(r.gone, id)
			} else {
				r.nextGone = min(r.nextGone, end)
			}
		}
	}
	if now < r.nextExp {
		return false
	}
	changed := false
	r.nextExp = now + m.ttl
	for id, c := range r.conns {
		if c.exp > now {
			r.nextExp = min(r.nextExp, c.exp)
			continue
		}
		if r.dropConn(id) {
			changed = true
		}
	}
	return changed
}

// dropConn deletes a connection and reports whether its user left with it.
func (r *memRoom) dropConn(id string) bool {
	c := r.conns[id]
	if c == nil {
		return false
	}
	delete(r.conns, id)
	u := r.users[c.user.ID]
	u.tabs--
	if u.tabs > 0 {
		return false
	}
	delete(r.users, c.user.ID)
	return true
}

// upsert adds or renews e to expire at exp and reports whether its user
// joined and whether the member list changed. Renewing an unchanged entry
// never renames its user: with two tabs under two names, the name of the
// latest Add stays, as in Redis.
func (r *memRoom) upsert(e Entry, exp int64) (joined, changed bool) {
	r.nextExp = min(r.nextExp, exp)
	delete(r.gone, e.ConnID)
	c := r.conns[e.ConnID]
	if c != nil && c.user == e.User && c.gateway == e.Gateway {
		c.exp = max(c.exp, exp)
		return false, false
	}
	if c != nil && c.user.ID != e.User.ID {
		changed = r.dropConn(e.ConnID) // it was someone else's, who may leave
		c = nil
	}
	u := r.users[e.User.ID]
	if u == nil {
		u = &memUser{name: e.User.Name}
		r.users[e.User.ID] = u
		joined, changed = true, true
	}
	if c == nil {
		c = &memConn{}
		r.conns[e.ConnID] = c
		u.tabs++
	}
	c.user, c.gateway, c.exp = e.User, e.Gateway, max(c.exp, exp)
	if u.name != e.User.Name {
		u.name = e.User.Name
		changed = true
	}
	return joined, changed
}

// bumpLocked gives r a version no room has had.
func (m *Memory) bumpLocked(r *memRoom) {
	if len(r.users) == 0 {
		r.version = ""
		return
	}
	m.gen++
	r.version = Version(strconv.FormatUint(m.gen, 36))
}

// forgetIfEmptyLocked deletes the room once it holds nothing, tombstones
// included.
func (m *Memory) forgetIfEmptyLocked(name string, r *memRoom) {
	if len(r.conns) == 0 && len(r.gone) == 0 {
		delete(m.rooms, name)
	}
}

// Add implements Store.
func (m *Memory) Add(_ context.Context, e Entry) (Change, error) {
	if err := e.Validate(); err != nil {
		return Change{}, fmt.Errorf("presence add: %w", err)
	}
	now := m.nowMS()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.roomLocked(e.Room, now, true)
	joined, changed := r.upsert(e, now+m.ttl)
	if changed {
		m.bumpLocked(r)
	}
	return Change{User: e.User, Joined: joined, Version: r.version}, nil
}

// Remove implements Store.
func (m *Memory) Remove(_ context.Context, room, connID string) (Change, error) {
	if room == "" {
		return Change{}, fmt.Errorf("presence remove %s: no room", connID)
	}
	now := m.nowMS()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.roomLocked(room, now, true)
	r.gone[connID] = now + m.ttl
	var ch Change
	if c := r.conns[connID]; c != nil {
		ch.User = protocol.User{ID: c.user.ID, Name: r.users[c.user.ID].name}
		if r.dropConn(connID) {
			ch.Left = true
			m.bumpLocked(r)
		}
	}
	ch.Version = r.version
	return ch, nil
}

// Refresh implements Store.
func (m *Memory) Refresh(_ context.Context, entries []Entry) error {
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("presence refresh: %w", err)
		}
	}
	now := m.nowMS()
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := make(map[*memRoom]bool)
	for _, e := range entries {
		r := m.roomLocked(e.Room, now, true)
		if end, ok := r.gone[e.ConnID]; ok && end > now {
			continue // removed while this refresh was under way
		}
		if _, c := r.upsert(e, now+m.ttl); c {
			changed[r] = true
		}
	}
	for r := range changed {
		m.bumpLocked(r)
	}
	return nil
}

// snapshotLocked returns the room's snapshot, with members when it has at
// most limit users (limit < 0: always).
func (m *Memory) snapshotLocked(name string, now int64, limit int) Snapshot {
	s := Snapshot{Room: name}
	r := m.roomLocked(name, now, false)
	if r != nil {
		s.Version, s.Count = r.version, len(r.users)
	}
	if limit >= 0 && s.Count > limit {
		return s
	}
	s.Members = make([]protocol.User, 0, s.Count)
	if r != nil {
		for id, u := range r.users {
			s.Members = append(s.Members, protocol.User{ID: id, Name: u.name})
		}
	}
	SortMembers(s.Members)
	return s
}

// Members implements Store.
func (m *Memory) Members(_ context.Context, room string) ([]protocol.User, error) {
	if room == "" {
		return nil, fmt.Errorf("presence members: no room")
	}
	now := m.nowMS()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapshotLocked(room, now, -1).Members, nil
}

// Count implements Store.
func (m *Memory) Count(_ context.Context, room string) (int, error) {
	if room == "" {
		return 0, fmt.Errorf("presence count: no room")
	}
	now := m.nowMS()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapshotLocked(room, now, 0).Count, nil
}

// Poll implements Store.
func (m *Memory) Poll(_ context.Context, rooms map[string]Version, limit int) ([]Snapshot, error) {
	names := make([]string, 0, len(rooms))
	for name := range rooms {
		if name == "" {
			return nil, fmt.Errorf("presence poll: a room has no name")
		}
		names = append(names, name)
	}
	slices.Sort(names)
	now := m.nowMS()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Snapshot{}
	for _, name := range names {
		var v Version
		if r := m.roomLocked(name, now, false); r != nil {
			v = r.version
		}
		if v != rooms[name] {
			out = append(out, m.snapshotLocked(name, now, limit))
		}
	}
	return out, nil
}
