package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/presence"
	"github.com/parleychat/parley/internal/protocol"
)

// presenceTracker keeps this gateway's connections in the presence store and
// tells local members when a room's member list changes.
//
// Changes made anywhere in the cluster (a join here, a leave on another
// gateway, a dead gateway's entries expiring) are learned the same way: by
// polling the store about once a second for the rooms that have members here.
// That is also the batching: however many people come and go, a room's
// members get at most one presence frame per poll.
//
// A connection that drops is not removed at once: its entries linger (and
// are refreshed) for a grace period, so a user who reconnects, on any gateway,
// is back before they were gone, and nobody sees them leave and join.
type presenceTracker struct {
	g     *Gateway
	store presence.Store

	// idPrefix and next make connection ids unique across the cluster and
	// across restarts of a gateway that keeps its id.
	idPrefix string
	next     atomic.Uint64

	mu        sync.Mutex
	live      map[entryKey]presence.Entry
	lingering map[entryKey]lingering
	rooms     map[string]*roomPresence // last snapshot of each local room
}

type entryKey struct{ room, connID string }

type lingering struct {
	entry presence.Entry
	until time.Time
}

type roomPresence struct {
	version presence.Version
	count   int
	members []protocol.User // nil above the list limit
	// full is the frame a member joining now gets: the list without joins
	// and leaves.
	full []byte
}

func newPresenceTracker(g *Gateway, store presence.Store) *presenceTracker {
	var nonce [3]byte
	_, _ = rand.Read(nonce[:])
	return &presenceTracker{
		g:         g,
		store:     store,
		idPrefix:  g.opts.ID + "." + hex.EncodeToString(nonce[:]) + ".",
		live:      make(map[entryKey]presence.Entry),
		lingering: make(map[entryKey]lingering),
		rooms:     make(map[string]*roomPresence),
	}
}

// connID returns a new connection id.
func (t *presenceTracker) connID() string {
	return t.idPrefix + strconv.FormatUint(t.next.Add(1), 36)
}

// join puts c in the room and sends it the room's member list. A store
// error is logged: chat goes on without the member list until the next
// refresh heals the entry.
func (t *presenceTracker) join(ctx context.Context, c *conn, room string) {
	e := presence.Entry{Room: room, ConnID: c.presenceID, Gateway: t.g.opts.ID, User: c.who.User}
	key := entryKey{room, c.presenceID}
	t.mu.Lock()
	t.live[key] = e
	delete(t.lingering, key)
	rp := t.rooms[room]
	t.mu.Unlock()

	if _, err := t.store.Add(ctx, e); err != nil {
		t.failed("add", err, "room", room)
	}
	if rp == nil {
		snap, err := t.snapshot(ctx, room)
		if err != nil {
			t.failed("read", err, "room", room)
			return
		}
		// The first local member's view is the baseline the next poll's
		// joins and leaves are told against. Its version is unknown, so
		// that poll returns the room whether it changed or not.
		rp = &roomPresence{count: snap.Count, members: snap.Members, full: presenceFrame(snap, nil, nil)}
		t.mu.Lock()
		if t.rooms[room] == nil {
			t.rooms[room] = rp
		}
		t.mu.Unlock()
	}
	c.push(hub.Frame{Data: rp.full, Kind: hub.KindEphemeral, Room: room})
}

// snapshot reads a room's member list now, as Poll would.
func (t *presenceTracker) snapshot(ctx context.Context, room string) (presence.Snapshot, error) {
	n, err := t.store.Count(ctx, room)
	if err != nil {
		return presence.Snapshot{}, err
	}
	snap := presence.Snapshot{Room: room, Count: n}
	if n <= t.g.opts.PresenceListMax {
		if snap.Members, err = t.store.Members(ctx, room); err != nil {
			return presence.Snapshot{}, err
		}
		snap.Count = len(snap.Members)
	}
	return snap, nil
}

// leave takes c out of the room at once: leaving on purpose has no grace.
func (t *presenceTracker) leave(ctx context.Context, c *conn, room string) {
	t.mu.Lock()
	delete(t.live, entryKey{room, c.presenceID})
	t.mu.Unlock()
	if _, err := t.store.Remove(ctx, room, c.presenceID); err != nil {
		t.failed("remove", err, "room", room)
	}
}

// dropped starts the grace period of a connection that ended.
func (t *presenceTracker) dropped(c *conn, rooms []string) {
	until := time.Now().Add(t.g.opts.PresenceGrace)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, room := range rooms {
		key := entryKey{room, c.presenceID}
		if e, ok := t.live[key]; ok {
			delete(t.live, key)
			t.lingering[key] = lingering{entry: e, until: until}
		}
	}
}

// run keeps the store up to date and members told, until ctx ends.
func (t *presenceTracker) run(ctx context.Context) {
	tick := time.NewTicker(t.g.opts.PresenceInterval)
	defer tick.Stop()
	refreshEvery := t.store.TTL() / 3
	lastRefresh := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.expireLingering(ctx)
		if time.Since(lastRefresh) >= refreshEvery {
			lastRefresh = time.Now()
			t.refresh(ctx)
		}
		t.poll(ctx)
	}
}

func (t *presenceTracker) expireLingering(ctx context.Context) {
	now := time.Now()
	t.mu.Lock()
	var gone []presence.Entry
	for key, l := range t.lingering {
		if now.After(l.until) {
			gone = append(gone, l.entry)
			delete(t.lingering, key)
		}
	}
	t.mu.Unlock()
	for _, e := range gone {
		if _, err := t.store.Remove(ctx, e.Room, e.ConnID); err != nil {
			t.failed("remove", err, "room", e.Room)
		}
	}
}

func (t *presenceTracker) refresh(ctx context.Context) {
	t.mu.Lock()
	entries := slices.Collect(maps.Values(t.live))
	for _, l := range t.lingering {
		entries = append(entries, l.entry)
	}
	t.mu.Unlock()
	if len(entries) == 0 {
		return
	}
	if err := t.store.Refresh(ctx, entries); err != nil {
		t.failed("refresh", err, "entries", len(entries))
	}
}

// poll asks the store which local rooms changed and sends each changed room
// one presence frame.
func (t *presenceTracker) poll(ctx context.Context) {
	t.mu.Lock()
	versions := make(map[string]presence.Version)
	for key := range t.live {
		versions[key.room] = ""
	}
	for room := range versions {
		if rp := t.rooms[room]; rp != nil {
			versions[room] = rp.version
		}
	}
	for room := range t.rooms {
		if _, ok := versions[room]; !ok {
			delete(t.rooms, room) // nobody here any more
		}
	}
	t.mu.Unlock()
	if len(versions) == 0 {
		return
	}
	snaps, err := t.store.Poll(ctx, versions, t.g.opts.PresenceListMax)
	if err != nil {
		t.failed("poll", err, "rooms", len(versions))
		return
	}
	for _, snap := range snaps {
		t.mu.Lock()
		prev := t.rooms[snap.Room]
		rp := &roomPresence{version: snap.Version, count: snap.Count, members: snap.Members, full: presenceFrame(snap, nil, nil)}
		t.rooms[snap.Room] = rp
		t.mu.Unlock()

		frame := rp.full
		if prev != nil && prev.members != nil && snap.Members != nil {
			joined, left, renamed := presence.Diff(prev.members, snap.Members)
			if len(joined)+len(left)+len(renamed) == 0 {
				continue // members already have this list
			}
			frame = presenceFrame(snap, joined, left)
		} else if prev != nil && prev.members == nil && snap.Members == nil && prev.count == snap.Count {
			continue
		}
		t.g.hub.Broadcast(snap.Room, frame)
		t.g.metrics.presenceFrames.Inc()
	}
}

// failed counts and logs a presence store error. Presence is best effort:
// chat goes on, and the next refresh or poll heals what was missed.
func (t *presenceTracker) failed(op string, err error, attrs ...any) {
	t.g.metrics.storeErrors.WithLabelValues("presence").Inc()
	t.g.log.Warn("presence: "+op+" failed", append(attrs, "err", err)...)
}

// presenceFrame encodes a snapshot as a presence frame; joined and left are
// left out above the list limit, where Members is.
func presenceFrame(snap presence.Snapshot, joined, left []protocol.User) []byte {
	p := protocol.Presence{Room: snap.Room, Count: snap.Count, Members: snap.Members}
	if snap.Members != nil {
		p.Members = nonNil(snap.Members)
		p.Joined, p.Left = joined, left
	}
	return protocol.Encode(protocol.TypePresence, p)
}

func nonNil(users []protocol.User) []protocol.User {
	if users == nil {
		return []protocol.User{}
	}
	return users
}
