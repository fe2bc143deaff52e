package presence_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/presence"
	"github.com/parleychat/parley/internal/presence/presencetest"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store/storetest"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestMemory runs the conformance suite against the in-memory store.
func TestMemory(t *testing.T) {
	presencetest.Run(t, func(t *testing.T, ttl time.Duration, now func() time.Time) presence.Store {
		return presence.NewMemory(ttl, now)
	})
}

// TestMemoryForgetsIdleRooms: rooms whose entries all expired and that
// nobody reads again do not hold memory forever; the periodic sweep drops
// them.
func TestMemoryForgetsIdleRooms(t *testing.T) {
	clock := storetest.NewClock(time.Unix(1_773_500_000, 0))
	s := presence.NewMemory(time.Minute, clock.Now)
	for i := range 1000 {
		if _, err := s.Add(t.Context(), presence.Entry{Room: fmt.Sprintf("r%d", i), ConnID: "c", User: protocol.User{ID: "u"}}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Minute)
	for i := range 10_000 { // enough calls to trigger a sweep
		if _, err := s.Count(t.Context(), "other"); err != nil {
			t.Fatalf("Count %d: %v", i, err)
		}
	}
	if n := presence.MemoryRooms(s); n != 0 {
		t.Errorf("%d rooms held after they all expired and a sweep ran, want 0", n)
	}
}

// TestDiff: joins, leaves and renames between two member lists, each sorted.
func TestDiff(t *testing.T) {
	u := func(id, name string) protocol.User { return protocol.User{ID: id, Name: name} }
	before := []protocol.User{u("1", "ann"), u("2", "bob"), u("3", "cy"), u("4", "dee")}
	after := []protocol.User{u("5", "Zed"), u("4", "dee"), u("2", "Bobby"), u("6", "abe")}
	joined, left, renamed := presence.Diff(before, after)
	if want := []protocol.User{u("6", "abe"), u("5", "Zed")}; !slices.Equal(joined, want) {
		t.Errorf("joined %v, want %v", joined, want)
	}
	if want := []protocol.User{u("1", "ann"), u("3", "cy")}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
	if want := []protocol.User{u("2", "Bobby")}; !slices.Equal(renamed, want) {
		t.Errorf("renamed %v, want %v", renamed, want)
	}
	j, l, r := presence.Diff(before, before)
	if len(j)+len(l)+len(r) != 0 {
		t.Errorf("Diff of a list with itself: %v %v %v", j, l, r)
	}
}

// BenchmarkMemory runs the shared benchmarks against the in-memory store.
func BenchmarkMemory(b *testing.B) {
	presencetest.Benchmark(b, func(b *testing.B) presence.Store { return presence.NewMemory(0, nil) })
}

// TestSortMembers: the order ignores case first, then breaks ties by the
// exact name and the id, for any names, so every gateway agrees.
func TestSortMembers(t *testing.T) {
	u := func(id, name string) protocol.User { return protocol.User{ID: id, Name: name} }
	got := []protocol.User{u("1", "b"), u("2", "B"), u("3", "a"), u("4", "ÄB"), u("5", "äa"), u("6", ""), u("0", "b"), u("7", "ab")}
	presence.SortMembers(got)
	want := []protocol.User{u("6", ""), u("3", "a"), u("7", "ab"), u("2", "B"), u("0", "b"), u("1", "b"), u("5", "äa"), u("4", "ÄB")}
	if !slices.Equal(got, want) {
		t.Errorf("SortMembers: %v, want %v", got, want)
	}
}
