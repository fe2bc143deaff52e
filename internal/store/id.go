package store

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

// lowerBase32 keeps ids and epochs in the protocol's token alphabet, and its
// alphabet is in ASCII order, so ids that share a timestamp prefix sort by it.
var lowerBase32 = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// NewID returns a globally unique message id: 48 bits of milliseconds since
// 1970 and 80 random bits, 26 characters, roughly ordered by creation time so
// that ids read in logs line up with when they were made.
func NewID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails on Linux (Go 1.24+).
	return lowerBase32.EncodeToString(b[:])
}

// NewEpoch returns a fresh random epoch name (64 bits, 13 characters).
func NewEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return lowerBase32.EncodeToString(b[:])
}
