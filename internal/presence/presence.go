// Package presence answers "who is online in room R" for every gateway of a
// cluster, cheaply, and stays right when a gateway dies without cleaning up.
//
// Store is the contract; Memory implements it in process (the embedded
// default) and the redispresence package implements it on Redis (the cluster).
// Both pass the conformance suite in package presencetest.
//
// # Model
//
// An entry is one connection in one room: (room, connection id, gateway,
// user). A user with several tabs or devices, on one gateway or several, has
// several entries but is one member of the room. Every entry expires TTL after
// it was last added or refreshed, so the entries of a gateway that died vanish
// on their own; reads never return an expired entry, whether or not it has
// been deleted yet.
//
// Every room has a Version, which changes whenever its member list (the users
// and their names, not their tabs) changes, expiry included. A gateway learns
// about changes made by other gateways by calling Poll about once a second
// with the versions it last saw: one round trip returns fresh snapshots of
// just the rooms that changed.
//
// # How a gateway uses a Store
//
//   - A connection joins a room: Add its entry, and keep the entry in the set
//     the gateway refreshes.
//   - A connection leaves a room on purpose (a leave frame): Remove it.
//   - A connection drops: keep refreshing its entries for the reconnect grace
//     period (say 10 s), then Remove them. A user who comes back in time, on
//     any gateway, adds a new entry before the old one goes, so the member
//     list never changes and nobody sees a leave and a join.
//   - Every TTL/3 or so: Refresh all the entries the gateway holds, in one
//     call.
//   - Every second or so: Poll the rooms that have members on this gateway;
//     for each snapshot returned, Diff it against the last one and send the
//     room's members one presence update (or, past the size limit given to
//     Poll, the count alone). That is the batching: at most one update per
//     room per poll, however many people come and go.
//   - On shutdown: remove nothing. Clients reconnect elsewhere and add new
//     entries; the old ones expire within the TTL.
package presence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/parleychat/parley/internal/protocol"
)

// DefaultTTL is how long an entry lives without a refresh unless configured
// otherwise: short enough that a dead gateway's users leave within half a
// minute, long enough that a refresh every TTL/3 survives a slow round trip
// or two.
const DefaultTTL = 30 * time.Second

// Store is the presence of every room. All methods are safe for concurrent
// use. Room names and ids are compared byte for byte.
type Store interface {
	// Add puts e in its room, or renews it when it is there already: it then
	// lives TTL from now. It reports whether e's user became a member by it.
	// Adding a connection that was removed brings it back (a connection may
	// leave a room and join it again).
	Add(ctx context.Context, e Entry) (Change, error)

	// Remove takes a connection's entry out of a room. It reports whose entry
	// it was and whether that user is no longer a member (their last tab
	// went). Removing an unknown or expired entry is not an error and
	// changes nothing.
	//
	// A removed entry stays removed for a TTL even if a Refresh that was
	// already under way names it, so that a refresh racing a leave cannot
	// bring a user back.
	Remove(ctx context.Context, room, connID string) (Change, error)

	// Refresh renews every entry given, in any number of rooms, in one round
	// trip, so that they live TTL from now. An entry that had expired (or
	// that the store lost) is added again, so a gateway that stalled, or a
	// Redis that was flushed, heals on the next refresh; an entry that was
	// removed less than a TTL ago is left out. A gateway calls it every TTL/3
	// or so with all the entries it holds. An invalid entry fails the whole
	// call before anything is written.
	Refresh(ctx context.Context, entries []Entry) error

	// Members returns the room's members, each user once, in the order of
	// SortMembers, so that every gateway renders the same list. An empty room
	// has an empty, non-nil list. The cost grows with the room's size: for
	// big rooms use Count, or Poll with a limit.
	Members(ctx context.Context, room string) ([]protocol.User, error)

	// Count returns how many distinct users are in the room, at a cost that
	// does not grow with the room's size.
	Count(ctx context.Context, room string) (int, error)

	// Poll returns a Snapshot of each given room whose version is not the
	// one given for it, in the order of the room names. It is what a gateway
	// calls every second for every room it serves, so it is cheap when
	// nothing changed: for Redis, one round trip of two plain commands per
	// room, and a second round trip only for the rooms that changed.
	// Pass the Version of the last snapshot seen, or "" for a room never
	// seen (an empty room's version is "", so it is returned only once it
	// has members). Members is filled only for rooms of at most limit users
	// (limit < 0: no limit), so that a big room costs a count, not a list.
	Poll(ctx context.Context, rooms map[string]Version, limit int) ([]Snapshot, error)

	// TTL returns how long an entry lives without a refresh; refresh every
	// TTL/3 or so.
	TTL() time.Duration
}

// Entry is one connection in one room.
type Entry struct {
	// Room is the room's name; not empty.
	Room string
	// ConnID names the connection, unique across the cluster and never
	// reused (a connection in several rooms has one entry in each); not
	// empty, valid UTF-8.
	ConnID string
	// Gateway names the gateway holding the connection, for operators
	// looking at the store.
	Gateway string
	// User is who is connected; User.ID is not empty and is valid UTF-8.
	// The name of a user's latest Add is the one members see.
	User protocol.User
}

// Validate reports why a store would refuse e. The Redis layout encodes
// connection and user ids next to each other, which is why they must be
// valid UTF-8.
func (e Entry) Validate() error {
	switch {
	case e.Room == "":
		return errors.New("entry has no room")
	case e.ConnID == "" || !utf8.ValidString(e.ConnID):
		return fmt.Errorf("entry in %s: connection id %q is empty or not UTF-8", e.Room, e.ConnID)
	case e.User.ID == "" || !utf8.ValidString(e.User.ID):
		return fmt.Errorf("entry %s in %s: user id %q is empty or not UTF-8", e.ConnID, e.Room, e.User.ID)
	}
	return nil
}

// Change says what an Add or a Remove did to the room's member list, so that
// a caller can log it, count it or poll the room at once instead of waiting
// for its next tick.
type Change struct {
	// User is the entry's user: the one added, or the member whose entry
	// was removed, under the name members see (zero when Remove found no
	// entry).
	User protocol.User
	// Joined reports that Add made User a member: they had no live entry in
	// the room before.
	Joined bool
	// Left reports that Remove took User's last live entry: they are no
	// longer a member.
	Left bool
	// Version is the room's version after the call.
	Version Version
}

// Version identifies one state of a room's member list. It changes whenever
// the list changes and never comes back to an earlier value, even after the
// room emptied and filled again, so a gateway that compares versions misses
// nothing. An empty room's version is "". Versions are opaque: compare them
// for equality only.
type Version string

// Snapshot is a room's member list at one version.
type Snapshot struct {
	// Room is the room's name.
	Room string
	// Version is the version the snapshot shows.
	Version Version
	// Count is the number of distinct users in the room.
	Count int
	// Members are the room's users in the order of SortMembers; nil when
	// Count is over the limit given to Poll, non-nil otherwise.
	Members []protocol.User
}

// SortMembers puts users in the order every gateway shows them in: by name,
// ignoring case, then by name, then by id. It is the order of Members and
// Snapshot.Members.
func SortMembers(users []protocol.User) {
	slices.SortFunc(users, compareUsers)
}

func compareUsers(a, b protocol.User) int {
	if c := compareFold(a.Name, b.Name); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// compareFold compares a and b as strings.ToLower(a) and strings.ToLower(b)
// would compare, without allocating: sorting a big room calls it thousands
// of times.
func compareFold(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if la, lb := unicode.ToLower(ra), unicode.ToLower(rb); la != lb {
			return cmp.Compare(la, lb)
		}
		a, b = a[na:], b[nb:]
	}
	return cmp.Compare(len(a), len(b))
}

// Diff compares two member lists of a room (any order, each user at most
// once) and returns who joined, who left and who was renamed (with the new
// name), each in the order of SortMembers. A gateway turns it into its
// presence updates.
func Diff(before, after []protocol.User) (joined, left, renamed []protocol.User) {
	old := make(map[string]string, len(before))
	for _, u := range before {
		old[u.ID] = u.Name
	}
	seen := make(map[string]bool, len(after))
	for _, u := range after {
		seen[u.ID] = true
		name, ok := old[u.ID]
		switch {
		case !ok:
			joined = append(joined, u)
		case name != u.Name:
			renamed = append(renamed, u)
		}
	}
	for _, u := range before {
		if !seen[u.ID] {
			left = append(left, u)
		}
	}
	SortMembers(joined)
	SortMembers(left)
	SortMembers(renamed)
	return joined, left, renamed
}
