// Package wsframe encodes and decodes WebSocket frame headers (RFC 6455,
// section 5.2).
//
// coder/websocket handles the handshake, reading and control frames; this
// package serves the two hot paths that frame bytes themselves: the
// gateway's writes of chat messages (a header of two to four bytes, for
// which the library's writer cost a microsecond per delivery) and the load
// generator's client side.
package wsframe

import "encoding/binary"

// Opcodes.
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// MaxHeaderLen is the longest header: 2 bytes, an 8-byte length and a
// 4-byte mask key.
const MaxHeaderLen = 14

// Header is a frame's header.
type Header struct {
	Fin    bool
	RSV    byte // the three reserved bits; nonzero only with an extension
	Op     byte
	Masked bool
	Mask   [4]byte
	Len    uint64 // of the payload
}

// AppendHeader appends the header of a final frame of op with n bytes of
// payload; with a mask key, the frame is masked, as a client's must be.
func AppendHeader(dst []byte, op byte, n int, mask *[4]byte) []byte {
	var maskBit byte
	if mask != nil {
		maskBit = 0x80
	}
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		dst = append(dst, maskBit|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, maskBit|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, maskBit|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if mask != nil {
		dst = append(dst, mask[:]...)
	}
	return dst
}

// Parse reads the header at the start of b and returns it with its length
// in bytes; ok is false while b does not hold all of it.
func Parse(b []byte) (h Header, size int, ok bool) {
	if len(b) < 2 {
		return Header{}, 0, false
	}
	h = Header{Fin: b[0]&0x80 != 0, RSV: b[0] & 0x70 >> 4, Op: b[0] & 0x0F, Masked: b[1]&0x80 != 0}
	h.Len, size = uint64(b[1]&0x7F), 2
	switch h.Len {
	case 126:
		if len(b) < 4 {
			return Header{}, 0, false
		}
		h.Len, size = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return Header{}, 0, false
		}
		h.Len, size = binary.BigEndian.Uint64(b[2:]), 10
	}
	if h.Masked {
		if len(b) < size+4 {
			return Header{}, 0, false
		}
		copy(h.Mask[:], b[size:])
		size += 4
	}
	return h, size, true
}
