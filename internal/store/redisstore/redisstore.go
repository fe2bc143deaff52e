// Package redisstore keeps room history in Redis, so that it outlives any one
// gateway and every gateway of a cluster serves the same history.
//
// Each room has three keys, all carrying the room as a Redis Cluster hash tag
// so that one script can touch them together:
//
//	<prefix>{<room>}:meta   hash: epoch, seq (the last one given), last (ms)
//	<prefix>{<room>}:log    stream: one entry per message, entry id "<seq>-0"
//	<prefix>{<room>}:dedup  sorted set: (user, client_msg_id) -> seq
//
// An append is one Lua script, so seqs stay contiguous however many gateways
// append at once; every key of a room expires Retention.MaxAge after its last
// message. <prefix>rooms is a sorted set of rooms by last activity, for Rooms.
//
// Redis 6.2 or newer is required (exclusive stream ranges, XTRIM MINID,
// ZADD GT).
package redisstore

import (
	"context"
	_ "embed" // for the Lua scripts
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

// retainedLua holds helpers that both scripts need; it is prepended to each.
//
//go:embed retained.lua
var retainedLua string

//go:embed append.lua
var appendLua string

//go:embed read.lua
var readLua string

// maxBound caps the seq bounds passed to the read script: Lua numbers are
// doubles, exact only up to 2^53, and no room gets near that many messages.
const maxBound = 1 << 53

// Config says which Redis to use and how. The zero value of a field means its
// default, except URL, which is required.
type Config struct {
	// URL locates Redis, in the form redis.ParseURL reads:
	// redis://[user:password@]host:port/db, or rediss:// for TLS. Timeouts
	// given as URL parameters (dial_timeout, read_timeout, write_timeout,
	// max_retries) override the defaults described on New.
	URL string
	// Prefix starts every key this store writes, so that several deployments
	// (and tests running in parallel) can share one Redis. Zero means
	// "parley:".
	Prefix string
	// Retention bounds each room's history; see store.Retention for its
	// defaults.
	Retention store.Retention
	// Now tells the time that messages are stamped with and that retention by
	// age is measured against. Zero (nil) means time.Now; tests pass a fake
	// clock to exercise MaxAge without waiting.
	Now func() time.Time
}

// Store is a store.Store on Redis. All methods are safe for concurrent use;
// one Store (and its connection pool) serves a whole gateway.
type Store struct {
	rdb *redis.Client
	// probe is a connection of its own for Ping. A gateway's health check
	// asks whether Redis answers; through the shared pool it would also
	// wait for a free connection, and when thousands of clients join at
	// once that wait alone passed the check's 500 ms and made the gateway
	// refuse joins while Redis was answering in microseconds.
	probe    *redis.Client
	prefix   string
	roomsKey string
	ret      store.Retention
	now      func() time.Time

	appendScript *redis.Script
	readScript   *redis.Script
}

var _ store.Store = (*Store)(nil)

// New connects to Redis and checks that it answers, so that a misconfigured
// gateway fails at startup rather than on its first message.
//
// Unless the URL says otherwise, connections are dialled within 2s (once, not
// retried) and each command must be written and answered within 1s, so that a
// dead or stuck Redis fails a send quickly (the client gets "unavailable" and
// retries) instead of holding it. Commands are not retried by the client
// library: an append whose answer was lost may have happened, and only the
// sender's retry with the same client_msg_id can be deduplicated safely.
func New(ctx context.Context, cfg Config) (*Store, error) {
	rdb, err := NewClient(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}

	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "parley:"
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	// The probe is built from the URL, not from a copy of rdb's Options,
	// which would share state with rdb (go-redis complained of that at
	// start). Only the watchdog's and /readyz's pings use it, so it holds a
	// connection or two; its pool size is nonetheless the main pool's,
	// because go-redis stops dialling for a second once as many dials as
	// the pool size have failed, and a pool of one would then notice Redis
	// back up to a second late.
	probe, err := NewClient(cfg.URL)
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	s := &Store{
		rdb:          rdb,
		probe:        probe,
		prefix:       prefix,
		roomsKey:     prefix + "rooms",
		ret:          cfg.Retention.WithDefaults(),
		now:          now,
		appendScript: redis.NewScript(retainedLua + appendLua),
		readScript:   redis.NewScript(retainedLua + readLua),
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("redisstore: ping %s: %w", rdb.Options().Addr, err)
	}
	return s, nil
}

// NewClient returns a Redis client for url (redis.ParseURL's form) with the
// timeouts described on New unless the URL sets its own. The presence store
// uses the same, so that both fail as fast, and the same way, when Redis
// does not answer.
func NewClient(rawURL string) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		// url.Error quotes the whole URL, password included: keep it out of
		// logs.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("parse url: %w", err)
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = 2 * time.Second
	}
	if opt.DialerRetries == 0 {
		opt.DialerRetries = 1
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = time.Second
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = time.Second
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = -1
	}
	opt.ContextTimeoutEnabled = true
	return redis.NewClient(opt), nil
}

// Client returns the store's Redis client, so that other parts of a gateway
// that keep state in the same Redis (presence) share its connection pool and
// timeouts. It is closed by Close.
func (s *Store) Client() *redis.Client { return s.rdb }

// Close closes the connections to Redis. The Store must not be used after.
func (s *Store) Close() error {
	err := errors.Join(s.rdb.Close(), s.probe.Close())
	if err != nil {
		return fmt.Errorf("redisstore: close: %w", err)
	}
	return nil
}

// Ping implements store.Store; /readyz and the gateway's store watchdog use
// it. It goes over a connection of its own (see Store.probe).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.probe.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisstore: ping: %w", err)
	}
	return nil
}

// roomKey returns the key of one of a room's structures (meta, log, dedup).
func (s *Store) roomKey(room, what string) string {
	return s.prefix + "{" + room + "}:" + what
}

// dedupMember names a (user, client_msg_id) pair in the dedup set. The length
// prefix keeps it unambiguous whatever characters a user id holds.
func dedupMember(userID, clientMsgID string) string {
	return strconv.Itoa(len(userID)) + ":" + userID + clientMsgID
}

// Append implements store.Store. The script does the room's part atomically;
// the rooms index is updated in the same round trip, after it (it lives
// outside the room's cluster slot, and only orders Rooms).
func (s *Store) Append(ctx context.Context, m protocol.Message) (protocol.Message, bool, error) {
	now := s.now().UTC().Truncate(time.Millisecond)
	ms := now.UnixMilli()
	maxAge := s.ret.MaxAge.Milliseconds()
	id := store.NewID(now)
	keys := []string{s.roomKey(m.Room, "meta"), s.roomKey(m.Room, "log"), s.roomKey(m.Room, "dedup")}
	args := []any{
		store.NewEpoch(), id, ms, m.User.ID, m.User.Name, m.Text, m.ClientMsgID,
		dedupMember(m.User.ID, m.ClientMsgID), s.ret.MaxLen, maxAge,
	}

	// The outcome is the script's alone: once it succeeded the message is
	// stored, and failing the send because the rooms index (which only
	// orders Rooms) could not be updated would make the client send it again.
	run := func(script func(p redis.Pipeliner) *redis.Cmd) *redis.Cmd {
		var cmd *redis.Cmd
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = script(p)
			p.ZAddGT(ctx, s.roomsKey, redis.Z{Score: float64(ms), Member: m.Room})
			p.ZRemRangeByScore(ctx, s.roomsKey, "-inf", "("+strconv.FormatInt(ms-maxAge, 10))
			p.PExpire(ctx, s.roomsKey, s.ret.MaxAge)
			return nil
		})
		return cmd
	}
	cmd := run(func(p redis.Pipeliner) *redis.Cmd { return s.appendScript.EvalSha(ctx, p, keys, args...) })
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		// Redis restarted or its script cache was flushed: send the source,
		// which also caches it again for the next EVALSHA.
		cmd = run(func(p redis.Pipeliner) *redis.Cmd { return s.appendScript.Eval(ctx, p, keys, args...) })
	}
	res, err := cmd.Slice()
	if err != nil {
		return protocol.Message{}, false, fmt.Errorf("append %s: %w", m.Room, err)
	}
	if len(res) < 3 {
		return protocol.Message{}, false, fmt.Errorf("append %s: unexpected reply %v", m.Room, res)
	}
	dup, _ := res[0].(int64)
	epoch, _ := res[1].(string)
	seq, err := toInt(res[2])
	if err != nil {
		return protocol.Message{}, false, fmt.Errorf("append %s: seq: %w", m.Room, err)
	}
	if dup == 1 {
		if len(res) < 4 {
			return protocol.Message{}, false, fmt.Errorf("append %s: unexpected reply %v", m.Room, res)
		}
		orig, err := decodeEntry(m.Room, epoch, seq, res[3])
		if err != nil {
			return protocol.Message{}, false, fmt.Errorf("append %s: %w", m.Room, err)
		}
		return orig, true, nil
	}
	m.Epoch, m.Seq, m.ID, m.TS = epoch, seq, id, now
	return m, false, nil
}

// Recent implements store.Store.
func (s *Store) Recent(ctx context.Context, room string, limit int) (store.Page, error) {
	p, err := s.read(ctx, room, "recent", 0, limit)
	if err != nil {
		return store.Page{}, fmt.Errorf("recent %s: %w", room, err)
	}
	return p, nil
}

// After implements store.Store.
func (s *Store) After(ctx context.Context, room string, after int64, limit int) (store.Page, error) {
	p, err := s.read(ctx, room, "after", after, limit)
	if err != nil {
		return store.Page{}, fmt.Errorf("after %s: %w", room, err)
	}
	return p, nil
}

// Before implements store.Store.
func (s *Store) Before(ctx context.Context, room string, before int64, limit int) (store.Page, error) {
	p, err := s.read(ctx, room, "before", before, limit)
	if err != nil {
		return store.Page{}, fmt.Errorf("before %s: %w", room, err)
	}
	return p, nil
}

// read runs the read script and turns its reply into a Page, oldest first.
func (s *Store) read(ctx context.Context, room, mode string, bound int64, limit int) (store.Page, error) {
	bound = min(max(bound, -1), maxBound)
	cutoff := s.now().UnixMilli() - s.ret.MaxAge.Milliseconds()
	keys := []string{s.roomKey(room, "meta"), s.roomKey(room, "log")}
	res, err := s.readScript.Run(ctx, s.rdb, keys, mode, bound, max(limit, 0), cutoff).Slice()
	if err != nil {
		return store.Page{}, err
	}
	if len(res) != 3 {
		return store.Page{}, fmt.Errorf("unexpected reply %v", res)
	}
	epoch, _ := res[0].(string)
	seq, err := toInt(res[1])
	if err != nil {
		return store.Page{}, fmt.Errorf("seq: %w", err)
	}
	entries, _ := res[2].([]any)
	page := store.Page{Epoch: epoch, Seq: seq, Messages: make([]protocol.Message, 0, len(entries))}
	for _, e := range entries {
		pair, ok := e.([]any)
		if !ok || len(pair) != 2 {
			return store.Page{}, fmt.Errorf("unexpected stream entry %v", e)
		}
		id, _ := pair[0].(string)
		entrySeq, err := seqOf(id)
		if err != nil {
			return store.Page{}, err
		}
		m, err := decodeEntry(room, epoch, entrySeq, pair[1])
		if err != nil {
			return store.Page{}, err
		}
		page.Messages = append(page.Messages, m)
	}
	if mode != "after" {
		slices.Reverse(page.Messages)
	}
	return page, nil
}

// Rooms implements store.Store. It walks the rooms index newest first and
// skips rooms whose history is gone (flushed, or idle past MaxAge but not yet
// pruned from the index), so the list only names rooms that can be read.
//
// A repeated append (dup) also counts as activity: the index is updated in
// the same round trip as the script, before its outcome is known.
func (s *Store) Rooms(ctx context.Context, limit int) ([]store.RoomInfo, error) {
	out := []store.RoomInfo{}
	if limit <= 0 {
		return out, nil
	}
	cutoff := s.now().UnixMilli() - s.ret.MaxAge.Milliseconds()
	for offset := int64(0); len(out) < limit; {
		batch, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.roomsKey, &redis.ZRangeBy{
			Max: "+inf", Min: strconv.FormatInt(cutoff, 10), Offset: offset, Count: int64(limit),
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("rooms: %w", err)
		}
		if len(batch) == 0 {
			return out, nil
		}
		offset += int64(len(batch))

		metas := make([]*redis.SliceCmd, len(batch))
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, z := range batch {
				room, _ := z.Member.(string)
				metas[i] = p.HMGet(ctx, s.roomKey(room, "meta"), "seq", "last")
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("rooms: %w", err)
		}
		for i, z := range batch {
			vals := metas[i].Val()
			if len(vals) != 2 || vals[0] == nil || vals[1] == nil {
				continue // flushed or expired: no history left
			}
			seq, err := toInt(vals[0])
			if err != nil {
				return nil, fmt.Errorf("rooms: seq: %w", err)
			}
			last, err := toInt(vals[1])
			if err != nil {
				return nil, fmt.Errorf("rooms: last: %w", err)
			}
			if last < cutoff {
				continue // idle past MaxAge: its next append starts afresh
			}
			room, _ := z.Member.(string)
			out = append(out, store.RoomInfo{
				Room: room, Seq: seq, LastActivity: time.UnixMilli(int64(z.Score)).UTC(),
			})
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

// decodeEntry turns a stream entry's field list (as a script returns it) into
// a message of the given room, epoch and seq.
func decodeEntry(room, epoch string, seq int64, fields any) (protocol.Message, error) {
	list, ok := fields.([]any)
	if !ok || len(list)%2 != 0 {
		return protocol.Message{}, fmt.Errorf("unexpected fields of entry %d: %v", seq, fields)
	}
	m := protocol.Message{Room: room, Epoch: epoch, Seq: seq}
	for i := 0; i < len(list); i += 2 {
		k, _ := list[i].(string)
		v, _ := list[i+1].(string)
		switch k {
		case "id":
			m.ID = v
		case "ts":
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return protocol.Message{}, fmt.Errorf("ts of entry %d: %w", seq, err)
			}
			m.TS = time.UnixMilli(ms).UTC()
		case "uid":
			m.User.ID = v
		case "uname":
			m.User.Name = v
		case "text":
			m.Text = v
		case "cmid":
			m.ClientMsgID = v
		}
	}
	return m, nil
}

// seqOf returns the seq of a stream entry id "<seq>-0".
func seqOf(id string) (int64, error) {
	for i := 0; i < len(id); i++ {
		if id[i] == '-' {
			id = id[:i]
			break
		}
	}
	seq, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stream entry id %q: %w", id, err)
	}
	return seq, nil
}

// toInt reads an integer that Redis may return as a number or as a string.
func toInt(v any) (int64, error) {
	switch v := v.(type) {
	case int64:
		return v, nil
	case string:
		return strconv.ParseInt(v, 10, 64)
	case nil:
		return 0, errors.New("missing")
	default:
		return 0, fmt.Errorf("unexpected %T", v)
	}
}
