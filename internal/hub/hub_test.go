package hub_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// member records what the hub pushes to it.
type member struct {
	mu     sync.Mutex
	frames []hub.Frame
	signal chan struct{}
}

func newMember() *member { return &member{signal: make(chan struct{}, 1)} }

func (m *member) Push(f hub.Frame) {
	m.mu.Lock()
	m.frames = append(m.frames, f)
	m.mu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// seqs returns the seqs of the message frames pushed so far, with 0 for other
// frames.
func (m *member) seqs() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int64, len(m.frames))
	for i, f := range m.frames {
		out[i] = f.Seq
	}
	return out
}

// waitFor waits until the member has n frames, and fails the test if that
// takes longer than a few seconds.
func (m *member) waitFor(t *testing.T, n int) []int64 {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if s := m.seqs(); len(s) >= n {
			return s
		}
		select {
		case <-m.signal:
		case <-deadline:
			t.Fatalf("member got %v, want %d frames", m.seqs(), n)
		}
	}
}

type fixture struct {
	hub   *hub.Hub
	store *store.Memory
	msgs  []protocol.Message // appended to the store, by seq-1
}

func newFixture(t *testing.T, cfg hub.Config) *fixture {
	t.Helper()
	st := store.NewMemory(store.Retention{}, nil)
	h := hub.New(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &fixture{hub: h, store: st}
}

// appendN stores n messages in room and returns them; nothing is delivered.
func (f *fixture) appendN(t *testing.T, room string, n int) []protocol.Message {
	t.Helper()
	var out []protocol.Message
	for i := 0; i < n; i++ {
		m, _, err := f.store.Append(context.Background(), protocol.Message{
			Room: room, User: protocol.User{ID: "u1", Name: "Ann"}, Text: fmt.Sprintf("m%d", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (f *fixture) deliver(msgs []protocol.Message, order ...int) {
	for _, i := range order {
		f.hub.Deliver(protocol.EncodeMessage(msgs[i]))
	}
}

func equal(a, b []int64) bool {
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

func joinedFrame(room string) []byte {
	return protocol.Encode(protocol.TypeJoined, protocol.Joined{Room: room})
}

func TestDeliversInOrderAfterJoin(t *testing.T) {
	f := newFixture(t, hub.Config{})
	m := newMember()
	s := f.hub.Subscribe("general", m)
	s.Start(joinedFrame("general"), "", 0)
	msgs := f.appendN(t, "general", 5)
	f.deliver(msgs, 0, 1, 2, 3, 4)
	if got, want := m.waitFor(t, 6), []int64{0, 1, 2, 3, 4, 5}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestReordersEarlyMessagesWithoutReadingTheStore(t *testing.T) {
	// A long repair delay: if the hub read the store, the test would time out
	// before seeing all frames.
	f := newFixture(t, hub.Config{RepairDelay: time.Hour})
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	msgs := f.appendN(t, "general", 4)
	f.deliver(msgs, 0, 2, 3, 1)
	if got, want := m.waitFor(t, 5), []int64{0, 1, 2, 3, 4}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestDropsRepeats(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour})
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	msgs := f.appendN(t, "general", 3)
	f.deliver(msgs, 0, 0, 1, 0, 1, 2, 2)
	if got, want := m.waitFor(t, 4), []int64{0, 1, 2, 3}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestRepairsHoleFromStore(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: 10 * time.Millisecond})
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	msgs := f.appendN(t, "general", 4)
	f.deliver(msgs, 0, 3) // 2 and 3 never come from the broker
	if got, want := m.waitFor(t, 5), []int64{0, 1, 2, 3, 4}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestJoinGetsHistoryThenOnlyLaterMessages(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour})
	msgs := f.appendN(t, "general", 4)

	first := newMember()
	f.hub.Subscribe("general", first).Start(joinedFrame("general"), msgs[0].Epoch, 1)

	// second subscribes, messages 2 and 3 arrive while it reads history,
	// and its history ends at seq 2.
	second := newMember()
	s := f.hub.Subscribe("general", second)
	f.deliver(msgs, 1, 2)
	s.Start(joinedFrame("general"), msgs[0].Epoch, 2)
	f.deliver(msgs, 3)

	if got, want := first.waitFor(t, 4), []int64{0, 2, 3, 4}; !equal(got, want) {
		t.Errorf("first member got %v, want %v", got, want)
	}
	if got, want := second.waitFor(t, 3), []int64{0, 3, 4}; !equal(got, want) {
		t.Errorf("second member got %v, want %v", got, want)
	}
}

func TestFirstJoinBasesTheRoomOnItsHistory(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour})
	msgs := f.appendN(t, "general", 5)
	m := newMember()
	s := f.hub.Subscribe("general", m)
	// Before the room knows where it stands, messages arrive out of order.
	f.deliver(msgs, 4, 2, 3)
	s.Start(joinedFrame("general"), msgs[0].Epoch, 3)
	if got, want := m.waitFor(t, 3), []int64{0, 4, 5}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestMembersShareTheEncodedBytes(t *testing.T) {
	f := newFixture(t, hub.Config{})
	a, b := newMember(), newMember()
	f.hub.Subscribe("general", a).Start(joinedFrame("general"), "", 0)
	f.hub.Subscribe("general", b).Start(joinedFrame("general"), "", 0)
	f.deliver(f.appendN(t, "general", 1), 0)
	a.waitFor(t, 2)
	b.waitFor(t, 2)
	if &a.frames[1].Data[0] != &b.frames[1].Data[0] {
		t.Fatal("members got separate copies of the same message")
	}
}

func TestLeftMemberGetsNothingAndEmptyRoomIsDropped(t *testing.T) {
	f := newFixture(t, hub.Config{})
	a, b := newMember(), newMember()
	sa := f.hub.Subscribe("general", a)
	sa.Start(joinedFrame("general"), "", 0)
	sb := f.hub.Subscribe("general", b)
	sb.Start(joinedFrame("general"), "", 0)
	msgs := f.appendN(t, "general", 2)
	sa.Close()
	sa.Close() // twice is fine
	f.deliver(msgs, 0)
	b.waitFor(t, 2)
	if got := a.seqs(); len(got) != 1 {
		t.Fatalf("member that left got %v", got)
	}
	sb.Close()
	if n := f.hub.Rooms(); n != 0 {
		t.Fatalf("hub has %d rooms after everyone left", n)
	}
	f.deliver(msgs, 1) // a room nobody is in: dropped, no panic
}

func TestLinkUpRepairsEveryRoomFromStore(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour, PollInterval: time.Hour})
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	msgs := f.appendN(t, "general", 2)
	f.deliver(msgs, 0)
	m.waitFor(t, 2)
	// The link drops; messages 2..4 are published while it is down and never
	// reach this gateway's queue.
	f.hub.LinkDown(fmt.Errorf("test"))
	f.appendN(t, "general", 2)
	f.hub.LinkUp()
	if got, want := m.waitFor(t, 5), []int64{0, 1, 2, 3, 4}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestLinkDownServesRoomsFromStore(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour, PollInterval: 10 * time.Millisecond})
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	f.hub.LinkDown(fmt.Errorf("test"))
	f.appendN(t, "general", 3) // stored, never published
	if got, want := m.waitFor(t, 4), []int64{0, 1, 2, 3}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestSkipsHoleTheStoreNoLongerHas(t *testing.T) {
	st := store.NewMemory(store.Retention{MaxLen: 3}, nil)
	h := hub.New(hub.Config{RepairDelay: 10 * time.Millisecond}, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Run(ctx)

	m := newMember()
	h.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	var msgs []protocol.Message
	for i := 0; i < 6; i++ {
		msg, _, _ := st.Append(ctx, protocol.Message{Room: "general", User: protocol.User{ID: "u"}, Text: "x"})
		msgs = append(msgs, msg)
	}
	// Seq 1 arrives; 2 never does and has been trimmed (the store keeps 4..6).
	h.Deliver(protocol.EncodeMessage(msgs[0]))
	h.Deliver(protocol.EncodeMessage(msgs[5]))
	if got, want := m.waitFor(t, 5), []int64{0, 1, 4, 5, 6}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
	cancel()
}

func TestFollowsRoomIntoNewEpoch(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour})
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	f.deliver(f.appendN(t, "general", 3), 0, 1, 2)
	m.waitFor(t, 4)

	// The history is lost: a fresh store numbers the room from 1 again in a
	// new epoch.
	fresh := store.NewMemory(store.Retention{}, nil)
	newer, _, _ := fresh.Append(context.Background(), protocol.Message{Room: "general", User: protocol.User{ID: "u"}, Text: "again"})
	f.hub.Deliver(protocol.EncodeMessage(newer))
	got := m.waitFor(t, 5)
	if got[4] != 1 {
		t.Fatalf("frames %v: want seq 1 of the new epoch last", got)
	}
}

func TestDropsInvalidBodies(t *testing.T) {
	f := newFixture(t, hub.Config{})
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	for _, body := range []string{``, `{`, `[]`, `{"type":"message"}`, `{"type":"typing","room":"general"}`,
		`{"type":"message","room":"general","epoch":"e","seq":0,"id":"x","user":{"id":"u"},"text":"t","ts":"2026-01-01T00:00:00Z"}`,
		`{"type":"message","room":"../x","epoch":"e","seq":1,"id":"x","user":{"id":"u"},"text":"t","ts":"2026-01-01T00:00:00Z"}`,
	} {
		f.hub.Deliver([]byte(body))
	}
	msgs := f.appendN(t, "general", 1)
	f.deliver(msgs, 0)
	if got, want := m.waitFor(t, 2), []int64{0, 1}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestPollsStoreWhileBrokerCannotPublish(t *testing.T) {
	var ready atomic.Value // error
	ready.Store(errors.New("blocked by a resource alarm"))
	st := store.NewMemory(store.Retention{}, nil)
	h := hub.New(hub.Config{RepairDelay: time.Hour, PollInterval: 10 * time.Millisecond,
		BrokerReady: func() error { err, _ := ready.Load().(error); return err }}, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	h.LinkUp() // the consume link is fine; publishing is not

	m := newMember()
	h.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	for range 2 {
		if _, _, err := st.Append(ctx, protocol.Message{Room: "general", User: protocol.User{ID: "u"}, Text: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := m.waitFor(t, 3), []int64{0, 1, 2}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestNudgeReadsTheRoomNow(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour, PollInterval: time.Hour})
	f.hub.LinkUp()
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	f.appendN(t, "general", 1) // stored, not published
	f.hub.Nudge("general")
	f.hub.Nudge("nobody-here") // no room: nothing to do
	if got, want := m.waitFor(t, 2), []int64{0, 1}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestTypingReachesStartedMembersAsEphemeral(t *testing.T) {
	var other []string
	var mu sync.Mutex
	st := store.NewMemory(store.Retention{}, nil)
	h := hub.New(hub.Config{OnBody: func(typ string, _ []byte) { mu.Lock(); other = append(other, typ); mu.Unlock() }},
		st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	started, joining := newMember(), newMember()
	h.Subscribe("general", started).Start(joinedFrame("general"), "", 0)
	h.Subscribe("general", joining)

	h.Deliver([]byte(`{"type":"typing","room":"general","user":{"id":"u1","name":"Ann"},"extra":"dropped"}`))
	h.Deliver([]byte(`{"type":"typing","room":"general","user":{"id":""}}`)) // invalid: dropped
	h.Deliver([]byte(`{"type":"stats","gateway":"gw-2"}`))
	started.waitFor(t, 2)
	f := started.frames[1]
	if f.Kind != hub.KindEphemeral || string(f.Data) != `{"type":"typing","room":"general","user":{"id":"u1","name":"Ann"}}` {
		t.Fatalf("typing frame %+v %s", f, f.Data)
	}
	if n := len(joining.seqs()); n != 0 {
		t.Fatalf("a member still reading history got %d frames", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(other) != 1 || other[0] != "stats" {
		t.Fatalf("OnBody got %v", other)
	}
}

func TestEmitsHeldMessagesWhenTheStoreLostTheRoom(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: 10 * time.Millisecond})
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	// The messages were stored in a history this hub's store does not have
	// (it was lost); seq 2 never arrives.
	other := store.NewMemory(store.Retention{}, nil)
	var msgs []protocol.Message
	for range 3 {
		msg, _, _ := other.Append(context.Background(), protocol.Message{Room: "general", User: protocol.User{ID: "u"}, Text: "x"})
		msgs = append(msgs, msg)
	}
	f.deliver(msgs, 0, 2)
	if got, want := m.waitFor(t, 3), []int64{0, 1, 3}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestTailCheckFindsAMessageThatWasNeverPublished(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour, PollInterval: time.Hour, TailCheck: 20 * time.Millisecond})
	f.hub.LinkUp() // the broker is fine; nothing would otherwise read the store
	m := newMember()
	f.hub.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	f.appendN(t, "general", 1) // stored, its publish lost, no later message
	if got, want := m.waitFor(t, 2), []int64{0, 1}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestBodyWithTwoRoomsGoesWhereItDecodes(t *testing.T) {
	f := newFixture(t, hub.Config{RepairDelay: time.Hour})
	general, other := newMember(), newMember()
	f.hub.Subscribe("general", general).Start(joinedFrame("general"), "", 0)
	f.hub.Subscribe("other", other).Start(joinedFrame("other"), "", 0)
	msg := f.appendN(t, "other", 1)[0]
	// JSON decoding keeps the last "room"; a prefix check sees the first.
	body := strings.Replace(string(protocol.EncodeMessage(msg)), `"room":"other"`, `"room":"general","room":"other"`, 1)
	f.hub.Deliver([]byte(body))
	if got, want := other.waitFor(t, 2), []int64{0, 1}; !equal(got, want) {
		t.Fatalf("other got %v, want %v", got, want)
	}
	if got := general.seqs(); len(got) != 1 {
		t.Fatalf("general got %v; the message is other's", got)
	}
}

// pausedHistory reads the store and reports each read; the first one then
// waits before handing its page back, which lets a test deliver messages while
// a repair read is under way.
type pausedHistory struct {
	hub.History
	reads   chan struct{}
	release chan struct{}
	paused  atomic.Bool
}

func (p *pausedHistory) After(ctx context.Context, room string, after int64, limit int) (store.Page, error) {
	page, err := p.History.After(ctx, room, after, limit)
	select {
	case p.reads <- struct{}{}:
	case <-ctx.Done():
		return page, err
	}
	if p.paused.CompareAndSwap(false, true) {
		select {
		case <-p.release:
		case <-ctx.Done():
		}
	}
	return page, err
}

// A repair read that found nothing after last says nothing about a message
// that was stored, and held, after it: the hole before that message may be
// stored too, and must not be skipped.
func TestEmptyRepairReadKeepsHoleOpenForLaterMessages(t *testing.T) {
	st := store.NewMemory(store.Retention{}, nil)
	hist := &pausedHistory{History: st, reads: make(chan struct{}), release: make(chan struct{})}
	h := hub.New(hub.Config{RepairDelay: time.Minute, TailCheck: time.Minute}, hist, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	add := func() protocol.Message {
		msg, _, err := st.Append(ctx, protocol.Message{Room: "general", User: protocol.User{ID: "u"}, Text: "x"})
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}

	m := newMember()
	h.Subscribe("general", m).Start(joinedFrame("general"), "", 0)
	h.Deliver(protocol.EncodeMessage(add()))
	m.waitFor(t, 2)

	h.Nudge("general")
	<-hist.reads // the store had nothing after seq 1
	second, third := add(), add()
	h.Deliver(protocol.EncodeMessage(third)) // early: held
	hist.release <- struct{}{}
	// Run repairs one room at a time: a second read means the first page
	// has been taken.
	h.Nudge("general")
	<-hist.reads
	h.Deliver(protocol.EncodeMessage(second))
	if got, want := m.waitFor(t, 4), []int64{0, 1, 2, 3}; !equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
}
