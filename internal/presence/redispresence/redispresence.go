// Package redispresence keeps presence in Redis, so that every gateway of a
// cluster sees the same members and a dead gateway's users vanish with
// nobody cleaning up.
//
// Each room has these keys, all with the room as a Redis Cluster hash tag so
// that one script touches them together:
//
//	<prefix>{<room>}:presence        sorted set: connection id -> expiry (Unix ms)
//	<prefix>{<room>}:presence:info   hash: connection id -> JSON [user id, name, gateway]
//	<prefix>{<room>}:presence:tabs   sorted set (lex): one user's connections, for removals
//	<prefix>{<room>}:presence:users  sorted set: user id -> latest expiry of their connections
//	<prefix>{<room>}:presence:names  hash: user id -> name
//	<prefix>{<room>}:presence:meta   hash: epoch, n (the version is "<epoch>:<n>")
//	<prefix>{<room>}:presence:gone   sorted set: removed connection id -> end of tombstone
//
// Add, Remove, Members and Count are one Lua script each; Refresh pipelines
// one script per room (per thousand entries of a room) into one round trip.
// Each script first deletes at most a fixed number of expired entries, so no
// call does unbounded work however many entries a dead gateway left behind;
// reads ignore what expired but is not deleted yet, and deleting an expired
// user gives the room a new version. Count is a ZCOUNT on the users set
// (logarithmic); Members reads that set and the names. Poll reads each room's
// meta and earliest user expiry with two plain commands in one round trip and
// runs the read script, in a second one, only for rooms that changed or
// where a user expired.
//
// Every add and refresh sets the keys to expire a TTL later, so a room whose
// gateways all died disappears on its own; a room whose last member is
// removed is deleted at once, except its tombstones, which expire a TTL
// later.
//
// Expiries are taken from the gateways' clocks (Config.Now): keep them in
// step (NTP), since a gateway whose clock is ahead lets entries live longer
// and one that is behind sees them expire early. Redis 6.2 or newer is
// required (ZADD GT, ZMSCORE).
package redispresence

import (
	"context"
	_ "embed" // for the Lua scripts
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/internal/presence"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
	"github.com/parleychat/parley/internal/store/redisstore"
)

//go:embed shared.lua
var sharedLua string

//go:embed add.lua
var addLua string

//go:embed remove.lua
var removeLua string

//go:embed refresh.lua
var refreshLua string

//go:embed read.lua
var readLua string

// refreshBatch is how many entries of a room one refresh script renews; a
// Refresh with more sends several scripts in the same round trip, so that
// none holds Redis for more than a few milliseconds.
const refreshBatch = 1000

// defaultPruneLimit bounds how many expired connections (and as many expired
// users) one script deletes: about a millisecond of Redis time.
const defaultPruneLimit = 500

// Config says which Redis to use and how. The zero value of a field means its
// default; one of Client and URL is required.
type Config struct {
	// Client is a Redis client to share, typically the history store's, so
	// that a gateway has one connection pool. The Store does not close it.
	// Its timeouts apply: a Refresh of many entries is one command whose
	// answer must arrive within the client's read timeout.
	Client redis.UniversalClient
	// URL locates Redis when Client is nil, in the form redis.ParseURL
	// reads; the Store then opens (and closes) a pool of its own, with the
	// same defaults as the history store: a 2s dial timeout, 1s to write and
	// to read each command, no retries.
	URL string
	// Prefix starts every key, so that deployments and tests can share a
	// Redis. Zero means "parley:", the history store's default; the keys do
	// not collide with the history's.
	Prefix string
	// TTL is how long an entry lives without a refresh. Zero means
	// presence.DefaultTTL. Every gateway of a cluster must use the same.
	TTL time.Duration
	// Now tells the time that expiries are measured in. Zero (nil) means
	// time.Now; tests pass a fake clock.
	Now func() time.Time
}

// Store is a presence.Store on Redis. All methods are safe for concurrent
// use; one Store serves a whole gateway.
type Store struct {
	rdb        redis.UniversalClient
	own        bool // whether Close closes rdb
	prefix     string
	ttl        time.Duration
	now        func() time.Time
	pruneLimit int

	add, remove, refresh, read *redis.Script
}

var _ presence.Store = (*Store)(nil)

// New returns a Store on cfg.Client, or on a pool of its own dialled to
// cfg.URL, and checks that Redis answers, so that a misconfigured gateway
// fails at startup.
func New(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{
		rdb:        cfg.Client,
		prefix:     cfg.Prefix,
		ttl:        cfg.TTL,
		now:        cfg.Now,
		pruneLimit: defaultPruneLimit,
		add:        redis.NewScript(sharedLua + addLua),
		remove:     redis.NewScript(sharedLua + removeLua),
		refresh:    redis.NewScript(sharedLua + refreshLua),
		read:       redis.NewScript(sharedLua + readLua),
	}
	if s.prefix == "" {
		s.prefix = "parley:"
	}
	if s.ttl <= 0 {
		s.ttl = presence.DefaultTTL
	}
	if s.ttl < time.Millisecond {
		return nil, fmt.Errorf("redispresence: ttl %v is under a millisecond", s.ttl)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rdb == nil {
		if cfg.URL == "" {
			return nil, errors.New("redispresence: neither a client nor a url")
		}
		rdb, err := redisstore.NewClient(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redispresence: %w", err)
		}
		s.rdb, s.own = rdb, true
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("redispresence: ping: %w", err)
	}
	return s, nil
}

// Close closes the Store's own connection pool, if it opened one; a shared
// Client is left to its owner. The Store must not be used after.
func (s *Store) Close() error {
	if !s.own {
		return nil
	}
	if err := s.rdb.Close(); err != nil {
		return fmt.Errorf("redispresence: close: %w", err)
	}
	return nil
}

// TTL implements presence.Store.
func (s *Store) TTL() time.Duration { return s.ttl }

// keys returns the room's keys in the order the scripts expect.
func (s *Store) keys(room string) []string {
	base := s.prefix + "{" + room + "}:presence"
	return []string{
		base, base + ":info", base + ":tabs", base + ":users", base + ":names", base + ":meta", base + ":gone",
	}
}

// call is one script run against one room.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// newCall prepares a script for room, with the arguments every script takes
// first (see shared.lua) followed by args.
func (s *Store) newCall(script *redis.Script, room string, now int64, args ...any) *call {
	head := []any{now, s.ttl.Milliseconds(), store.NewEpoch(), s.pruneLimit}
	return &call{script: script, keys: s.keys(room), args: append(head, args...)}
}

// run sends the calls in one pipeline, one round trip however many there
// are. Redis answers EVALSHA with NOSCRIPT when it has forgotten a script (a
// restart, SCRIPT FLUSH); those calls go again with the script's source,
// which also caches it for next time.
func (s *Store) run(ctx context.Context, calls []*call) error {
	send := func(calls []*call, sha bool) {
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range calls {
				if sha {
					c.cmd = c.script.EvalSha(ctx, p, c.keys, c.args...)
				} else {
					c.cmd = c.script.Eval(ctx, p, c.keys, c.args...)
				}
			}
			return nil
		})
	}
	send(calls, true)
	var again []*call
	for _, c := range calls {
		if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			again = append(again, c)
		}
	}
	if len(again) > 0 {
		send(again, false)
	}
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Add implements presence.Store.
func (s *Store) Add(ctx context.Context, e presence.Entry) (presence.Change, error) {
	if err := e.Validate(); err != nil {
		return presence.Change{}, fmt.Errorf("presence add: %w", err)
	}
	c := s.newCall(s.add, e.Room, s.now().UnixMilli(), e.ConnID, e.User.ID, e.User.Name, info(e))
	if err := s.run(ctx, []*call{c}); err != nil {
		return presence.Change{}, fmt.Errorf("presence add %s to %s: %w", e.ConnID, e.Room, err)
	}
	res, err := c.cmd.Slice()
	if err != nil || len(res) != 2 {
		return presence.Change{}, fmt.Errorf("presence add %s to %s: unexpected reply %v (%v)", e.ConnID, e.Room, res, err)
	}
	joined, _ := res[0].(int64)
	v, _ := res[1].(string)
	return presence.Change{User: e.User, Joined: joined == 1, Version: presence.Version(v)}, nil
}

// Remove implements presence.Store.
func (s *Store) Remove(ctx context.Context, room, connID string) (presence.Change, error) {
	if room == "" {
		return presence.Change{}, fmt.Errorf("presence remove %s: no room", connID)
	}
	c := s.newCall(s.remove, room, s.now().UnixMilli(), connID)
	if err := s.run(ctx, []*call{c}); err != nil {
		return presence.Change{}, fmt.Errorf("presence remove %s from %s: %w", connID, room, err)
	}
	res, err := c.cmd.Slice()
	if err != nil || len(res) != 4 {
		return presence.Change{}, fmt.Errorf("presence remove %s from %s: unexpected reply %v (%v)", connID, room, res, err)
	}
	left, _ := res[0].(int64)
	id, _ := res[1].(string)
	name, _ := res[2].(string)
	v, _ := res[3].(string)
	return presence.Change{User: protocol.User{ID: id, Name: name}, Left: left == 1, Version: presence.Version(v)}, nil
}

// info encodes the record kept for an entry's connection. The scripts
// compare it byte for byte to tell a renewal from a change, so it is only
// ever encoded here.
func info(e presence.Entry) string {
	b, _ := json.Marshal([]string{e.User.ID, e.User.Name, e.Gateway}) // strings always encode
	return string(b)
}

// Refresh implements presence.Store: one script per room (per refreshBatch
// entries of it), all in one pipeline.
func (s *Store) Refresh(ctx context.Context, entries []presence.Entry) error {
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("presence refresh: %w", err)
		}
	}
	if len(entries) == 0 {
		return nil
	}
	now := s.now().UnixMilli()
	byRoom := make(map[string]*call)
	var calls []*call
	for _, e := range entries {
		c := byRoom[e.Room]
		if c == nil || len(c.args) >= 4+4*refreshBatch {
			c = s.newCall(s.refresh, e.Room, now)
			byRoom[e.Room] = c
			calls = append(calls, c)
		}
		c.args = append(c.args, e.ConnID, e.User.ID, e.User.Name, info(e))
	}
	if err := s.run(ctx, calls); err != nil {
		return fmt.Errorf("presence refresh %d entries in %d rooms: %w", len(entries), len(calls), err)
	}
	return nil
}

// Members implements presence.Store.
func (s *Store) Members(ctx context.Context, room string) ([]protocol.User, error) {
	snap, err := s.snapshot(ctx, room, -1)
	if err != nil {
		return nil, fmt.Errorf("presence members of %s: %w", room, err)
	}
	return snap.Members, nil
}

// Count implements presence.Store.
func (s *Store) Count(ctx context.Context, room string) (int, error) {
	snap, err := s.snapshot(ctx, room, 0)
	if err != nil {
		return 0, fmt.Errorf("presence count of %s: %w", room, err)
	}
	return snap.Count, nil
}

func (s *Store) snapshot(ctx context.Context, room string, limit int) (presence.Snapshot, error) {
	if room == "" {
		return presence.Snapshot{}, errors.New("no room")
	}
	c := s.newCall(s.read, room, s.now().UnixMilli(), "read", "", limit)
	if err := s.run(ctx, []*call{c}); err != nil {
		return presence.Snapshot{}, err
	}
	snap, _, err := decodeRead(room, c.cmd)
	return snap, err
}

// Poll implements presence.Store. A first round trip reads each room's
// version and earliest user expiry with two plain commands; only rooms whose
// version differs, or where a user has expired and the version is yet to
// change, run the read script, in a second round trip. Most polls find
// nothing changed and cost a few microseconds of Redis time per room.
func (s *Store) Poll(ctx context.Context, rooms map[string]presence.Version, limit int) ([]presence.Snapshot, error) {
	names := make([]string, 0, len(rooms))
	for name := range rooms {
		if name == "" {
			return nil, errors.New("presence poll: a room has no name")
		}
		names = append(names, name)
	}
	out := []presence.Snapshot{}
	if len(names) == 0 {
		return out, nil
	}
	slices.Sort(names)
	now := s.now().UnixMilli()
	metas := make([]*redis.SliceCmd, len(names))
	firsts := make([]*redis.ZSliceCmd, len(names))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			keys := s.keys(name)
			metas[i] = p.HMGet(ctx, keys[5], "epoch", "n")
			firsts[i] = p.ZRangeWithScores(ctx, keys[3], 0, 0)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presence poll of %d rooms: %w", len(names), err)
	}
	var calls []*call
	var callRooms []string
	for i, name := range names {
		if !unchanged(metas[i].Val(), firsts[i].Val(), rooms[name], now) {
			calls = append(calls, s.newCall(s.read, name, now, "poll", string(rooms[name]), limit))
			callRooms = append(callRooms, name)
		}
	}
	if len(calls) == 0 {
		return out, nil
	}
	if err := s.run(ctx, calls); err != nil {
		return nil, fmt.Errorf("presence poll of %d rooms: %w", len(calls), err)
	}
	for i, c := range calls {
		snap, same, err := decodeRead(callRooms[i], c.cmd)
		if err != nil {
			return nil, fmt.Errorf("presence poll: %w", err)
		}
		if !same {
			out = append(out, snap)
		}
	}
	return out, nil
}

// unchanged reports whether a room's stored version (meta: epoch and n) is
// the known one and still describes its members: no user has expired since
// it was given (the earliest user expiry, first, is after now), and the room
// has a version exactly when it has users. Anything else is left to the read
// script, which prunes and gives the room a new version if need be.
func unchanged(meta []any, first []redis.Z, known presence.Version, now int64) bool {
	var v presence.Version
	if len(meta) == 2 {
		epoch, ok1 := meta[0].(string)
		n, ok2 := meta[1].(string)
		if ok1 && ok2 {
			v = presence.Version(epoch + ":" + n)
		}
	}
	if v != known {
		return false
	}
	if len(first) == 0 {
		return v == ""
	}
	return v != "" && first[0].Score > float64(now)
}

// decodeRead turns the read script's reply into a snapshot; same reports a
// poll that found the version it was given.
func decodeRead(room string, cmd *redis.Cmd) (snap presence.Snapshot, same bool, err error) {
	res, err := cmd.Slice()
	if err != nil {
		return presence.Snapshot{}, false, err
	}
	bad := func() error { return fmt.Errorf("%s: unexpected reply %v", room, res) }
	if len(res) == 0 {
		return presence.Snapshot{}, false, bad()
	}
	v, _ := res[0].(string)
	snap = presence.Snapshot{Room: room, Version: presence.Version(v)}
	if len(res) == 1 {
		return snap, true, nil
	}
	count, ok := res[1].(int64)
	if !ok {
		return presence.Snapshot{}, false, bad()
	}
	snap.Count = int(count)
	if len(res) == 2 {
		return snap, false, nil
	}
	if len(res) != 4 {
		return presence.Snapshot{}, false, bad()
	}
	ids, ok1 := res[2].([]any)
	names, ok2 := res[3].([]any)
	if !ok1 || !ok2 || len(ids) != len(names) {
		return presence.Snapshot{}, false, bad()
	}
	snap.Members = make([]protocol.User, len(ids))
	for i := range ids {
		id, _ := ids[i].(string)
		name, _ := names[i].(string)
		snap.Members[i] = protocol.User{ID: id, Name: name}
	}
	presence.SortMembers(snap.Members)
	return snap, false, nil
}
