//go:build integration

package redispresence

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/internal/presence"
	"github.com/parleychat/parley/internal/presence/presencetest"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store/storetest"
	"github.com/parleychat/parley/internal/testenv"
)

// newClient returns a client on the test Redis with the history store's
// timeouts (1s per command, no retries), as a gateway would share it, and
// closes it when the test ends. An unreachable Redis fails the test.
func newClient(tb testing.TB) *redis.Client {
	tb.Helper()
	return newClientTimeout(tb, time.Second)
}

// newClientTimeout is newClient with the given read and write timeout, for
// tests that count round trips rather than time them: under the parallel
// race suite a 10,000-entry pipeline may take Redis longer than the
// product's one second.
func newClientTimeout(tb testing.TB, timeout time.Duration) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		tb.Fatalf("parse %s: %v", testenv.RedisURL(), err)
	}
	opt.ReadTimeout, opt.WriteTimeout, opt.MaxRetries = timeout, timeout, -1
	opt.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opt)
	tb.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("redis at %s is not reachable: %v", testenv.RedisURL(), err)
	}
	return rdb
}

// uniquePrefix returns a key prefix of the test's own and deletes every key
// under it when the test ends.
func uniquePrefix(tb testing.TB) string {
	tb.Helper()
	prefix := testenv.Unique(tb) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := testenv.DeleteKeys(ctx, prefix); err != nil {
			tb.Errorf("delete keys %s*: %v", prefix, err)
		}
	})
	return prefix
}

// open returns a Store with cfg (on the test Redis if cfg names none) and
// closes it when the test ends.
func open(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	if cfg.Client == nil && cfg.URL == "" {
		cfg.URL = testenv.RedisURL()
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func entry(room, conn, uid, gw string) presence.Entry {
	return presence.Entry{Room: room, ConnID: conn, Gateway: gw, User: protocol.User{ID: uid, Name: "name of " + uid}}
}

// must(f())(t) returns f's value, failing the test if f failed.
func must[T any](v T, err error) func(testing.TB) T {
	return func(tb testing.TB) T {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return v
	}
}

// TestConformance runs the shared presence suite against Redis, every store
// on one shared client (as a gateway shares the history store's), each test
// with a key prefix of its own.
func TestConformance(t *testing.T) {
	rdb := newClient(t)
	presencetest.Run(t, func(t *testing.T, ttl time.Duration, now func() time.Time) presence.Store {
		return open(t, Config{Client: rdb, Prefix: uniquePrefix(t), TTL: ttl, Now: now})
	})
}

// TestKeyLayout: the keys are where the package doc says, hold what it says,
// and expire; removing the room's last entry deletes all but the
// tombstones, which expire a TTL later.
func TestKeyLayout(t *testing.T) {
	rdb := newClient(t)
	prefix := uniquePrefix(t)
	s := open(t, Config{Client: rdb, Prefix: prefix})
	ctx := t.Context()
	ch := must(s.Add(ctx, entry("general", "c1", "u1", "gw-1")))(t)
	base := prefix + "{general}:presence"
	all := []string{base, base + ":info", base + ":tabs", base + ":users", base + ":names", base + ":meta"}
	for _, key := range all {
		ttl := must(rdb.PTTL(ctx, key).Result())(t)
		if ttl <= 0 || ttl > presence.DefaultTTL {
			t.Errorf("%s: ttl %v, want up to %v (a missing key has a negative ttl)", key, ttl, presence.DefaultTTL)
		}
	}
	score := must(rdb.ZScore(ctx, base, "c1").Result())(t)
	if want := float64(time.Now().Add(presence.DefaultTTL).UnixMilli()); score < want-2000 || score > want+2000 {
		t.Errorf("expiry of c1 %v, want about %v", score, want)
	}
	var info []string
	if err := json.Unmarshal([]byte(must(rdb.HGet(ctx, base+":info", "c1").Result())(t)), &info); err != nil ||
		!slices.Equal(info, []string{"u1", "name of u1", "gw-1"}) {
		t.Errorf("info of c1: %v (%v), want [u1, name of u1, gw-1]", info, err)
	}
	if tabs := must(rdb.ZRange(ctx, base+":tabs", 0, -1).Result())(t); !slices.Equal(tabs, []string{"2:u1c1"}) {
		t.Errorf("tabs %v, want [2:u1c1]", tabs)
	}
	if name := must(rdb.HGet(ctx, base+":names", "u1").Result())(t); name != "name of u1" {
		t.Errorf("name %q", name)
	}
	meta := must(rdb.HGetAll(ctx, base+":meta").Result())(t)
	if presence.Version(meta["epoch"]+":"+meta["n"]) != ch.Version || meta["n"] != "1" {
		t.Errorf("meta %v, want version %q at n=1", meta, ch.Version)
	}

	must(s.Remove(ctx, "general", "c1"))(t)
	if n := must(rdb.Exists(ctx, all...).Result())(t); n != 0 {
		t.Errorf("%d keys left after the last entry was removed, want 0", n)
	}
	ttl := must(rdb.PTTL(ctx, base+":gone").Result())(t)
	if ttl <= 0 || ttl > presence.DefaultTTL {
		t.Errorf("tombstones: ttl %v, want up to %v", ttl, presence.DefaultTTL)
	}
}

// TestTwoGateways: two Stores with pools of their own (two gateways) see
// each other's entries, and one learns of the other's changes by Poll.
func TestTwoGateways(t *testing.T) {
	prefix := uniquePrefix(t)
	gw1, gw2 := open(t, Config{Prefix: prefix}), open(t, Config{Prefix: prefix})
	ctx := t.Context()
	must(gw1.Add(ctx, entry("general", "gw1-a", "u1", "gw-1")))(t)
	if ch := must(gw2.Add(ctx, entry("general", "gw2-a", "u1", "gw-2")))(t); ch.Joined {
		t.Errorf("u1's second tab, on the other gateway, joined: %+v", ch)
	}
	must(gw2.Add(ctx, entry("general", "gw2-b", "u2", "gw-2")))(t)
	want := []protocol.User{{ID: "u1", Name: "name of u1"}, {ID: "u2", Name: "name of u2"}}
	for i, s := range []*Store{gw1, gw2} {
		if got := must(s.Members(ctx, "general"))(t); !slices.Equal(got, want) {
			t.Errorf("gateway %d sees %v, want %v", i+1, got, want)
		}
	}

	known := map[string]presence.Version{"general": ""}
	snaps := must(gw1.Poll(ctx, known, 100))(t)
	if len(snaps) != 1 || !slices.Equal(snaps[0].Members, want) {
		t.Fatalf("gateway 1's first poll: %+v", snaps)
	}
	known["general"] = snaps[0].Version
	must(gw2.Add(ctx, entry("general", "gw2-c", "u3", "gw-2")))(t)
	snaps = must(gw1.Poll(ctx, known, 100))(t)
	if len(snaps) != 1 || snaps[0].Count != 3 {
		t.Fatalf("gateway 1's poll after gateway 2 added u3: %+v, want 3 members", snaps)
	}
	known["general"] = snaps[0].Version
	if ch := must(gw2.Remove(ctx, "general", "gw2-a"))(t); ch.Left {
		t.Errorf("u1 left when their tab on gateway 2 closed, but they have one on gateway 1: %+v", ch)
	}
	if snaps := must(gw1.Poll(ctx, known, 100))(t); len(snaps) != 0 {
		t.Errorf("gateway 1 saw a change when only a tab closed: %+v", snaps)
	}
}

// TestDeadGateway: in real time, with a short TTL, the users of a gateway
// that stops refreshing (it died) leave within the TTL, nobody removing
// them, while a live gateway's users, refreshing every TTL/3, stay; the live
// gateway learns of it by Poll.
func TestDeadGateway(t *testing.T) {
	const ttl = 600 * time.Millisecond
	prefix := uniquePrefix(t)
	live, dead := open(t, Config{Prefix: prefix, TTL: ttl}), open(t, Config{Prefix: prefix, TTL: ttl})
	ctx := t.Context()
	liveEntries := []presence.Entry{entry("general", "l1", "alive", "gw-live"), entry("general", "l2", "both", "gw-live")}
	for _, e := range liveEntries {
		must(live.Add(ctx, e))(t)
	}

	refreshCtx, stopRefresh := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var refreshErr atomic.Value
	wg.Go(func() {
		tick := time.NewTicker(ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-refreshCtx.Done():
				return
			case <-tick.C:
				if err := live.Refresh(refreshCtx, liveEntries); err != nil && refreshCtx.Err() == nil {
					refreshErr.Store(err)
				}
			}
		}
	})
	t.Cleanup(func() { stopRefresh(); wg.Wait() })

	must(dead.Add(ctx, entry("general", "d1", "ghost", "gw-dead")))(t)
	must(dead.Add(ctx, entry("general", "d2", "both", "gw-dead")))(t)
	died := time.Now() // the dead gateway's last write
	known := map[string]presence.Version{"general": ""}
	snaps := must(live.Poll(ctx, known, -1))(t)
	if len(snaps) != 1 || snaps[0].Count != 3 {
		t.Fatalf("before: %+v, want alive, both and ghost", snaps)
	}
	known["general"] = snaps[0].Version

	var gone time.Duration
	for deadline := died.Add(ttl + 2*time.Second); ; {
		snaps := must(live.Poll(ctx, known, -1))(t)
		if len(snaps) == 1 {
			gone = time.Since(died)
			want := []protocol.User{{ID: "alive", Name: "name of alive"}, {ID: "both", Name: "name of both"}}
			if !slices.Equal(snaps[0].Members, want) {
				t.Fatalf("after the dead gateway's entries expired: %v, want %v", snaps[0].Members, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ghost still present %v after its gateway died, TTL %v", time.Since(died), ttl)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis as a gateway does, not waiting for an event
	}
	t.Logf("the dead gateway's user left %v after its last write (TTL %v)", gone, ttl)
	if gone < ttl-50*time.Millisecond || gone > ttl+250*time.Millisecond {
		t.Errorf("ghost left %v after its gateway died, want about the TTL (%v)", gone, ttl)
	}
	// The live gateway's users outlive several TTLs.
	time.Sleep(2 * ttl) // let real time pass: what is tested is that nothing expires
	if got := must(live.Count(ctx, "general"))(t); got != 2 {
		t.Errorf("Count after 2 more TTLs = %d, want 2 (the refreshed users)", got)
	}
	if err, _ := refreshErr.Load().(error); err != nil {
		t.Errorf("refresh: %v", err)
	}
}

// TestKeysExpire: a room whose gateways all died disappears from Redis on
// its own, nobody calling the store.
func TestKeysExpire(t *testing.T) {
	const ttl = 300 * time.Millisecond
	rdb := newClient(t)
	prefix := uniquePrefix(t)
	s := open(t, Config{Client: rdb, Prefix: prefix, TTL: ttl})
	ctx := t.Context()
	must(s.Add(ctx, entry("general", "c1", "u1", "gw-1")))(t)
	must(s.Add(ctx, entry("general", "c2", "u2", "gw-1")))(t)
	must(s.Add(ctx, entry("general", "c3", "u3", "gw-1")))(t)
	must(s.Remove(ctx, "general", "c3"))(t) // some tombstones too
	pattern := prefix + "{general}:presence*"
	if keys := must(rdb.Keys(ctx, pattern).Result())(t); len(keys) != 7 {
		t.Fatalf("keys %v, want 7", keys)
	}
	begin := time.Now()
	for deadline := begin.Add(5 * time.Second); ; {
		keys := must(rdb.Keys(ctx, pattern).Result())(t)
		if len(keys) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys %v still exist 5s after a %v TTL", keys, ttl)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis, not waiting for an event we could observe
	}
	t.Logf("keys gone %v after the last write (TTL %v)", time.Since(begin), ttl)
}

// roundTrips counts what a client sends to Redis: single commands and
// pipelines.
type roundTrips struct {
	single, pipelines, commands atomic.Int64
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.single.Add(1)
		h.commands.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		h.commands.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestOneRoundTrip: a Refresh of 10,000 entries, in one room or spread over
// 1,000, and a Poll of 1,000 rooms, each go to Redis as one pipeline (one
// round trip), and are answered within the shared client's 1s read timeout
// (or they would fail). The times are logged: tens of milliseconds on an
// idle machine.
func TestOneRoundTrip(t *testing.T) {
	rdb := newClientTimeout(t, 10*time.Second)
	hook := &roundTrips{}
	rdb.AddHook(hook)
	ctx := t.Context()
	for _, rooms := range []int{1, 1000} {
		t.Run(fmt.Sprintf("%dRooms", rooms), func(t *testing.T) {
			s := open(t, Config{Client: rdb, Prefix: uniquePrefix(t)})
			entries := make([]presence.Entry, 10_000)
			for i := range entries {
				entries[i] = entry(fmt.Sprintf("room-%d", i%rooms), fmt.Sprintf("conn-%d", i), fmt.Sprintf("user-%d", i/2), "gw-1")
			}
			for round, what := range []string{"creating", "renewing"} {
				hook.single.Store(0)
				hook.pipelines.Store(0)
				hook.commands.Store(0)
				begin := time.Now()
				if err := s.Refresh(ctx, entries); err != nil {
					t.Fatalf("Refresh (%s): %v", what, err)
				}
				took := time.Since(begin)
				t.Logf("Refresh of 10,000 entries in %d rooms, %s: %v, %d pipeline(s) of %d commands",
					rooms, what, took, hook.pipelines.Load(), hook.commands.Load())
				// The very first call may also dial a connection (its setup is
				// a pipeline of its own) or load the script (NOSCRIPT).
				if round > 0 && (hook.pipelines.Load() != 1 || hook.single.Load() != 0) {
					t.Errorf("Refresh took %d pipelines and %d single commands, want 1 and 0", hook.pipelines.Load(), hook.single.Load())
				}
			}
			inRoom0 := map[string]bool{}
			for _, e := range entries {
				if e.Room == "room-0" {
					inRoom0[e.User.ID] = true
				}
			}
			if got := must(s.Count(ctx, "room-0"))(t); got != len(inRoom0) {
				t.Errorf("Count(room-0) = %d, want %d", got, len(inRoom0))
			}

			known := make(map[string]presence.Version, rooms)
			for r := range rooms {
				known[fmt.Sprintf("room-%d", r)] = ""
			}
			snaps := must(s.Poll(ctx, known, 10))(t)
			for _, sn := range snaps {
				known[sn.Room] = sn.Version
			}
			hook.single.Store(0)
			hook.pipelines.Store(0)
			begin := time.Now()
			snaps = must(s.Poll(ctx, known, 10))(t)
			t.Logf("Poll of %d unchanged rooms: %v", rooms, time.Since(begin))
			if len(snaps) != 0 || hook.pipelines.Load() != 1 || hook.single.Load() != 0 {
				t.Errorf("Poll: %d snapshots in %d pipelines and %d single commands, want 0 in 1 and 0",
					len(snaps), hook.pipelines.Load(), hook.single.Load())
			}
		})
	}
}

// TestPruneBounded: when a dead gateway left many entries, each call deletes
// at most the prune limit of them (so no call is slow), while reads are
// right from the first call on, and the room ends up clean.
func TestPruneBounded(t *testing.T) {
	const entries, limit = 1000, 100
	rdb := newClient(t)
	prefix := uniquePrefix(t)
	clock := storetest.NewClock(time.Now())
	s := open(t, Config{Client: rdb, Prefix: prefix, Now: clock.Now})
	s.pruneLimit = limit
	ctx := t.Context()
	var dead []presence.Entry
	for i := range entries {
		dead = append(dead, entry("big", fmt.Sprintf("c%d", i), fmt.Sprintf("u%d", i), "gw-dead"))
	}
	if err := s.Refresh(ctx, dead); err != nil {
		t.Fatal(err)
	}
	clock.Advance(s.TTL())
	must(s.Add(ctx, entry("big", "live", "survivor", "gw-live")))(t)
	base := prefix + "{big}:presence"
	for i := 1; ; i++ {
		if got := must(s.Count(ctx, "big"))(t); got != 1 {
			t.Fatalf("Count after %d calls = %d, want 1", i, got)
		}
		conns := must(rdb.ZCard(ctx, base).Result())(t)
		users := must(rdb.ZCard(ctx, base+":users").Result())(t)
		// The Add was call 1.
		if want := int64(max(entries-(i+1)*limit, 0) + 1); conns != want || users != want {
			t.Fatalf("after %d calls: %d connections and %d users stored, want %d", i+1, conns, users, want)
		}
		if conns == 1 {
			break
		}
	}
	if n := must(rdb.HLen(ctx, base+":info").Result())(t); n != 1 {
		t.Errorf("%d connection records left, want 1", n)
	}
	if n := must(rdb.ZCard(ctx, base+":tabs").Result())(t); n != 1 {
		t.Errorf("%d tabs left, want 1", n)
	}
	if n := must(rdb.HLen(ctx, base+":names").Result())(t); n != 1 {
		t.Errorf("%d names left, want 1", n)
	}
}

// TestLostKeys: when Redis loses a room's keys (a flush, a failover to an
// empty replica), reads show an empty room at once, the next refresh brings
// the members back, and the version is a new one, never the old one.
func TestLostKeys(t *testing.T) {
	rdb := newClient(t)
	prefix := uniquePrefix(t)
	s := open(t, Config{Client: rdb, Prefix: prefix})
	ctx := t.Context()
	entries := []presence.Entry{entry("general", "c1", "u1", "gw-1"), entry("general", "c2", "u2", "gw-1")}
	must(s.Add(ctx, entries[0]))(t)
	old := must(s.Add(ctx, entries[1]))(t).Version
	for _, lost := range [][]string{{""}, {":meta"}} {
		var keys []string
		base := prefix + "{general}:presence"
		if lost[0] == "" {
			keys = must(rdb.Keys(ctx, base+"*").Result())(t)
		} else {
			keys = []string{base + lost[0]}
		}
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.Refresh(ctx, entries); err != nil {
			t.Fatal(err)
		}
		snaps := must(s.Poll(ctx, map[string]presence.Version{"general": old}, -1))(t)
		if len(snaps) != 1 || snaps[0].Count != 2 || snaps[0].Version == "" {
			t.Fatalf("after losing %v and a refresh: %+v, want both users at a new version", keys, snaps)
		}
		old = snaps[0].Version
	}
}

// TestScriptCacheLost: when Redis has forgotten the scripts (a restart, a
// SCRIPT FLUSH), every call still works. The scripts get a unique suffix so
// that this test never touches the shared script cache.
func TestScriptCacheLost(t *testing.T) {
	rdb := newClient(t)
	prefix := uniquePrefix(t)
	s := open(t, Config{Client: rdb, Prefix: prefix})
	suffix := "\n-- " + prefix
	s.add = redis.NewScript(sharedLua + addLua + suffix)
	s.remove = redis.NewScript(sharedLua + removeLua + suffix)
	s.refresh = redis.NewScript(sharedLua + refreshLua + suffix)
	s.read = redis.NewScript(sharedLua + readLua + suffix + " read")
	ctx := t.Context()
	if err := s.Refresh(ctx, []presence.Entry{entry("a", "c1", "u1", "gw"), entry("b", "c2", "u2", "gw")}); err != nil {
		t.Fatal(err)
	}
	snaps := must(s.Poll(ctx, map[string]presence.Version{"a": "", "b": ""}, -1))(t)
	if len(snaps) != 2 || snaps[0].Count != 1 || snaps[1].Count != 1 {
		t.Errorf("Poll: %+v, want a and b with one member each", snaps)
	}
	s.read = redis.NewScript(sharedLua + readLua + suffix + " members")
	if m := must(s.Members(ctx, "a"))(t); len(m) != 1 {
		t.Errorf("Members: %v", m)
	}
	if ch := must(s.Add(ctx, entry("a", "c3", "u3", "gw")))(t); !ch.Joined {
		t.Errorf("Add: %+v", ch)
	}
	if ch := must(s.Remove(ctx, "a", "c3"))(t); !ch.Left {
		t.Errorf("Remove: %+v", ch)
	}
}

// BenchmarkRedis runs the shared presence benchmarks against the test Redis,
// on a client with the history store's timeouts.
func BenchmarkRedis(b *testing.B) {
	rdb := newClient(b)
	presencetest.Benchmark(b, func(b *testing.B) presence.Store {
		return open(b, Config{Client: rdb, Prefix: uniquePrefix(b)})
	})
}
