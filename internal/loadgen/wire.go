package loadgen

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/parleychat/parley/internal/wsframe"
)

// The generator speaks the client side of RFC 6455 itself rather than
// through a WebSocket library: it reads its thousands of sockets from a few
// epoll loops (see readers_linux.go), one read(2) per arrival, where a
// library needs a goroutine blocked in a read per connection and two
// read(2)s and a goroutine wake-up per message. At W1 that was 7.5 us of the
// generator's CPU per delivery on the cores the gateways need.

// acceptGUID is the constant RFC 6455 appends to the key to prove that the
// server understood the upgrade.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// closeError is how a connection the gateway closed ends: its close frame's
// status code, or 1005 when the frame carried none.
type closeError struct{ code int }

func (e closeError) Error() string {
	return fmt.Sprintf("closed by the gateway with status %d", e.code)
}

// dialWS connects to the ws:// URL u and upgrades the connection within
// timeout. It returns the connection and whatever the gateway sent after its
// response, which belongs to the first frames.
func dialWS(ctx context.Context, u *url.URL, timeout time.Duration) (net.Conn, []byte, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, nil, err
	}
	rest, err := upgrade(ctx, conn, u, timeout)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, rest, nil
}

// upgrade sends the handshake request on conn and checks the response.
func upgrade(ctx context.Context, conn net.Conn, u *url.URL, timeout time.Duration) ([]byte, error) {
	_ = conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	var nonce [16]byte
	binary.LittleEndian.PutUint64(nonce[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(nonce[8:], rand.Uint64())
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	br := bufio.NewReaderSize(conn, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("handshake: status %s", resp.Status)
	}
	sum := sha1.Sum([]byte(key + acceptGUID))
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, errors.New("handshake: the response does not accept the upgrade")
	}
	rest, _ := br.Peek(br.Buffered())
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return append([]byte(nil), rest...), nil
}

// appendFrame appends one final client frame of op carrying payload, masked
// as RFC 6455 requires of clients. The mask only has to be unpredictable to
// the page's script a browser would run; the generator runs none, so a fast
// generator suffices.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	dst = wsframe.AppendHeader(dst, op, len(payload), &mask)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= mask[i&3]
	}
	return dst
}

// frame is one frame from the gateway.
type frame struct {
	fin     bool
	op      byte
	payload []byte // aliases the read buffer
}

// errIncomplete is parseFrame's answer when b does not hold a whole frame.
var errIncomplete = errors.New("incomplete frame")

// parseFrame reads the frame at the start of b and returns it with its
// length in b. Server frames are never masked.
func parseFrame(b []byte) (frame, int, error) {
	h, size, ok := wsframe.Parse(b)
	switch {
	case !ok:
		return frame{}, 0, errIncomplete
	case h.RSV != 0:
		return frame{}, 0, errors.New("frame with reserved bits set (compression was not negotiated)")
	case h.Masked:
		return frame{}, 0, errors.New("masked frame from the server")
	case h.Len > maxMessageBytes:
		return frame{}, 0, fmt.Errorf("frame of %d bytes, over %d", h.Len, maxMessageBytes)
	case h.Op >= wsframe.OpClose && (h.Len > 125 || !h.Fin):
		return frame{}, 0, errors.New("control frame too long or fragmented")
	}
	end := size + int(h.Len)
	if len(b) < end {
		return frame{}, 0, errIncomplete
	}
	return frame{fin: h.Fin, op: h.Op, payload: b[size:end]}, end, nil
}
