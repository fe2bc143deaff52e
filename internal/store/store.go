// Package store keeps each room's message history: it gives every message its
// room's next contiguous seq and a unique id, and serves the history that
// joins, resumes and scrollback read.
//
// Store is the contract; Memory implements it in process (the embedded
// default) and the redisstore package implements it on Redis (the record of a
// cluster). Both pass the conformance suite in package storetest, so the
// embedded default behaves like the cluster, minus persistence.
package store

import (
	"context"
	"time"

	"github.com/parleychat/parley/internal/protocol"
)

// Store is a room history. All methods are safe for concurrent use.
type Store interface {
	// Append stores m in m.Room. It sets m's Seq to the room's next seq, its
	// Epoch to the room's epoch, and its ID and TS unless m repeats an earlier
	// append. A room whose history is gone (new, expired or flushed) starts a
	// new epoch at seq 1.
	//
	// Append is idempotent on (Room, User.ID, ClientMsgID) when ClientMsgID is
	// set: a repeat within the retention time stores nothing and returns the
	// original message with dup true, so a client can retry a send whose ack
	// it never saw.
	Append(ctx context.Context, m protocol.Message) (stored protocol.Message, dup bool, err error)

	// Recent returns the room's newest limit messages, oldest first.
	Recent(ctx context.Context, room string, limit int) (Page, error)

	// After returns up to limit messages with seq > after, oldest first. When
	// the messages right after "after" are no longer retained, the page starts
	// at the oldest retained one; the caller sees the hole in the seqs.
	After(ctx context.Context, room string, after int64, limit int) (Page, error)

	// Before returns the newest limit messages with seq < before, oldest
	// first.
	Before(ctx context.Context, room string, before int64, limit int) (Page, error)

	// Rooms lists up to limit rooms whose history is still retained, most
	// recently active first, so that operators and the stats API can see
	// where people are talking without scanning every key. A limit of zero
	// or less returns an empty list.
	Rooms(ctx context.Context, limit int) ([]RoomInfo, error)

	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
}

// RoomInfo is one entry of Rooms: a room that still has history.
type RoomInfo struct {
	// Room is the room's name.
	Room string
	// Seq is the room's latest seq when it was listed.
	Seq int64
	// LastActivity is when the room was last appended to (UTC, millisecond
	// precision). A room idle for longer than Retention.MaxAge is no longer
	// listed: its history is gone.
	LastActivity time.Time
}

// Page is a slice of a room's history together with the room's state when it
// was read.
type Page struct {
	// Epoch is the room's current epoch; empty for a room never written to.
	Epoch string
	// Seq is the room's latest seq (0 for a room never written to).
	Seq int64
	// Messages are in seq order.
	Messages []protocol.Message
}
