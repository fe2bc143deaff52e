//go:build integration

package redisstore

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
	"github.com/parleychat/parley/internal/store/storetest"
	"github.com/parleychat/parley/internal/testenv"
)

// newAdmin returns a plain client on the test Redis, for looking at and
// deleting keys behind a Store's back. An unreachable Redis fails the test.
func newAdmin(tb testing.TB) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		tb.Fatalf("parse %s: %v", testenv.RedisURL(), err)
	}
	rdb := redis.NewClient(opt)
	tb.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("redis at %s is not reachable: %v", testenv.RedisURL(), err)
	}
	return rdb
}

// uniquePrefix returns a key prefix of the test's own and deletes every key
// under it when the test ends.
func uniquePrefix(tb testing.TB, admin *redis.Client) string {
	tb.Helper()
	prefix := testenv.Unique(tb) + ":"
	tb.Cleanup(func() { deleteKeys(tb, admin, prefix+"*") })
	return prefix
}

// deleteKeys deletes the keys matching pattern.
func deleteKeys(tb testing.TB, admin *redis.Client, pattern string) {
	tb.Helper()
	ctx := context.Background()
	iter := admin.Scan(ctx, 0, pattern, 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		tb.Errorf("scan %s: %v", pattern, err)
		return
	}
	if len(keys) > 0 {
		if err := admin.Del(ctx, keys...).Err(); err != nil {
			tb.Errorf("delete %d keys: %v", len(keys), err)
		}
	}
}

// openStore opens a Store on the test Redis with the given prefix and closes
// it when the test ends.
func openStore(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	if cfg.URL == "" {
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

// TestConformance runs the shared store suite against Redis, each test with
// a key prefix of its own.
func TestConformance(t *testing.T) {
	admin := newAdmin(t)
	storetest.Run(t, func(t *testing.T, ret store.Retention, now func() time.Time) store.Store {
		return openStore(t, Config{Prefix: uniquePrefix(t, admin), Retention: ret, Now: now})
	})
}

func appendOrFail(t *testing.T, s store.Store, m protocol.Message) protocol.Message {
	t.Helper()
	got, _, err := s.Append(t.Context(), m)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return got
}

func chat(room, text, clientMsgID string) protocol.Message {
	return protocol.Message{Room: room, User: protocol.User{ID: "u1", Name: "Ann"}, Text: text, ClientMsgID: clientMsgID}
}

// TestKeyLayout: the keys are where the package doc says, each with an
// expiry, and the stream entry id is the seq.
func TestKeyLayout(t *testing.T) {
	admin := newAdmin(t)
	prefix := uniquePrefix(t, admin)
	s := openStore(t, Config{Prefix: prefix})
	m := appendOrFail(t, s, chat("general", "hi", "c-1"))
	ctx := t.Context()

	for _, key := range []string{prefix + "{general}:meta", prefix + "{general}:log", prefix + "{general}:dedup", prefix + "rooms"} {
		ttl, err := admin.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > 7*24*time.Hour {
			t.Errorf("%s: ttl %v, want up to 7 days (a missing key has a negative ttl)", key, ttl)
		}
	}
	meta, err := admin.HGetAll(ctx, prefix+"{general}:meta").Result()
	if err != nil {
		t.Fatal(err)
	}
	if meta["seq"] != "1" || meta["epoch"] != m.Epoch || meta["last"] != fmt.Sprint(m.TS.UnixMilli()) {
		t.Errorf("meta %v, want seq 1, epoch %s, last %d", meta, m.Epoch, m.TS.UnixMilli())
	}
	entries, err := admin.XRange(ctx, prefix+"{general}:log", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].ID != "1-0" || entries[0].Values["id"] != m.ID || entries[0].Values["text"] != "hi" {
		t.Errorf("stream %+v, want one entry 1-0 holding the message", entries)
	}
}

// TestTwoInstances: two Stores (two gateways, two connection pools) sharing
// a prefix and appending to one room at once still hand out contiguous,
// unique seqs in one epoch.
func TestTwoInstances(t *testing.T) {
	const perStore, writers = 300, 4
	admin := newAdmin(t)
	prefix := uniquePrefix(t, admin)
	stores := []*Store{openStore(t, Config{Prefix: prefix}), openStore(t, Config{Prefix: prefix})}

	var mu sync.Mutex
	seen := make(map[int64]string)
	epochs := make(map[string]bool)
	errs := make(chan error, len(stores)*writers)
	var wg sync.WaitGroup
	for si, s := range stores {
		for w := range writers {
			wg.Go(func() {
				for i := range perStore / writers {
					m, _, err := s.Append(t.Context(), chat("shared", "x", fmt.Sprintf("s%d-w%d-%d", si, w, i)))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if prev, ok := seen[m.Seq]; ok {
						errs <- fmt.Errorf("seq %d given to %s and %s", m.Seq, prev, m.ID)
					}
					seen[m.Seq] = m.ID
					epochs[m.Epoch] = true
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(epochs) != 1 {
		t.Errorf("%d epochs, want 1", len(epochs))
	}
	total := int64(len(stores) * perStore)
	for seq := int64(1); seq <= total; seq++ {
		if _, ok := seen[seq]; !ok {
			t.Fatalf("seq %d never given: a hole", seq)
		}
	}
	// Each store reads what the other wrote.
	for i, s := range stores {
		p, err := s.Recent(t.Context(), "shared", 1)
		if err != nil {
			t.Fatal(err)
		}
		if p.Seq != total || len(p.Messages) != 1 || p.Messages[0].ID != seen[total] {
			t.Errorf("store %d reads seq %d, want %d with id %s", i, p.Seq, total, seen[total])
		}
	}
}

// TestFlushedRoom: when a room's keys vanish (FLUSHDB, a failover to an
// empty replica, eviction), the next append starts a new epoch at seq 1, and
// nothing of the old epoch leaks into it, even if only the meta key was lost.
func TestFlushedRoom(t *testing.T) {
	admin := newAdmin(t)
	prefix := uniquePrefix(t, admin)
	s := openStore(t, Config{Prefix: prefix})
	ctx := t.Context()

	var old protocol.Message
	for i := range 5 {
		old = appendOrFail(t, s, chat("general", fmt.Sprint(i), fmt.Sprintf("c-%d", i)))
	}
	deleteKeys(t, admin, prefix+"{general}:*")
	p, err := s.Recent(ctx, "general", 10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Epoch != "" || p.Seq != 0 || len(p.Messages) != 0 {
		t.Errorf("flushed room reads as %+v, want empty", p)
	}
	m, dup, err := s.Append(ctx, chat("general", "again", "c-4"))
	if err != nil {
		t.Fatal(err)
	}
	if dup || m.Seq != 1 || m.Epoch == old.Epoch {
		t.Fatalf("after flush: seq %d dup %v epoch %q (old %q), want 1 false and a new epoch", m.Seq, dup, m.Epoch, old.Epoch)
	}

	// Only the meta key lost: the stream and dedup set left over from the
	// previous epoch must not resurface.
	for i := range 3 {
		appendOrFail(t, s, chat("general", fmt.Sprint(i), fmt.Sprintf("d-%d", i)))
	}
	if err := admin.Del(ctx, prefix+"{general}:meta").Err(); err != nil {
		t.Fatal(err)
	}
	m2, dup, err := s.Append(ctx, chat("general", "third epoch", "d-0"))
	if err != nil {
		t.Fatal(err)
	}
	if dup || m2.Seq != 1 || m2.Epoch == m.Epoch {
		t.Fatalf("after losing meta: seq %d dup %v epoch %q, want 1 false and a new epoch", m2.Seq, dup, m2.Epoch)
	}
	p, err = s.After(ctx, "general", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Messages) != 1 || p.Messages[0].Text != "third epoch" || p.Epoch != m2.Epoch {
		t.Errorf("after losing meta the room reads %+v, want only the new message", p)
	}
}

// TestKeysExpire: with a real clock, an idle room's keys (and the rooms
// index) really expire after MaxAge, and the next append starts afresh.
func TestKeysExpire(t *testing.T) {
	admin := newAdmin(t)
	prefix := uniquePrefix(t, admin)
	s := openStore(t, Config{Prefix: prefix, Retention: store.Retention{MaxAge: 300 * time.Millisecond}})
	ctx := t.Context()
	first := appendOrFail(t, s, chat("general", "short-lived", "c-1"))
	keys := []string{prefix + "{general}:meta", prefix + "{general}:log", prefix + "{general}:dedup", prefix + "rooms"}
	if n, err := admin.Exists(ctx, keys...).Result(); err != nil || n != int64(len(keys)) {
		t.Fatalf("%d of %d keys exist (%v) right after the append", n, len(keys), err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := admin.Exists(ctx, keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still exist 5s after a 300ms MaxAge", n)
		}
		time.Sleep(50 * time.Millisecond) // polling Redis, not waiting for an event we could observe
	}
	m, dup, err := s.Append(ctx, chat("general", "back", "c-1"))
	if err != nil {
		t.Fatal(err)
	}
	if dup || m.Seq != 1 || m.Epoch == first.Epoch {
		t.Errorf("after expiry: seq %d dup %v epoch %q (old %q), want 1 false and a new epoch", m.Seq, dup, m.Epoch, first.Epoch)
	}
}

// TestDedupBounded: the dedup set and the stream stay near MaxLen however
// many messages a room gets.
func TestDedupBounded(t *testing.T) {
	const maxLen, total = 50, 1000
	admin := newAdmin(t)
	prefix := uniquePrefix(t, admin)
	s := openStore(t, Config{Prefix: prefix, Retention: store.Retention{MaxLen: maxLen}})
	ctx := t.Context()
	for i := range total {
		appendOrFail(t, s, chat("general", "x", fmt.Sprintf("c-%d", i)))
	}
	xlen, err := admin.XLen(ctx, prefix+"{general}:log").Result()
	if err != nil {
		t.Fatal(err)
	}
	zcard, err := admin.ZCard(ctx, prefix+"{general}:dedup").Result()
	if err != nil {
		t.Fatal(err)
	}
	if xlen < maxLen || xlen > maxLen+150 {
		t.Errorf("stream holds %d entries, want %d to %d", xlen, maxLen, maxLen+150)
	}
	if zcard < maxLen || zcard > xlen+100 {
		t.Errorf("dedup set holds %d entries for a stream of %d, want at most %d", zcard, xlen, xlen+100)
	}
}

// TestScriptCacheLost: when Redis has forgotten the scripts (a restart, a
// SCRIPT FLUSH), appends and reads still work. The scripts get a unique
// suffix so that this test never touches the shared script cache.
func TestScriptCacheLost(t *testing.T) {
	admin := newAdmin(t)
	prefix := uniquePrefix(t, admin)
	s := openStore(t, Config{Prefix: prefix})
	s.appendScript = redis.NewScript(retainedLua + appendLua + "\n-- " + prefix)
	s.readScript = redis.NewScript(retainedLua + readLua + "\n-- " + prefix)
	m := appendOrFail(t, s, chat("general", "hi", "c-1"))
	if m.Seq != 1 {
		t.Errorf("seq %d, want 1", m.Seq)
	}
	p, err := s.Recent(t.Context(), "general", 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Messages) != 1 || p.Messages[0].ID != m.ID {
		t.Errorf("read %+v, want the message", p)
	}
}

// proxy forwards TCP connections to Redis until it is told to stop
// forwarding (freeze: Redis looks hung) or to drop everything (kill: Redis
// looks dead). It lets a test break "Redis" without touching the real one.
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  []net.Conn
	frozen bool
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.kill)
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(up, c) })
		p.wg.Go(func() { p.pipe(c, up) })
	}
}

// pipe copies src to dst, dropping what it reads while the proxy is frozen.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.isFrozen() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

func (p *proxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// kill closes the listener and every connection, and waits for the proxy's
// goroutines to end.
func (p *proxy) kill() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// url returns the test Redis URL pointed at the proxy.
func (p *proxy) url(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

func redisAddr(t *testing.T) string {
	t.Helper()
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	return opt.Addr
}

// TestRedisGoesAway: a send to a Redis that died, or hangs, after the
// gateway started fails within about two seconds rather than blocking the
// sender; reads and Ping fail too.
func TestRedisGoesAway(t *testing.T) {
	for _, mode := range []string{"dead", "hung"} {
		t.Run(mode, func(t *testing.T) {
			admin := newAdmin(t)
			prefix := uniquePrefix(t, admin)
			px := startProxy(t, redisAddr(t))
			s := openStore(t, Config{URL: px.url(t), Prefix: prefix})
			appendOrFail(t, s, chat("general", "before", "c-1"))

			if mode == "dead" {
				px.kill()
			} else {
				px.freeze()
			}
			ctx := context.Background() // no deadline: the store's own timeouts must act
			for what, op := range map[string]func() error{
				"Append": func() error { _, _, err := s.Append(ctx, chat("general", "after", "c-2")); return err },
				"Recent": func() error { _, err := s.Recent(ctx, "general", 10); return err },
				"Rooms":  func() error { _, err := s.Rooms(ctx, 10); return err },
				"Ping":   func() error { return s.Ping(ctx) },
			} {
				begin := time.Now()
				err := op()
				took := time.Since(begin)
				if err == nil {
					t.Errorf("%s succeeded with Redis %s", what, mode)
				}
				if took > 2*time.Second {
					t.Errorf("%s took %v to fail, want under 2s", what, took)
				}
			}
			px.kill() // let the Store close its connections promptly
		})
	}
}

// TestCallerDeadline: a caller's context deadline shorter than the store's
// timeouts is respected.
func TestCallerDeadline(t *testing.T) {
	admin := newAdmin(t)
	prefix := uniquePrefix(t, admin)
	px := startProxy(t, redisAddr(t))
	s := openStore(t, Config{URL: px.url(t), Prefix: prefix})
	appendOrFail(t, s, chat("general", "before", "c-1"))
	px.freeze()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, _, err := s.Append(ctx, chat("general", "after", "c-2"))
	if err == nil {
		t.Fatal("Append succeeded against a hung Redis")
	}
	if took := time.Since(begin); took > 800*time.Millisecond {
		t.Errorf("Append took %v with a 200ms deadline", took)
	}
	px.kill()
}

// TestPingDoesNotWaitForTheBusyPool: with every pooled connection busy (as
// when thousands of clients join at once), Ping still answers as soon as
// Redis does.
func TestPingDoesNotWaitForTheBusyPool(t *testing.T) {
	admin := newAdmin(t)
	prefix := uniquePrefix(t, admin)
	u, err := url.Parse(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_size", "2")
	u.RawQuery = q.Encode()
	s := openStore(t, Config{URL: u.String(), Prefix: prefix})
	// Two blocking pops on a key nobody pushes to hold both connections.
	var wg sync.WaitGroup
	defer wg.Wait()
	for range 2 {
		wg.Go(func() { _ = s.rdb.BLPop(context.Background(), 2*time.Second, prefix+"nothing").Err() })
	}
	deadline := time.Now().Add(time.Second)
	for strings.Count(admin.ClientList(context.Background()).Val(), "cmd=blpop") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the blocking pops did not start")
		}
		runtime.Gosched()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping with the pool busy: %v", err)
	}
}

// BenchmarkRedis runs the shared store benchmarks against the test Redis.
func BenchmarkRedis(b *testing.B) {
	admin := newAdmin(b)
	storetest.Benchmark(b, func(b *testing.B) store.Store {
		return openStore(b, Config{Prefix: uniquePrefix(b, admin)})
	})
}
