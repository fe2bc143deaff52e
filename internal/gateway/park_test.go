package gateway

import "testing"

func TestPongBytes(t *testing.T) {
	pong := []byte{0x8A, 0x80, 1, 2, 3, 4}               // masked, empty
	pongData := []byte{0x8A, 0x82, 1, 2, 3, 4, 'h', 'i'} // masked, 2 bytes
	text := []byte{0x81, 0x82, 1, 2, 3, 4, 'h', 'i'}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want int
	}{
		{"one pong", pong, 6},
		{"two pongs", cat(pong, pongData), 14},
		{"pong then text", cat(pong, text), 6},
		{"text then pong", cat(text, pong), 0},
		{"half a pong", pongData[:7], 0},
		{"pong then half a pong", cat(pong, pongData[:3]), 6},
		{"unmasked pong", []byte{0x8A, 0x00}, 0},
		{"pong with an extended length", []byte{0x8A, 0xFE, 0, 126}, 0},
		{"not final", []byte{0x0A, 0x80, 1, 2, 3, 4}, 0},
		{"ping", []byte{0x89, 0x80, 1, 2, 3, 4}, 0},
		{"one byte", []byte{0x8A}, 0},
		{"nothing", nil, 0},
	} {
		if got := pongBytes(tc.in); got != tc.want {
			t.Errorf("%s: pongBytes = %d, want %d", tc.name, got, tc.want)
		}
	}
}
