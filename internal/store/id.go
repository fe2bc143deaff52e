package store

import (
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/parleychat/parley/internal/protocol"
)

// NewID returns a globally unique message id: 48 bits of milliseconds since
// 1970 and 80 random bits, 26 characters, roughly ordered by creation time so
// that ids read in logs line up with when they were made.
func NewID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails on Linux (Go 1.24+).
	return protocol.EncodeToken(b[:])
}

// NewEpoch returns a fresh random epoch name (64 bits, 13 characters).
func NewEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return protocol.EncodeToken(b[:])
}
