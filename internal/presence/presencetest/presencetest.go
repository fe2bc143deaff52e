// Package presencetest is the conformance suite of presence.Store: the
// in-memory store and the Redis store run the same tests, so that the
// embedded default keeps the contract gateways rely on (a user counted once
// however many tabs, expiry without refresh, versions that change whenever
// the member list does, a deterministic order).
//
// A store's own test calls Run with a function that opens a fresh, empty
// store; Benchmark does the same for the shared benchmarks.
package presencetest

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/presence"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store/storetest"
)

// Opener returns a new, empty store for one test, with entries living ttl
// and time told by now. The store must be independent of every other store
// the suite opens (its own Redis prefix, say); the opener registers its
// cleanup with t.Cleanup.
//
// The clock is passed in so that the suite can test expiry without waiting.
type Opener func(t *testing.T, ttl time.Duration, now func() time.Time) presence.Store

// startNanos is where every test's clock begins (Unix ns): a fixed instant,
// so failures reproduce, with a sub-millisecond part, so that the stores'
// millisecond precision is exercised.
const startNanos = 1_773_500_966_535_897_932

// ttl is the TTL of most tests: the default, so the tests speak in the
// numbers a deployment sees.
const ttl = presence.DefaultTTL

// env is one test's store and clock.
type env struct {
	t     *testing.T
	s     presence.Store
	clock *storetest.Clock
	ctx   context.Context
}

func newEnv(t *testing.T, open Opener, ttl time.Duration) *env {
	t.Helper()
	c := storetest.NewClock(time.Unix(0, startNanos))
	return &env{t: t, s: open(t, ttl, c.Now), clock: c, ctx: t.Context()}
}

// user returns the user with the given id, named after it.
func user(id string) protocol.User { return protocol.User{ID: id, Name: "name of " + id} }

// entry returns the entry of connection conn of user uid in room, on gateway
// gw.
func entry(room, conn, uid, gw string) presence.Entry {
	return presence.Entry{Room: room, ConnID: conn, Gateway: gw, User: user(uid)}
}

func (e *env) add(en presence.Entry) presence.Change {
	e.t.Helper()
	ch, err := e.s.Add(e.ctx, en)
	if err != nil {
		e.t.Fatalf("Add(%+v): %v", en, err)
	}
	return ch
}

func (e *env) remove(room, conn string) presence.Change {
	e.t.Helper()
	ch, err := e.s.Remove(e.ctx, room, conn)
	if err != nil {
		e.t.Fatalf("Remove(%s, %s): %v", room, conn, err)
	}
	return ch
}

func (e *env) refresh(entries ...presence.Entry) {
	e.t.Helper()
	if err := e.s.Refresh(e.ctx, entries); err != nil {
		e.t.Fatalf("Refresh(%d entries): %v", len(entries), err)
	}
}

func (e *env) members(room string) []protocol.User {
	e.t.Helper()
	m, err := e.s.Members(e.ctx, room)
	if err != nil {
		e.t.Fatalf("Members(%s): %v", room, err)
	}
	if m == nil {
		e.t.Fatalf("Members(%s) is nil, want a non-nil list", room)
	}
	return m
}

func (e *env) count(room string) int {
	e.t.Helper()
	n, err := e.s.Count(e.ctx, room)
	if err != nil {
		e.t.Fatalf("Count(%s): %v", room, err)
	}
	return n
}

func (e *env) poll(rooms map[string]presence.Version, limit int) []presence.Snapshot {
	e.t.Helper()
	snaps, err := e.s.Poll(e.ctx, rooms, limit)
	if err != nil {
		e.t.Fatalf("Poll: %v", err)
	}
	if snaps == nil {
		e.t.Fatal("Poll returned nil, want a non-nil list")
	}
	return snaps
}

// version returns the room's current version, as Poll tells it to a
// gateway that has never seen the room.
func (e *env) version(room string) presence.Version {
	e.t.Helper()
	snaps := e.poll(map[string]presence.Version{room: "\x00never"}, 0)
	if len(snaps) != 1 {
		e.t.Fatalf("Poll of one room with an impossible version returned %d snapshots", len(snaps))
	}
	return snaps[0].Version
}

// checkMembers fails the test unless room's members are want, in this order,
// and Count agrees.
func (e *env) checkMembers(what, room string, want ...protocol.User) {
	e.t.Helper()
	if want == nil {
		want = []protocol.User{}
	}
	if got := e.members(room); !slices.Equal(got, want) {
		e.t.Errorf("%s: Members(%s) = %v, want %v", what, room, got, want)
	}
	if got := e.count(room); got != len(want) {
		e.t.Errorf("%s: Count(%s) = %d, want %d", what, room, got, len(want))
	}
}

// users returns the users with the given ids, in the order of SortMembers.
func users(ids ...string) []protocol.User {
	out := make([]protocol.User, len(ids))
	for i, id := range ids {
		out[i] = user(id)
	}
	presence.SortMembers(out)
	return out
}

// Run runs the conformance suite against the stores open returns. Its tests
// run in parallel with each other.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"AddRemove", testAddRemove},
		{"MultiTab", testMultiTab},
		{"RemoveOneOfTwoTabs", testRemoveOneOfTwoTabs},
		{"AddIsIdempotent", testAddIsIdempotent},
		{"Rename", testRename},
		{"ConnectionChangesUser", testConnectionChangesUser},
		{"ExpiryWithoutRefresh", testExpiryWithoutRefresh},
		{"RefreshKeeps", testRefreshKeeps},
		{"ExpiryOfOneTab", testExpiryOfOneTab},
		{"RemoveNewestTab", testRemoveNewestTab},
		{"RefreshManyRooms", testRefreshManyRooms},
		{"RefreshRecreates", testRefreshRecreates},
		{"RefreshAfterRemove", testRefreshAfterRemove},
		{"ManyExpireAtOnce", testManyExpireAtOnce},
		{"Order", testOrder},
		{"Count", testCount},
		{"EmptyRoom", testEmptyRoom},
		{"RoomsAreSeparate", testRoomsAreSeparate},
		{"Poll", testPoll},
		{"PollLimit", testPollLimit},
		{"VersionNeverRepeats", testVersionNeverRepeats},
		{"Concurrent", testConcurrent},
		{"Invalid", testInvalid},
		{"TTL", testTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open)
		})
	}
}

// testAddRemove: an added user is a member until their entry is removed;
// Add and Remove say so, and who it was.
func testAddRemove(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	ch := e.add(entry("general", "c1", "u1", "gw1"))
	if !ch.Joined || ch.Left || ch.User != user("u1") || ch.Version == "" {
		t.Errorf("first Add: %+v, want joined by u1 with a version", ch)
	}
	e.checkMembers("after Add", "general", user("u1"))

	ch = e.remove("general", "c1")
	if !ch.Left || ch.Joined || ch.User != user("u1") || ch.Version != "" {
		t.Errorf("Remove of the only entry: %+v, want u1 left and version \"\"", ch)
	}
	e.checkMembers("after Remove", "general")

	ch = e.remove("general", "c1")
	if ch != (presence.Change{}) {
		t.Errorf("second Remove: %+v, want a zero change", ch)
	}
}

// testMultiTab: three tabs of one user, on two gateways, are one member; the
// second and third Add are not joins and leave the version alone.
func testMultiTab(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	first := e.add(entry("general", "c1", "u1", "gw1"))
	for _, en := range []presence.Entry{entry("general", "c2", "u1", "gw2"), entry("general", "c3", "u1", "gw1")} {
		ch := e.add(en)
		if ch.Joined || ch.Version != first.Version {
			t.Errorf("Add of another tab (%s): %+v, want no join and version %q", en.ConnID, ch, first.Version)
		}
	}
	e.add(entry("general", "c4", "u2", "gw2"))
	e.checkMembers("three tabs and another user", "general", users("u1", "u2")...)
}

// testRemoveOneOfTwoTabs: closing one tab keeps the user; closing the last
// one is a leave.
func testRemoveOneOfTwoTabs(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	e.add(entry("general", "c1", "u1", "gw1"))
	v := e.add(entry("general", "c2", "u1", "gw2")).Version

	ch := e.remove("general", "c1")
	if ch.Left || ch.User != user("u1") || ch.Version != v {
		t.Errorf("Remove of one of two tabs: %+v, want u1 still there at version %q", ch, v)
	}
	e.checkMembers("one tab left", "general", user("u1"))

	ch = e.remove("general", "c2")
	if !ch.Left || ch.User != user("u1") {
		t.Errorf("Remove of the last tab: %+v, want u1 left", ch)
	}
	e.checkMembers("no tab left", "general")
}

// testAddIsIdempotent: adding the same entry again renews it and changes
// nothing else.
func testAddIsIdempotent(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	v := e.add(entry("general", "c1", "u1", "gw1")).Version
	e.clock.Advance(ttl / 2)
	ch := e.add(entry("general", "c1", "u1", "gw1"))
	if ch.Joined || ch.Version != v {
		t.Errorf("Add again: %+v, want no join at version %q", ch, v)
	}
	e.clock.Advance(ttl/2 + time.Second) // past the first Add's expiry
	e.checkMembers("renewed by the second Add", "general", user("u1"))
	if ch := e.remove("general", "c1"); !ch.Left {
		t.Errorf("Remove: %+v, want a leave: the entry is counted once", ch)
	}
}

// testRename: a new tab with a new name renames the user (the latest Add
// wins) and changes the version; refreshing the old tab does not rename them
// back.
func testRename(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	old := entry("general", "c1", "u1", "gw1")
	v := e.add(old).Version
	renamed := presence.Entry{Room: "general", ConnID: "c2", Gateway: "gw1", User: protocol.User{ID: "u1", Name: "Zed"}}
	ch := e.add(renamed)
	if ch.Joined || ch.Version == v {
		t.Errorf("Add under a new name: %+v, want no join and a new version (was %q)", ch, v)
	}
	e.checkMembers("renamed", "general", renamed.User)
	v = ch.Version
	e.refresh(old, renamed)
	e.checkMembers("after refreshing both tabs", "general", renamed.User)
	if got := e.version("general"); got != v {
		t.Errorf("version after refresh %q, want %q", got, v)
	}
	if ch := e.remove("general", "c1"); ch.Left || ch.User != renamed.User {
		t.Errorf("Remove of the tab with the old name: %+v, want %v, still there", ch, renamed.User)
	}
}

// testConnectionChangesUser: a connection added again under another user
// (a re-authentication) moves: the old user leaves if it was their only tab.
func testConnectionChangesUser(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	e.add(entry("general", "c1", "u1", "gw1"))
	ch := e.add(entry("general", "c1", "u2", "gw1"))
	if !ch.Joined {
		t.Errorf("Add of c1 as u2: %+v, want u2 joined", ch)
	}
	e.checkMembers("c1 moved to u2", "general", user("u2"))
	if ch := e.remove("general", "c1"); !ch.Left || ch.User != user("u2") {
		t.Errorf("Remove of c1: %+v, want u2 left", ch)
	}
	e.checkMembers("c1 removed", "general")
}

// testExpiryWithoutRefresh: an entry nobody refreshes is there until TTL
// has passed (to the millisecond) and gone after, without any call removing
// it.
func testExpiryWithoutRefresh(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	e.add(entry("general", "c1", "u1", "gw1"))
	e.clock.Advance(10 * time.Second)
	e.add(entry("general", "c2", "u2", "gw2"))
	v := e.version("general")

	e.clock.Advance(ttl - 10*time.Second - time.Millisecond)
	e.checkMembers("1ms before u1 expires", "general", users("u1", "u2")...)
	if got := e.version("general"); got != v {
		t.Errorf("version changed to %q before anything expired", got)
	}
	e.clock.Advance(time.Millisecond)
	e.checkMembers("u1 expired", "general", user("u2"))
	v2 := e.version("general")
	if v2 == v {
		t.Errorf("version %q unchanged after u1 expired", v)
	}
	e.clock.Advance(10 * time.Second)
	e.checkMembers("both expired", "general")
	if got := e.version("general"); got != "" {
		t.Errorf("version of a room whose entries all expired: %q, want \"\"", got)
	}
	if ch := e.remove("general", "c1"); ch.Left {
		t.Errorf("Remove of an expired entry: %+v, want no leave: u1 left when it expired", ch)
	}
}

// testRefreshKeeps: entries refreshed every TTL/3 never expire; once the
// refreshes stop, they expire a TTL after the last one.
func testRefreshKeeps(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	a, b := entry("general", "c1", "u1", "gw1"), entry("other", "c2", "u2", "gw1")
	e.add(a)
	e.add(b)
	v := e.version("general")
	for range 10 {
		e.clock.Advance(ttl / 3)
		e.refresh(a, b)
	}
	e.checkMembers("after 10 refreshes", "general", user("u1"))
	e.checkMembers("after 10 refreshes", "other", user("u2"))
	if got := e.version("general"); got != v {
		t.Errorf("refreshes changed the version from %q to %q", v, got)
	}
	e.clock.Advance(ttl - time.Millisecond)
	e.checkMembers("just before expiry", "general", user("u1"))
	e.clock.Advance(time.Millisecond)
	e.checkMembers("TTL after the last refresh", "general")
	e.checkMembers("TTL after the last refresh", "other")
}

// testExpiryOfOneTab: a user with a tab on a gateway that died and one on a
// live gateway stays a member (and the version stays) when the dead tab
// expires; closing the live tab afterwards is a leave.
func testExpiryOfOneTab(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	e.add(entry("general", "dead", "u1", "gw-dead"))
	live := entry("general", "live", "u1", "gw-live")
	e.add(live)
	v := e.version("general")
	for range 4 {
		e.clock.Advance(ttl / 3)
		e.refresh(live)
	}
	e.checkMembers("dead tab expired", "general", user("u1"))
	if got := e.version("general"); got != v {
		t.Errorf("version changed from %q to %q when a tab (not a user) expired", v, got)
	}
	if ch := e.remove("general", "live"); !ch.Left {
		t.Errorf("Remove of the live tab: %+v, want a leave (the other tab expired)", ch)
	}
	e.checkMembers("both tabs gone", "general")
}

// testRemoveNewestTab: when the tab that was renewed last closes, the user
// lives only as long as the tabs left: here one on a gateway that died.
func testRemoveNewestTab(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	e.add(entry("general", "old", "u1", "gw-dead"))
	e.clock.Advance(20 * time.Second)
	e.add(entry("general", "new", "u1", "gw-live"))
	e.clock.Advance(time.Second)
	if ch := e.remove("general", "new"); ch.Left {
		t.Errorf("Remove of one of two tabs: %+v, want no leave", ch)
	}
	e.clock.Advance(ttl - 21*time.Second - time.Millisecond)
	e.checkMembers("until the old tab expires", "general", user("u1"))
	e.clock.Advance(time.Millisecond)
	e.checkMembers("the old tab expired", "general")
}

// testRefreshManyRooms: one Refresh call renews thousands of entries across
// many rooms (and creates those it does not find), and touches nothing else.
func testRefreshManyRooms(t *testing.T, open Opener) {
	const rooms, perRoom = 50, 60
	e := newEnv(t, open, ttl)
	var all []presence.Entry
	for r := range rooms {
		for c := range perRoom {
			// Two tabs per user: perRoom/2 users in each room.
			all = append(all, entry(fmt.Sprintf("room-%d", r), fmt.Sprintf("c-%d-%d", r, c), fmt.Sprintf("u%d", c/2), "gw1"))
		}
	}
	bystander := entry("room-0", "other", "bystander", "gw2")
	e.add(bystander)

	e.refresh(all...) // creates them all
	e.clock.Advance(ttl - time.Second)
	e.refresh(all...)
	e.clock.Advance(2 * time.Second) // bystander expired; all were renewed
	for r := range rooms {
		room := fmt.Sprintf("room-%d", r)
		if got := e.count(room); got != perRoom/2 {
			t.Fatalf("Count(%s) = %d, want %d", room, got, perRoom/2)
		}
	}
	m := e.members("room-7")
	if len(m) != perRoom/2 || m[0] != user("u0") {
		t.Errorf("Members(room-7): %v, want %d users from u0", m, perRoom/2)
	}
	for _, u := range e.members("room-0") {
		if u.ID == "bystander" {
			t.Error("an entry the refresh did not name was renewed")
		}
	}
	e.clock.Advance(ttl)
	e.checkMembers("after the refreshes stopped", "room-3")
}

// testRefreshRecreates: an entry that expired (a gateway stalled past the
// TTL, or Redis lost it) comes back with the next refresh, as a join.
func testRefreshRecreates(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	en := entry("general", "c1", "u1", "gw1")
	e.add(en)
	e.clock.Advance(ttl + time.Second)
	e.checkMembers("expired", "general")
	e.refresh(en)
	e.checkMembers("refreshed after expiry", "general", user("u1"))
	if v := e.version("general"); v == "" {
		t.Error("a room with a member has version \"\"")
	}
	// A refresh that names an entry never added adds it too.
	e.refresh(entry("general", "c2", "u2", "gw1"))
	e.checkMembers("refreshed, never added", "general", users("u1", "u2")...)
}

// testRefreshAfterRemove: a refresh that was under way when a connection
// left does not bring it back; adding it again (the connection joins the
// room again) does.
func testRefreshAfterRemove(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	en := entry("general", "c1", "u1", "gw1")
	e.add(en)
	e.add(entry("general", "c2", "u2", "gw1"))
	e.remove("general", "c1")
	e.clock.Advance(time.Second)
	e.refresh(en, entry("general", "c2", "u2", "gw1"))
	e.checkMembers("stale refresh after Remove", "general", user("u2"))

	if ch := e.add(en); !ch.Joined {
		t.Errorf("Add after Remove: %+v, want a join", ch)
	}
	e.checkMembers("added again", "general", users("u1", "u2")...)
	e.clock.Advance(ttl / 2)
	e.refresh(en)
	e.clock.Advance(ttl/2 + time.Second)
	e.checkMembers("re-added entry is refreshed again", "general", user("u1"))
}

// testManyExpireAtOnce: when a big gateway dies, reads are right at once,
// however many entries the stores have yet to delete; the count stays right
// while the deleting goes on.
func testManyExpireAtOnce(t *testing.T, open Opener) {
	const dead, live = 1200, 30
	e := newEnv(t, open, ttl)
	var deadEntries, liveEntries []presence.Entry
	for i := range dead {
		deadEntries = append(deadEntries, entry("big", fmt.Sprintf("d%d", i), fmt.Sprintf("d%d", i), "gw-dead"))
	}
	for i := range live {
		liveEntries = append(liveEntries, entry("big", fmt.Sprintf("l%d", i), fmt.Sprintf("l%d", i), "gw-live"))
	}
	e.refresh(deadEntries...)
	e.refresh(liveEntries...)
	if got := e.count("big"); got != dead+live {
		t.Fatalf("Count = %d, want %d", got, dead+live)
	}
	v := e.version("big")
	e.clock.Advance(ttl / 2)
	e.refresh(liveEntries...)
	e.clock.Advance(ttl / 2)
	for i := range 5 {
		if got := e.count("big"); got != live {
			t.Fatalf("Count after the dead gateway's entries expired (read %d) = %d, want %d", i, got, live)
		}
		if got := len(e.members("big")); got != live {
			t.Fatalf("Members after the dead gateway's entries expired (read %d): %d, want %d", i, got, live)
		}
	}
	if got := e.version("big"); got == v {
		t.Errorf("version %q unchanged after %d users expired", v, dead)
	}
	// A dead user coming back (a client reconnecting elsewhere) is a join.
	if ch := e.add(entry("big", "new", "d7", "gw-live")); !ch.Joined {
		t.Errorf("Add of an expired user: %+v, want a join", ch)
	}
	if got := e.count("big"); got != live+1 {
		t.Errorf("Count = %d, want %d", got, live+1)
	}
}

// testOrder: Members come sorted by name ignoring case, then name, then id,
// whatever the order they were added in.
func testOrder(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	want := []protocol.User{
		{ID: "9", Name: ""},
		{ID: "5", Name: "alice"},
		{ID: "7", Name: "Bob"},
		{ID: "2", Name: "bob"},
		{ID: "3", Name: "bob"},
		{ID: "1", Name: "Zoë"},
		{ID: "4", Name: "żółw"},
	}
	for i, j := range []int{4, 0, 6, 2, 5, 1, 3} {
		u := want[j]
		e.add(presence.Entry{Room: "r", ConnID: "c" + strconv.Itoa(i), Gateway: "gw" + strconv.Itoa(i%2), User: u})
	}
	for range 3 {
		e.checkMembers("mixed names", "r", want...)
	}
	snaps := e.poll(map[string]presence.Version{"r": ""}, -1)
	if len(snaps) != 1 || !slices.Equal(snaps[0].Members, want) {
		t.Errorf("Poll members %+v, want %v", snaps, want)
	}
}

// testCount: Count counts users, not tabs.
func testCount(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	for u := range 10 {
		for tab := range u%3 + 1 {
			e.add(entry("r", fmt.Sprintf("c%d-%d", u, tab), fmt.Sprintf("u%d", u), fmt.Sprintf("gw%d", tab)))
		}
	}
	if got := e.count("r"); got != 10 {
		t.Errorf("Count = %d, want 10 users (19 tabs)", got)
	}
	e.remove("r", "c2-0") // u2 keeps 2 tabs
	e.remove("r", "c0-0") // u0's only tab
	if got := e.count("r"); got != 9 {
		t.Errorf("Count = %d, want 9", got)
	}
}

// testEmptyRoom: a room nobody is in reads as empty, its version is "", and
// removing from it is no error.
func testEmptyRoom(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	e.checkMembers("never used", "nobody")
	if snaps := e.poll(map[string]presence.Version{"nobody": ""}, 10); len(snaps) != 0 {
		t.Errorf("Poll of an empty room at version \"\": %+v, want nothing", snaps)
	}
	if snaps := e.poll(map[string]presence.Version{}, 10); len(snaps) != 0 {
		t.Errorf("Poll of no rooms: %+v", snaps)
	}
	snaps := e.poll(map[string]presence.Version{"nobody": "stale"}, 10)
	if len(snaps) != 1 || snaps[0].Version != "" || snaps[0].Count != 0 || snaps[0].Members == nil || len(snaps[0].Members) != 0 {
		t.Errorf("Poll of an empty room at a stale version: %+v, want one empty snapshot at \"\"", snaps)
	}
	if ch := e.remove("nobody", "c1"); ch != (presence.Change{}) {
		t.Errorf("Remove from an empty room: %+v", ch)
	}
	e.checkMembers("after a Remove", "nobody")
}

// testRoomsAreSeparate: the same connection and user in two rooms are two
// entries; leaving one room leaves the other alone.
func testRoomsAreSeparate(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	e.add(entry("a", "c1", "u1", "gw1"))
	e.add(entry("b", "c1", "u1", "gw1"))
	e.add(entry("b", "c2", "u2", "gw1"))
	if ch := e.remove("a", "c1"); !ch.Left {
		t.Errorf("Remove from a: %+v, want a leave", ch)
	}
	e.checkMembers("room a", "a")
	e.checkMembers("room b", "b", users("u1", "u2")...)
}

// testPoll: Poll returns just the rooms whose member list changed since the
// version given (joins, leaves, renames, expiry), not those where only tabs
// came and went or entries were refreshed, in the order of room names.
func testPoll(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	known := map[string]presence.Version{"a": "", "b": "", "c": ""}
	e.add(entry("b", "c1", "u1", "gw1"))
	e.add(entry("a", "c2", "u2", "gw2"))
	snaps := e.poll(known, -1)
	if len(snaps) != 2 || snaps[0].Room != "a" || snaps[1].Room != "b" {
		t.Fatalf("first Poll: %+v, want snapshots of a and b, in that order", snaps)
	}
	if !slices.Equal(snaps[0].Members, users("u2")) || snaps[0].Count != 1 || snaps[0].Version == "" {
		t.Errorf("snapshot of a: %+v", snaps[0])
	}
	accept := func(snaps []presence.Snapshot) {
		for _, s := range snaps {
			known[s.Room] = s.Version
		}
	}
	accept(snaps)
	if snaps := e.poll(known, -1); len(snaps) != 0 {
		t.Errorf("Poll with nothing changed: %+v", snaps)
	}

	steps := []struct {
		what    string
		do      func()
		changed []string // rooms the next Poll returns
	}{
		{"another tab", func() { e.add(entry("a", "c3", "u2", "gw1")) }, nil},
		{"refresh", func() { e.clock.Advance(ttl / 3); e.refresh(entry("a", "c2", "u2", "gw2")) }, nil},
		{"a tab closed", func() { e.remove("a", "c2") }, nil},
		{"a join", func() { e.add(entry("c", "c4", "u4", "gw1")) }, []string{"c"}},
		{"a leave", func() { e.remove("b", "c1") }, []string{"b"}},
		{"a rename", func() {
			e.add(presence.Entry{Room: "a", ConnID: "c5", User: protocol.User{ID: "u2", Name: "Renamed"}})
		}, []string{"a"}},
		{"a user in another room", func() { e.add(entry("elsewhere", "c6", "u6", "gw1")) }, nil},
		// c3 was added a TTL/3 before c4, so it expires first; c5 keeps u2.
		{"a tab expired", func() { e.clock.Advance(ttl - ttl/3) }, nil},
		{"an expiry", func() { e.clock.Advance(ttl / 3) }, []string{"a", "c"}},
	}
	for _, st := range steps {
		st.do()
		snaps := e.poll(known, -1)
		var rooms []string
		for _, s := range snaps {
			rooms = append(rooms, s.Room)
		}
		if !slices.Equal(rooms, st.changed) {
			t.Errorf("after %s: Poll returned rooms %v, want %v", st.what, rooms, st.changed)
		}
		accept(snaps)
	}
	if known["b"] != "" || known["c"] != "" || known["a"] != "" {
		t.Errorf("versions at the end: %v, want all empty", known)
	}
}

// testPollLimit: past the limit, Poll gives the count and no list.
func testPollLimit(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	for i := range 5 {
		e.add(entry("five", fmt.Sprintf("c%d", i), fmt.Sprintf("u%d", i), "gw1"))
		e.add(entry("five", fmt.Sprintf("t%d", i), fmt.Sprintf("u%d", i), "gw2"))
	}
	e.add(entry("one", "c1", "u1", "gw1"))
	snaps := e.poll(map[string]presence.Version{"five": "", "one": ""}, 4)
	if len(snaps) != 2 {
		t.Fatalf("Poll: %+v, want two snapshots", snaps)
	}
	if s := snaps[0]; s.Room != "five" || s.Count != 5 || s.Members != nil {
		t.Errorf("over the limit: %+v, want count 5 and no members", s)
	}
	if s := snaps[1]; s.Room != "one" || s.Count != 1 || !slices.Equal(s.Members, users("u1")) {
		t.Errorf("under the limit: %+v, want u1", s)
	}
	snaps = e.poll(map[string]presence.Version{"five": ""}, 5)
	if len(snaps) != 1 || len(snaps[0].Members) != 5 {
		t.Errorf("Poll at the limit: %+v, want the 5 members", snaps)
	}
	snaps = e.poll(map[string]presence.Version{"five": ""}, 0)
	if len(snaps) != 1 || snaps[0].Count != 5 || snaps[0].Members != nil {
		t.Errorf("Poll with limit 0: %+v, want count only", snaps)
	}
}

// testVersionNeverRepeats: a room that empties and fills again, to the same
// members through the same number of changes, never shows an earlier
// version, so a gateway that polled before it emptied sees the change.
func testVersionNeverRepeats(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	seen := map[presence.Version]bool{}
	for round := range 5 {
		e.add(entry("r", "c1", "u1", "gw1"))
		v1 := e.add(entry("r", "c2", "u2", "gw1")).Version
		for _, v := range []presence.Version{v1, e.version("r")} {
			if v == "" {
				t.Fatalf("round %d: a room with members at version \"\"", round)
			}
		}
		if seen[v1] {
			t.Fatalf("round %d: version %q came back", round, v1)
		}
		seen[v1] = true
		if round%2 == 0 {
			e.remove("r", "c1")
			e.remove("r", "c2")
		} else {
			e.clock.Advance(ttl)
		}
		if v := e.version("r"); v != "" {
			t.Fatalf("round %d: empty room at version %q", round, v)
		}
	}
}

// testConcurrent: many gateways adding and removing at once leave exactly
// the users they should, counted once each.
func testConcurrent(t *testing.T, open Opener) {
	const workers, users, tabs = 8, 25, 3
	e := newEnv(t, open, ttl)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	// Worker w adds tabs tabs of users u0..u24 as connections w-u-tab, then
	// removes them all for odd users; even users keep every tab.
	for w := range workers {
		wg.Go(func() {
			for u := range users {
				for tab := range tabs {
					en := entry("busy", fmt.Sprintf("%d-%d-%d", w, u, tab), fmt.Sprintf("u%d", u), fmt.Sprintf("gw%d", w))
					if _, err := e.s.Add(e.ctx, en); err != nil {
						errs <- err
						return
					}
				}
			}
			for u := 1; u < users; u += 2 {
				for tab := range tabs {
					if _, err := e.s.Remove(e.ctx, "busy", fmt.Sprintf("%d-%d-%d", w, u, tab)); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var want []string
	for u := 0; u < users; u += 2 {
		want = append(want, fmt.Sprintf("u%d", u))
	}
	e.checkMembers("after concurrent adds and removes", "busy", usersOf(want)...)

	// Every tab of an even user but one goes, concurrently: they stay.
	var wg2 sync.WaitGroup
	for w := range workers {
		wg2.Go(func() {
			for u := 0; u < users; u += 2 {
				for tab := range tabs {
					if w == 0 && tab == 0 {
						continue
					}
					if _, err := e.s.Remove(e.ctx, "busy", fmt.Sprintf("%d-%d-%d", w, u, tab)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg2.Wait()
	e.checkMembers("one tab each left", "busy", usersOf(want)...)
}

func usersOf(ids []string) []protocol.User { return users(ids...) }

// testInvalid: entries a store cannot keep are refused, and a Refresh with
// one of them writes nothing.
func testInvalid(t *testing.T, open Opener) {
	e := newEnv(t, open, ttl)
	for _, en := range []presence.Entry{
		{ConnID: "c", User: user("u")},
		{Room: "r", User: user("u")},
		{Room: "r", ConnID: "c"},
		{Room: "r", ConnID: "c\xff", User: user("u")},
		{Room: "r", ConnID: "c", User: protocol.User{ID: "u\xfe", Name: "x"}},
	} {
		if _, err := e.s.Add(e.ctx, en); err == nil {
			t.Errorf("Add(%+v) succeeded", en)
		}
		if err := e.s.Refresh(e.ctx, []presence.Entry{entry("r", "ok", "u1", "gw"), en}); err == nil {
			t.Errorf("Refresh with %+v succeeded", en)
		}
	}
	e.checkMembers("after refused calls", "r")
	if _, err := e.s.Remove(e.ctx, "", "c"); err == nil {
		t.Error("Remove from room \"\" succeeded")
	}
	if _, err := e.s.Members(e.ctx, ""); err == nil {
		t.Error("Members of room \"\" succeeded")
	}
	if _, err := e.s.Count(e.ctx, ""); err == nil {
		t.Error("Count of room \"\" succeeded")
	}
	if _, err := e.s.Poll(e.ctx, map[string]presence.Version{"": ""}, 1); err == nil {
		t.Error("Poll of room \"\" succeeded")
	}
}

// testTTL: the store says the TTL it was given, and DefaultTTL for zero.
func testTTL(t *testing.T, open Opener) {
	c := storetest.NewClock(time.Unix(0, startNanos))
	if got := open(t, 0, c.Now).TTL(); got != presence.DefaultTTL {
		t.Errorf("TTL() with zero = %v, want %v", got, presence.DefaultTTL)
	}
	s := open(t, 1500*time.Millisecond, c.Now)
	if got := s.TTL(); got != 1500*time.Millisecond {
		t.Errorf("TTL() = %v, want 1.5s", got)
	}
	if _, err := s.Add(t.Context(), entry("r", "c", "u", "g")); err != nil {
		t.Fatal(err)
	}
	c.Advance(1499 * time.Millisecond)
	if n, err := s.Count(t.Context(), "r"); err != nil || n != 1 {
		t.Errorf("Count before a 1.5s TTL = %d (%v), want 1", n, err)
	}
	c.Advance(time.Millisecond)
	if n, err := s.Count(t.Context(), "r"); err != nil || n != 0 {
		t.Errorf("Count after a 1.5s TTL = %d (%v), want 0", n, err)
	}
}

// Benchmark runs the shared benchmarks against stores that open returns:
// a gateway's Refresh of 10,000 entries (in one room, and spread over 1,000
// rooms), Members and Count of a 500-member room, a Poll of 1,000 rooms where
// nothing changed (what a gateway pays every second) and Add.
func Benchmark(b *testing.B, open func(b *testing.B) presence.Store) {
	refresh := func(name string, rooms int) {
		b.Run(name, func(b *testing.B) {
			ctx, s := b.Context(), open(b)
			entries := make([]presence.Entry, 10_000)
			for i := range entries {
				entries[i] = presence.Entry{
					Room: fmt.Sprintf("room-%d", i%rooms), ConnID: fmt.Sprintf("conn-%d", i), Gateway: "gw-1",
					User: protocol.User{ID: fmt.Sprintf("user-%d", i/2), Name: fmt.Sprintf("User %d", i/2)},
				}
			}
			if err := s.Refresh(ctx, entries); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := s.Refresh(ctx, entries); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/refresh")
		})
	}
	refresh("Refresh10000In1Room", 1)
	refresh("Refresh10000In1000Rooms", 1000)

	big := func(b *testing.B) (context.Context, presence.Store) {
		ctx, s := b.Context(), open(b)
		entries := make([]presence.Entry, 0, 750)
		for i := range 750 { // 500 users, half of them with two tabs
			u := i % 500
			entries = append(entries, presence.Entry{
				Room: "big", ConnID: fmt.Sprintf("conn-%d", i), Gateway: "gw-1",
				User: protocol.User{ID: fmt.Sprintf("user-%d", u), Name: fmt.Sprintf("User %d", u)},
			})
		}
		if err := s.Refresh(ctx, entries); err != nil {
			b.Fatal(err)
		}
		return ctx, s
	}
	b.Run("Members500", func(b *testing.B) {
		ctx, s := big(b)
		for b.Loop() {
			m, err := s.Members(ctx, "big")
			if err != nil {
				b.Fatal(err)
			}
			if len(m) != 500 {
				b.Fatalf("%d members, want 500", len(m))
			}
		}
	})
	b.Run("Count500", func(b *testing.B) {
		ctx, s := big(b)
		for b.Loop() {
			n, err := s.Count(ctx, "big")
			if err != nil {
				b.Fatal(err)
			}
			if n != 500 {
				b.Fatalf("count %d, want 500", n)
			}
		}
	})
	b.Run("Poll1000Unchanged", func(b *testing.B) {
		ctx, s := b.Context(), open(b)
		entries := make([]presence.Entry, 1000)
		for i := range entries {
			entries[i] = entry(fmt.Sprintf("room-%d", i), fmt.Sprintf("conn-%d", i), fmt.Sprintf("user-%d", i), "gw-1")
		}
		if err := s.Refresh(ctx, entries); err != nil {
			b.Fatal(err)
		}
		known := make(map[string]presence.Version, len(entries))
		for _, en := range entries {
			known[en.Room] = ""
		}
		snaps, err := s.Poll(ctx, known, 100)
		if err != nil {
			b.Fatal(err)
		}
		for _, sn := range snaps {
			known[sn.Room] = sn.Version
		}
		for b.Loop() {
			snaps, err := s.Poll(ctx, known, 100)
			if err != nil {
				b.Fatal(err)
			}
			if len(snaps) != 0 {
				b.Fatalf("%d rooms changed, want none", len(snaps))
			}
		}
	})
	b.Run("Add", func(b *testing.B) {
		ctx, s := b.Context(), open(b)
		i := 0
		for b.Loop() {
			i++
			if _, err := s.Add(ctx, entry("bench", "c"+strconv.Itoa(i), "u"+strconv.Itoa(i%100), "gw-1")); err != nil {
				b.Fatal(err)
			}
		}
	})
}
