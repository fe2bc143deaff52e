// Package storetest is the conformance suite of store.Store: every store
// (Memory, Redis) runs the same tests, so that the embedded default and the
// cluster store keep the contract that gateways and clients rely on
// (contiguous seqs, epochs, idempotent appends, paging, retention).
//
// A store's own test calls Run with a function that opens a fresh, empty
// store; Benchmark does the same for the shared benchmarks.
package storetest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

// Opener returns a new, empty store for one test, holding ret and telling the
// time with now. The store must be independent of every other store the
// suite opens (its own Redis prefix, say), and the opener registers its
// cleanup with t.Cleanup.
//
// The clock is passed in rather than read from the real one so that the
// suite can test retention by age without waiting.
type Opener func(t *testing.T, ret store.Retention, now func() time.Time) store.Store

// Clock is a fake clock that tests move by hand. It is safe for concurrent
// use. The zero value is not usable; use NewClock.
type Clock struct {
	ns atomic.Int64
}

// NewClock returns a Clock showing start.
func NewClock(start time.Time) *Clock {
	c := &Clock{}
	c.ns.Store(start.UnixNano())
	return c
}

// Now returns the clock's time; pass it where a func() time.Time is wanted.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// startNanos is where every test's clock begins (Unix ns): a fixed instant,
// so failures reproduce, with a sub-millisecond part, so that the stores'
// truncation to milliseconds is exercised.
const startNanos = 1_773_500_966_535_897_932

// start returns the instant every test's clock begins at.
func start() time.Time { return time.Unix(0, startNanos).UTC() }

// env is one test's store and clock.
type env struct {
	t     *testing.T
	s     store.Store
	clock *Clock
	ctx   context.Context
}

func newEnv(t *testing.T, open Opener, ret store.Retention) *env {
	t.Helper()
	c := NewClock(start())
	return &env{t: t, s: open(t, ret, c.Now), clock: c, ctx: t.Context()}
}

// msg returns a message as a gateway hands it to Append.
func msg(room, user, text, clientMsgID string) protocol.Message {
	return protocol.Message{
		Room:        room,
		User:        protocol.User{ID: user, Name: "name of " + user},
		Text:        text,
		ClientMsgID: clientMsgID,
	}
}

func (e *env) append(m protocol.Message) (protocol.Message, bool) {
	e.t.Helper()
	got, dup, err := e.s.Append(e.ctx, m)
	if err != nil {
		e.t.Fatalf("Append(%s, %q): %v", m.Room, m.Text, err)
	}
	return got, dup
}

// fill appends n messages to room with texts "m1".."mn" and no client id.
func (e *env) fill(room string, n int) []protocol.Message {
	e.t.Helper()
	out := make([]protocol.Message, n)
	for i := range out {
		out[i], _ = e.append(msg(room, "u1", fmt.Sprintf("m%d", i+1), ""))
	}
	return out
}

func (e *env) recent(room string, limit int) store.Page {
	e.t.Helper()
	p, err := e.s.Recent(e.ctx, room, limit)
	if err != nil {
		e.t.Fatalf("Recent(%s, %d): %v", room, limit, err)
	}
	return p
}

func (e *env) after(room string, after int64, limit int) store.Page {
	e.t.Helper()
	p, err := e.s.After(e.ctx, room, after, limit)
	if err != nil {
		e.t.Fatalf("After(%s, %d, %d): %v", room, after, limit, err)
	}
	return p
}

func (e *env) before(room string, before int64, limit int) store.Page {
	e.t.Helper()
	p, err := e.s.Before(e.ctx, room, before, limit)
	if err != nil {
		e.t.Fatalf("Before(%s, %d, %d): %v", room, before, limit, err)
	}
	return p
}

func (e *env) rooms(limit int) []store.RoomInfo {
	e.t.Helper()
	r, err := e.s.Rooms(e.ctx, limit)
	if err != nil {
		e.t.Fatalf("Rooms(%d): %v", limit, err)
	}
	return r
}

// seqs lists the seqs of a page's messages.
func seqs(p store.Page) []int64 {
	out := make([]int64, len(p.Messages))
	for i, m := range p.Messages {
		out[i] = m.Seq
	}
	return out
}

// span returns lo, lo+1, ..., hi (empty when hi < lo).
func span(lo, hi int64) []int64 {
	out := []int64{}
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

func equalSeqs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sameMessage reports how got differs from want, or "" if it does not.
func sameMessage(got, want protocol.Message) string {
	switch {
	case got.Room != want.Room:
		return fmt.Sprintf("room %q, want %q", got.Room, want.Room)
	case got.Epoch != want.Epoch:
		return fmt.Sprintf("epoch %q, want %q", got.Epoch, want.Epoch)
	case got.Seq != want.Seq:
		return fmt.Sprintf("seq %d, want %d", got.Seq, want.Seq)
	case got.ID != want.ID:
		return fmt.Sprintf("id %q, want %q", got.ID, want.ID)
	case got.User != want.User:
		return fmt.Sprintf("user %+v, want %+v", got.User, want.User)
	case got.Text != want.Text:
		return fmt.Sprintf("text %q, want %q", got.Text, want.Text)
	case !got.TS.Equal(want.TS):
		return fmt.Sprintf("ts %v, want %v", got.TS, want.TS)
	case got.TS.Location() != time.UTC:
		return fmt.Sprintf("ts %v is not in UTC", got.TS)
	case got.ClientMsgID != want.ClientMsgID:
		return fmt.Sprintf("client_msg_id %q, want %q", got.ClientMsgID, want.ClientMsgID)
	}
	return ""
}

// checkPage fails the test unless p has the given epoch, seq and message
// seqs, and its Messages slice is non-nil.
func checkPage(t *testing.T, what string, p store.Page, epoch string, seq int64, want []int64) {
	t.Helper()
	if p.Epoch != epoch || p.Seq != seq {
		t.Errorf("%s: page epoch %q seq %d, want %q %d", what, p.Epoch, p.Seq, epoch, seq)
	}
	if p.Messages == nil {
		t.Errorf("%s: Messages is nil, want a non-nil slice", what)
	}
	if got := seqs(p); !equalSeqs(got, want) {
		t.Errorf("%s: seqs %v, want %v", what, got, want)
	}
	for _, m := range p.Messages {
		if m.Epoch != p.Epoch {
			t.Errorf("%s: message %d has epoch %q, page %q", what, m.Seq, m.Epoch, p.Epoch)
		}
	}
}

// Run runs the conformance suite against the stores open returns. Its tests
// run in parallel with each other.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"FirstAppend", testFirstAppend},
		{"RoundTrip", testRoundTrip},
		{"ConcurrentAppends", testConcurrentAppends},
		{"IndependentRooms", testIndependentRooms},
		{"Idempotency", testIdempotency},
		{"ConcurrentRetries", testConcurrentRetries},
		{"EmptyRoom", testEmptyRoom},
		{"Paging", testPaging},
		{"MaxLen", testMaxLen},
		{"MaxAge", testMaxAge},
		{"IdleRoomNewEpoch", testIdleRoomNewEpoch},
		{"Rooms", testRooms},
		{"RoomsRetention", testRoomsRetention},
		{"Ping", testPing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open)
		})
	}
}

// testFirstAppend: the first message of a room gets seq 1 in a new, non-empty
// epoch, a unique id and the store's time (UTC, ms precision); the gateway's
// fields come back unchanged.
func testFirstAppend(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{})
	in := msg("general", "u1", "hello", "c-1")
	got, dup := e.append(in)
	if dup {
		t.Error("first append: dup = true")
	}
	if got.Seq != 1 {
		t.Errorf("first append: seq %d, want 1", got.Seq)
	}
	if got.Epoch == "" {
		t.Error("first append: empty epoch")
	}
	if got.ID == "" {
		t.Error("first append: empty id")
	}
	if want := start().Truncate(time.Millisecond); !got.TS.Equal(want) || got.TS.Location() != time.UTC {
		t.Errorf("first append: ts %v, want %v in UTC", got.TS, want)
	}
	if got.Room != in.Room || got.User != in.User || got.Text != in.Text || got.ClientMsgID != in.ClientMsgID {
		t.Errorf("first append changed the gateway's fields: got %+v from %+v", got, in)
	}

	e.clock.Advance(time.Second)
	second, _ := e.append(msg("general", "u2", "hi", "c-1"))
	if second.Seq != 2 || second.Epoch != got.Epoch {
		t.Errorf("second append: seq %d epoch %q, want 2 %q", second.Seq, second.Epoch, got.Epoch)
	}
	if second.ID == got.ID {
		t.Errorf("second append reused id %q", got.ID)
	}
	if !second.TS.Equal(start().Add(time.Second).Truncate(time.Millisecond)) {
		t.Errorf("second append: ts %v, want the clock's", second.TS)
	}
}

// testRoundTrip: what Append returns is exactly what every read returns,
// including text that is awkward to store (quotes, newlines, non-ASCII).
func testRoundTrip(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{})
	texts := []string{"plain", "with \"quotes\" and \\ and\nnewline", "żółw 🐢 ok", " ", "x"}
	var stored []protocol.Message
	for i, text := range texts {
		cmid := ""
		if i%2 == 0 {
			cmid = fmt.Sprintf("c:%d.x_y-z", i)
		}
		m, _ := e.append(msg("r.1", fmt.Sprintf("user-%d", i), text, cmid))
		stored = append(stored, m)
		e.clock.Advance(1234567 * time.Microsecond)
	}
	for _, p := range []store.Page{e.recent("r.1", 10), e.after("r.1", 0, 10), e.before("r.1", 100, 10)} {
		if len(p.Messages) != len(stored) {
			t.Fatalf("read %d messages, want %d", len(p.Messages), len(stored))
		}
		for i := range stored {
			if diff := sameMessage(p.Messages[i], stored[i]); diff != "" {
				t.Errorf("message %d read back: %s", i+1, diff)
			}
		}
	}
}

// testConcurrentAppends: 8 writers x 200 appends to one room get seqs 1..1600
// with no duplicate and no hole, unique ids, one epoch; and the history read
// back is in seq order with the same ids.
func testConcurrentAppends(t *testing.T, open Opener) {
	const writers, each = 8, 200
	e := newEnv(t, open, store.Retention{})
	results := make([][]protocol.Message, writers)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				m, dup, err := e.s.Append(e.ctx, msg("busy", fmt.Sprintf("w%d", w), "t", fmt.Sprintf("c%d", i)))
				if err != nil {
					errs <- err
					return
				}
				if dup {
					errs <- fmt.Errorf("writer %d append %d: dup", w, i)
					return
				}
				results[w] = append(results[w], m)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	bySeq := make(map[int64]protocol.Message)
	ids := make(map[string]bool)
	epoch := results[0][0].Epoch
	for w, ms := range results {
		last := int64(0)
		for _, m := range ms {
			if _, ok := bySeq[m.Seq]; ok {
				t.Fatalf("seq %d given twice", m.Seq)
			}
			bySeq[m.Seq] = m
			if ids[m.ID] {
				t.Fatalf("id %q given twice", m.ID)
			}
			ids[m.ID] = true
			if m.Epoch != epoch {
				t.Fatalf("epoch %q, want %q", m.Epoch, epoch)
			}
			if m.Seq <= last {
				t.Fatalf("writer %d saw seq %d after %d", w, m.Seq, last)
			}
			last = m.Seq
		}
	}
	for s := int64(1); s <= writers*each; s++ {
		if _, ok := bySeq[s]; !ok {
			t.Fatalf("seq %d missing: seqs have a hole", s)
		}
	}

	var read []protocol.Message
	for after := int64(0); ; {
		p := e.after("busy", after, 100)
		if len(p.Messages) == 0 {
			break
		}
		if p.Messages[0].Seq <= after {
			t.Fatalf("After(%d) returned seq %d", after, p.Messages[0].Seq)
		}
		read = append(read, p.Messages...)
		after = p.Messages[len(p.Messages)-1].Seq
	}
	if len(read) != writers*each {
		t.Fatalf("read back %d messages, want %d", len(read), writers*each)
	}
	for i, m := range read {
		if diff := sameMessage(m, bySeq[int64(i+1)]); diff != "" {
			t.Fatalf("message %d read back: %s", i+1, diff)
		}
	}
}

// testIndependentRooms: rooms appended to at the same time each count from 1
// in epochs of their own.
func testIndependentRooms(t *testing.T, open Opener) {
	const rooms, each = 4, 100
	e := newEnv(t, open, store.Retention{})
	got := make([][]protocol.Message, rooms)
	errs := make(chan error, rooms)
	var wg sync.WaitGroup
	for r := range rooms {
		wg.Go(func() {
			for range each {
				m, _, err := e.s.Append(e.ctx, msg(fmt.Sprintf("room-%d", r), "u", "t", ""))
				if err != nil {
					errs <- err
					return
				}
				got[r] = append(got[r], m)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	epochs := make(map[string]bool)
	for r, ms := range got {
		for i, m := range ms {
			if m.Seq != int64(i+1) {
				t.Fatalf("room %d: append %d got seq %d", r, i+1, m.Seq)
			}
			if m.Room != fmt.Sprintf("room-%d", r) {
				t.Fatalf("room %d: message of room %q", r, m.Room)
			}
		}
		epochs[ms[0].Epoch] = true
		checkPage(t, fmt.Sprintf("room-%d", r), e.recent(fmt.Sprintf("room-%d", r), 3), ms[0].Epoch, each, span(each-2, each))
	}
	if len(epochs) != rooms {
		t.Errorf("%d rooms share %d epochs, want one each", rooms, len(epochs))
	}
}

// testIdempotency: a retry (same user and client_msg_id in the same room)
// returns the original and stores nothing; another user, another room or an
// empty client_msg_id is never a retry.
func testIdempotency(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{})
	orig, _ := e.append(msg("general", "u1", "hello", "c-1"))

	e.clock.Advance(5 * time.Second)
	again, dup := e.append(msg("general", "u1", "hello, edited by a buggy client", "c-1"))
	if !dup {
		t.Fatal("retry: dup = false")
	}
	if diff := sameMessage(again, orig); diff != "" {
		t.Errorf("retry did not return the original: %s", diff)
	}
	checkPage(t, "after retry", e.recent("general", 10), orig.Epoch, 1, []int64{1})

	other, dup := e.append(msg("general", "u2", "hello", "c-1"))
	if dup || other.Seq != 2 {
		t.Errorf("other user, same client_msg_id: seq %d dup %v, want 2 false", other.Seq, dup)
	}
	for i := range 3 {
		m, dup := e.append(msg("general", "u1", "same text", ""))
		if dup || m.Seq != int64(3+i) {
			t.Errorf("empty client_msg_id, append %d: seq %d dup %v, want %d false", i, m.Seq, dup, 3+i)
		}
	}
	elsewhere, dup := e.append(msg("elsewhere", "u1", "hello", "c-1"))
	if dup || elsewhere.Seq != 1 {
		t.Errorf("same client_msg_id in another room: seq %d dup %v, want 1 false", elsewhere.Seq, dup)
	}

	e.fill("general", 20)
	late, dup := e.append(msg("general", "u1", "hello", "c-1"))
	if !dup || late.Seq != 1 || late.ID != orig.ID {
		t.Errorf("late retry: seq %d id %q dup %v, want 1 %q true", late.Seq, late.ID, dup, orig.ID)
	}
	other2, dup := e.append(msg("general", "u2", "hello", "c-1"))
	if !dup || other2.Seq != 2 || other2.ID != other.ID {
		t.Errorf("other user's retry: seq %d dup %v, want 2 true", other2.Seq, dup)
	}
	checkPage(t, "after all", e.after("general", 0, 100), orig.Epoch, 25, span(1, 25))
}

// testConcurrentRetries: the same send retried by 8 goroutines at once is
// stored exactly once, and every caller learns its seq and id.
func testConcurrentRetries(t *testing.T, open Opener) {
	const n = 8
	e := newEnv(t, open, store.Retention{})
	e.fill("general", 3)
	got := make([]protocol.Message, n)
	dups := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got[i], dups[i], errs[i] = e.s.Append(e.ctx, msg("general", "u9", "once", "retry-me"))
		})
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !dups[i] {
			fresh++
		}
		if got[i].Seq != 4 || got[i].ID != got[0].ID {
			t.Errorf("caller %d: seq %d id %q, want 4 %q", i, got[i].Seq, got[i].ID, got[0].ID)
		}
	}
	if fresh != 1 {
		t.Errorf("%d callers stored the message, want exactly 1", fresh)
	}
	checkPage(t, "after retries", e.recent("general", 10), got[0].Epoch, 4, span(1, 4))
}

// testEmptyRoom: a room never written to reads as no epoch, seq 0 and an
// empty, non-nil list, whatever the request.
func testEmptyRoom(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{})
	e.fill("other", 2)
	for what, p := range map[string]store.Page{
		"Recent":        e.recent("nobody", 50),
		"Recent(0)":     e.recent("nobody", 0),
		"After(0)":      e.after("nobody", 0, 50),
		"After(10)":     e.after("nobody", 10, 50),
		"Before(10)":    e.before("nobody", 10, 50),
		"Before(1)":     e.before("nobody", 1, 50),
		"After(0,lim0)": e.after("nobody", 0, 0),
	} {
		checkPage(t, what, p, "", 0, []int64{})
	}
}

// testPaging: limits, bounds and exclusive edges of Recent, After and Before,
// each page carrying the room's current epoch and seq.
func testPaging(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{})
	ms := e.fill("general", 10)
	ep := ms[0].Epoch
	cases := []struct {
		what string
		page store.Page
		want []int64
	}{
		{"Recent(3)", e.recent("general", 3), span(8, 10)},
		{"Recent(10)", e.recent("general", 10), span(1, 10)},
		{"Recent(100)", e.recent("general", 100), span(1, 10)},
		{"Recent(1)", e.recent("general", 1), []int64{10}},
		{"Recent(0)", e.recent("general", 0), []int64{}},
		{"Recent(-1)", e.recent("general", -1), []int64{}},
		{"After(0,3)", e.after("general", 0, 3), span(1, 3)},
		{"After(3,3)", e.after("general", 3, 3), span(4, 6)},
		{"After(0,100)", e.after("general", 0, 100), span(1, 10)},
		{"After(9,5)", e.after("general", 9, 5), []int64{10}},
		{"After(10,5)", e.after("general", 10, 5), []int64{}},
		{"After(11,5)", e.after("general", 11, 5), []int64{}},
		{"After(1000000,5)", e.after("general", 1_000_000, 5), []int64{}},
		{"After(maxint,5)", e.after("general", 1<<63-1, 5), []int64{}},
		{"After(5,0)", e.after("general", 5, 0), []int64{}},
		{"Before(11,3)", e.before("general", 11, 3), span(8, 10)},
		{"Before(10,3)", e.before("general", 10, 3), span(7, 9)},
		{"Before(4,100)", e.before("general", 4, 100), span(1, 3)},
		{"Before(2,5)", e.before("general", 2, 5), []int64{1}},
		{"Before(1,5)", e.before("general", 1, 5), []int64{}},
		{"Before(0,5)", e.before("general", 0, 5), []int64{}},
		{"Before(1000000,2)", e.before("general", 1_000_000, 2), span(9, 10)},
		{"Before(maxint,2)", e.before("general", 1<<63-1, 2), span(9, 10)},
		{"Before(5,0)", e.before("general", 5, 0), []int64{}},
	}
	for _, c := range cases {
		checkPage(t, c.what, c.page, ep, 10, c.want)
	}

	// Paging backwards from the newest reaches every message once.
	var back []int64
	for before := int64(11); ; {
		p := e.before("general", before, 4)
		if len(p.Messages) == 0 {
			break
		}
		if last := p.Messages[len(p.Messages)-1].Seq; last >= before {
			t.Fatalf("Before(%d) returned seq %d", before, last)
		}
		back = append(seqs(p), back...)
		before = p.Messages[0].Seq
	}
	if !equalSeqs(back, span(1, 10)) {
		t.Errorf("paging back by 4: %v, want 1..10", back)
	}
}

// testMaxLen: a room keeps at least its MaxLen newest messages and forgets
// the oldest once many more are appended. Memory trims exactly; Redis trims
// whole stream nodes (about 100 entries), hence the slack in the upper bound.
// A retry of a message no longer retained is a new message.
func testMaxLen(t *testing.T, open Opener) {
	const maxLen, total, slack = 20, 520, 200
	e := newEnv(t, open, store.Retention{MaxLen: maxLen})
	first, _ := e.append(msg("general", "u1", "first", "c-first"))
	e.fill("general", total-2)
	last, _ := e.append(msg("general", "u1", "last", "c-last"))
	if last.Seq != total {
		t.Fatalf("last seq %d, want %d", last.Seq, total)
	}
	ep := first.Epoch

	checkPage(t, "Recent(MaxLen)", e.recent("general", maxLen), ep, total, span(total-maxLen+1, total))
	all := e.after("general", 0, 10*total)
	n := int64(len(all.Messages))
	if n < maxLen || n > maxLen+slack {
		t.Fatalf("room keeps %d messages, want %d to %d", n, maxLen, maxLen+slack)
	}
	checkPage(t, "After(0)", all, ep, total, span(total-n+1, total))
	checkPage(t, "Before(3)", e.before("general", 3, 10), ep, total, []int64{})

	if m, dup := e.append(msg("general", "u1", "last", "c-last")); !dup || m.Seq != total {
		t.Errorf("retry of a retained message: seq %d dup %v, want %d true", m.Seq, dup, total)
	}
	if m, dup := e.append(msg("general", "u1", "first", "c-first")); dup || m.Seq != total+1 {
		t.Errorf("retry of a trimmed message: seq %d dup %v, want %d false", m.Seq, dup, total+1)
	}
}

// testMaxAge: messages older than MaxAge are not returned, and a send retried
// after its original aged out is a new message; the room itself, still
// active, keeps its epoch and seq.
func testMaxAge(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{MaxAge: time.Hour})
	old, _ := e.append(msg("general", "u1", "old", "c-old"))
	e.clock.Advance(40 * time.Minute)
	mid, _ := e.append(msg("general", "u1", "mid", "c-mid"))
	e.clock.Advance(10 * time.Minute)
	newer := e.fill("general", 3) // seqs 3..5
	ep := old.Epoch
	checkPage(t, "all young", e.recent("general", 10), ep, 5, span(1, 5))

	e.clock.Advance(30 * time.Minute) // old is 80 min old; mid 40; newer 30
	checkPage(t, "Recent", e.recent("general", 10), ep, 5, span(2, 5))
	checkPage(t, "After(0)", e.after("general", 0, 10), ep, 5, span(2, 5))
	checkPage(t, "After(0,2)", e.after("general", 0, 2), ep, 5, span(2, 3))
	checkPage(t, "Before(4)", e.before("general", 4, 10), ep, 5, span(2, 3))
	checkPage(t, "Before(2)", e.before("general", 2, 10), ep, 5, []int64{})

	if m, dup := e.append(msg("general", "u1", "mid", "c-mid")); !dup || m.Seq != mid.Seq {
		t.Errorf("retry of a young message: seq %d dup %v, want %d true", m.Seq, dup, mid.Seq)
	}
	if m, dup := e.append(msg("general", "u1", "old", "c-old")); dup || m.Seq != 6 || m.Epoch != ep {
		t.Errorf("retry of an aged message: seq %d dup %v epoch %q, want 6 false %q", m.Seq, dup, m.Epoch, ep)
	}

	e.clock.Advance(25 * time.Minute) // mid is 65 min old, the newer ones 55
	checkPage(t, "after mid aged", e.recent("general", 10), ep, 6, []int64{3, 4, 5, 6})
	if newer[0].Seq != 3 {
		t.Fatalf("fill started at seq %d", newer[0].Seq)
	}

	// Many messages, most aged (a whole stream node and more, for Redis):
	// pages still start at the oldest young one.
	for range 150 {
		e.append(msg("general", "u1", "bulk", "")) // seqs 7..156
	}
	e.clock.Advance(30 * time.Minute)
	young := e.fill("general", 5)     // seqs 157..161
	e.clock.Advance(40 * time.Minute) // seqs 1..156 are over an hour old
	checkPage(t, "After(0) past many aged", e.after("general", 0, 3), ep, 161, span(157, 159))
	checkPage(t, "After(10) past many aged", e.after("general", 10, 100), ep, 161, span(157, 161))
	checkPage(t, "Before(158)", e.before("general", 158, 100), ep, 161, []int64{157})
	checkPage(t, "Recent", e.recent("general", 100), ep, 161, span(157, 161))
	if young[0].Seq != 157 {
		t.Fatalf("young start at %d, want 157", young[0].Seq)
	}
}

// testIdleRoomNewEpoch: a room idle for longer than MaxAge has no history;
// its next append starts a new epoch at seq 1, and no old message comes back.
func testIdleRoomNewEpoch(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{MaxAge: time.Hour})
	old := e.fill("general", 3)
	e.append(msg("general", "u1", "sent before the gap", "c-1"))

	e.clock.Advance(59 * time.Minute)
	checkPage(t, "just before expiry", e.recent("general", 10), old[0].Epoch, 4, span(1, 4))

	e.clock.Advance(2 * time.Minute)
	checkPage(t, "idle past MaxAge", e.recent("general", 10), "", 0, []int64{})
	checkPage(t, "idle past MaxAge, After", e.after("general", 0, 10), "", 0, []int64{})
	checkPage(t, "idle past MaxAge, Before", e.before("general", 5, 10), "", 0, []int64{})

	fresh, dup := e.append(msg("general", "u1", "back", "c-1"))
	if dup {
		t.Error("append after expiry deduplicated against the lost history")
	}
	if fresh.Seq != 1 || fresh.Epoch == "" || fresh.Epoch == old[0].Epoch {
		t.Fatalf("append after expiry: seq %d epoch %q (old %q), want seq 1 in a new epoch", fresh.Seq, fresh.Epoch, old[0].Epoch)
	}
	checkPage(t, "new epoch", e.after("general", 0, 10), fresh.Epoch, 1, []int64{1})
	if got := e.recent("general", 10).Messages[0].Text; got != "back" {
		t.Errorf("new epoch's message is %q, want \"back\"", got)
	}
}

// testRooms: Rooms lists rooms most recently active first, with their seq
// and last activity, and honours its limit.
func testRooms(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{})
	if got := e.rooms(10); got == nil || len(got) != 0 {
		t.Fatalf("Rooms of an empty store: %v, want an empty non-nil list", got)
	}
	t0 := start().Truncate(time.Millisecond)
	e.append(msg("alpha", "u", "1", ""))
	e.clock.Advance(time.Second)
	e.append(msg("beta", "u", "1", ""))
	e.clock.Advance(time.Second)
	e.append(msg("gamma", "u", "1", ""))
	e.clock.Advance(time.Second)
	e.append(msg("alpha", "u", "2", ""))

	want := []store.RoomInfo{
		{Room: "alpha", Seq: 2, LastActivity: t0.Add(3 * time.Second)},
		{Room: "gamma", Seq: 1, LastActivity: t0.Add(2 * time.Second)},
		{Room: "beta", Seq: 1, LastActivity: t0.Add(time.Second)},
	}
	checkRooms(t, "Rooms(10)", e.rooms(10), want)
	checkRooms(t, "Rooms(3)", e.rooms(3), want)
	checkRooms(t, "Rooms(2)", e.rooms(2), want[:2])
	checkRooms(t, "Rooms(1)", e.rooms(1), want[:1])
	checkRooms(t, "Rooms(0)", e.rooms(0), want[:0])
}

// testRoomsRetention: a room idle past MaxAge is no longer listed, and is
// listed again (at seq 1) once written to.
func testRoomsRetention(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{MaxAge: time.Hour})
	t0 := start().Truncate(time.Millisecond)
	e.fill("quiet", 2)
	e.clock.Advance(50 * time.Minute)
	e.fill("busy", 3)
	checkRooms(t, "both young", e.rooms(10), []store.RoomInfo{
		{Room: "busy", Seq: 3, LastActivity: t0.Add(50 * time.Minute)},
		{Room: "quiet", Seq: 2, LastActivity: t0},
	})
	e.clock.Advance(20 * time.Minute)
	checkRooms(t, "quiet expired", e.rooms(10), []store.RoomInfo{
		{Room: "busy", Seq: 3, LastActivity: t0.Add(50 * time.Minute)},
	})
	e.clock.Advance(time.Minute)
	e.append(msg("quiet", "u", "again", ""))
	checkRooms(t, "quiet back", e.rooms(10), []store.RoomInfo{
		{Room: "quiet", Seq: 1, LastActivity: t0.Add(71 * time.Minute)},
		{Room: "busy", Seq: 3, LastActivity: t0.Add(50 * time.Minute)},
	})
	e.clock.Advance(2 * time.Hour)
	checkRooms(t, "all expired", e.rooms(10), []store.RoomInfo{})
}

func checkRooms(t *testing.T, what string, got, want []store.RoomInfo) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: nil list", what)
	}
	if len(got) != len(want) {
		t.Errorf("%s: %+v, want %+v", what, got, want)
		return
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Room != w.Room || g.Seq != w.Seq || !g.LastActivity.Equal(w.LastActivity) {
			t.Errorf("%s: [%d] = %+v, want %+v (all: %+v)", what, i, g, w, got)
		}
	}
}

// testPing: a store that was just opened answers.
func testPing(t *testing.T, open Opener) {
	e := newEnv(t, open, store.Retention{})
	if err := e.s.Ping(e.ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// Benchmark runs the shared benchmarks against stores that open returns:
// Append (one writer), AppendParallel (GOMAXPROCS writers, one room), and
// Recent and After of 50 messages from a room of 1000.
func Benchmark(b *testing.B, open func(b *testing.B) store.Store) {
	const text = "a benchmark message of ordinary length"
	b.Run("Append", func(b *testing.B) {
		ctx, s := b.Context(), open(b)
		i := 0
		for b.Loop() {
			i++
			if _, _, err := s.Append(ctx, msg("bench", "u1", text, "c"+strconv.Itoa(i))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendParallel", func(b *testing.B) {
		ctx, s := b.Context(), open(b)
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				if _, _, err := s.Append(ctx, msg("bench", "u1", text, "c"+strconv.FormatInt(i, 10))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	read := func(name string, fn func(ctx context.Context, s store.Store) (store.Page, error)) {
		b.Run(name, func(b *testing.B) {
			ctx, s := b.Context(), open(b)
			for i := range 1000 {
				if _, _, err := s.Append(ctx, msg("bench", "u1", text, "c"+strconv.Itoa(i))); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				p, err := fn(ctx, s)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Messages) != 50 {
					b.Fatalf("read %d messages, want 50", len(p.Messages))
				}
			}
		})
	}
	read("Recent50", func(ctx context.Context, s store.Store) (store.Page, error) {
		return s.Recent(ctx, "bench", 50)
	})
	read("After50", func(ctx context.Context, s store.Store) (store.Page, error) {
		return s.After(ctx, "bench", 500, 50)
	})
}
