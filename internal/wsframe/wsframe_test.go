package wsframe

import (
	"bytes"
	"testing"
)

func TestHeadersRoundTrip(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 125, 126, 0xFFFF, 0x10000, 1 << 40} {
		for _, mask := range []*[4]byte{nil, &key} {
			b := AppendHeader(nil, OpText, n, mask)
			if len(b) > MaxHeaderLen {
				t.Fatalf("%d bytes: header of %d bytes", n, len(b))
			}
			for cut := range len(b) {
				if _, _, ok := Parse(b[:cut]); ok {
					t.Fatalf("%d bytes: parsed a header cut to %d of %d bytes", n, cut, len(b))
				}
			}
			h, size, ok := Parse(b)
			if !ok || size != len(b) || !h.Fin || h.Op != OpText || h.Len != uint64(n) || h.Masked != (mask != nil) || h.RSV != 0 {
				t.Fatalf("%d bytes, mask %v: parsed %+v size %d ok %v", n, mask != nil, h, size, ok)
			}
			if mask != nil && h.Mask != key {
				t.Fatalf("mask %v, want %v", h.Mask, key)
			}
		}
	}
}

func TestParseReadsTheFirstByte(t *testing.T) {
	// A non-final continuation with RSV1 set (compression), as the spec
	// lays the bits out.
	h, _, ok := Parse([]byte{0x40, 0x05})
	if !ok || h.Fin || h.RSV != 4 || h.Op != OpContinuation || h.Len != 5 {
		t.Fatalf("parsed %+v", h)
	}
	// The header of a 2-byte close frame as a server writes it.
	if b := AppendHeader(nil, OpClose, 2, nil); !bytes.Equal(b, []byte{0x88, 0x02}) {
		t.Fatalf("close header % x", b)
	}
}
