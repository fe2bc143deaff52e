package loadgen

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/wsframe"
)

// serverFrame encodes a frame as a gateway sends it: unmasked.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b := wsframe.AppendHeader(nil, op, len(payload), nil)
	if !fin {
		b[0] &^= 0x80
	}
	return append(b, payload...)
}

// unmask decodes a frame appendFrame wrote, checking that it is masked.
func unmask(t *testing.T, b []byte) (byte, []byte) {
	t.Helper()
	h, size, ok := wsframe.Parse(b)
	if !ok || !h.Masked || uint64(len(b)-size) != h.Len {
		t.Fatalf("client frame % x: header %+v, want a masked frame of its length", b[:min(len(b), 14)], h)
	}
	p := bytes.Clone(b[size:])
	for i := range p {
		p[i] ^= h.Mask[i&3]
	}
	return h.Op, p
}

// recorder is a connection that keeps what the client writes.
type recorder struct{ bytes.Buffer }

func (r *recorder) Close() error { return nil }

func newFeedClient() (*client, *recorder) {
	s := newSession(Config{Rooms: 1})
	rec := &recorder{}
	return &client{s: s, conn: rec}, rec
}

func TestAppendFrameMasksEveryLength(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xFFFF, 0x10000} {
		payload := bytes.Repeat([]byte{'x'}, n)
		op, got := unmask(t, appendFrame(nil, wsframe.OpText, payload))
		if op != wsframe.OpText || !bytes.Equal(got, payload) {
			t.Errorf("%d bytes: got op %d and %d bytes back", n, op, len(got))
		}
	}
}

func TestFeedTakesFramesSplitAnywhere(t *testing.T) {
	msg := serverFrame(true, wsframe.OpText, []byte(`{"type":"x"}`+"\n"+`{"type":"y"}`))
	frag := append(serverFrame(false, wsframe.OpText, []byte(`{"type":"a"}`+"\n")),
		append(serverFrame(true, wsframe.OpPing, []byte("p")), serverFrame(true, wsframe.OpContinuation, []byte(`{"type":"b"}`))...)...)
	stream := append(append(bytes.Clone(msg), frag...), serverFrame(true, wsframe.OpText, bytes.Repeat([]byte{'z'}, 300))...)
	for cut := range len(stream) + 1 {
		c, rec := newFeedClient()
		if err := c.feed(bytes.Clone(stream[:cut]), 0); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if err := c.feed(bytes.Clone(stream[cut:]), 0); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		// Three messages: two frames, two frames (fragmented around a
		// ping) and one.
		if ws, fr := c.s.wsMessages.Load(), c.s.frames.Load(); ws != 3 || fr != 5 {
			t.Fatalf("cut %d: %d messages of %d frames, want 3 of 5", cut, ws, fr)
		}
		if op, p := unmask(t, rec.Bytes()); op != wsframe.OpPong || string(p) != "p" {
			t.Fatalf("cut %d: answered the ping with op %d %q", cut, op, p)
		}
		if len(c.pending) != 0 {
			t.Fatalf("cut %d: %d bytes left pending", cut, len(c.pending))
		}
	}
}

func TestFeedEndsOnCloseAndBadFrames(t *testing.T) {
	code := binary.BigEndian.AppendUint16(nil, 1008)
	masked := append(wsframe.AppendHeader(nil, wsframe.OpText, 1, &[4]byte{}), 'x')
	for name, tc := range map[string]struct {
		in   []byte
		want string
	}{
		"close":              {serverFrame(true, wsframe.OpClose, append(code, "bye"...)), "status 1008"},
		"close no code":      {serverFrame(true, wsframe.OpClose, nil), "status 1005"},
		"masked":             {masked, "masked"},
		"compressed":         {append([]byte{0xC1}, serverFrame(true, wsframe.OpText, nil)[1:]...), "reserved bits"},
		"stray continuation": {serverFrame(true, wsframe.OpContinuation, []byte("x")), "continuation"},
		"long control":       {serverFrame(true, wsframe.OpPing, make([]byte, 126)), "control frame"},
		"too big":            {[]byte{0x81, 127, 0, 0, 0, 0, 0x10, 0, 0, 0}, "over"},
	} {
		c, _ := newFeedClient()
		err := c.feed(tc.in, 0)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, tc.want)
		}
	}
	c, _ := newFeedClient()
	var ce closeError
	if err := c.feed(serverFrame(true, wsframe.OpClose, code), 0); !errors.As(err, &ce) || ce.code != 1008 {
		t.Errorf("close frame gave %v, want closeError 1008", err)
	}
}

func TestDialRefusesAFailedUpgrade(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	defer srv.Close()
	u, err := wsURL(srv.URL, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = dialWS(t.Context(), u, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("got %v, want the 429 named", err)
	}
	if _, err := wsURL("https://127.0.0.1:1", 0); err == nil {
		t.Fatal("https URL accepted")
	}
}

// TestClientJoinsAgainWhenTheGatewayIsUnavailable: a gateway that cannot
// read a room's history answers a join with "unavailable" and the client is
// to join again, as the generator's clients do.
func TestClientJoinsAgainWhenTheGatewayIsUnavailable(t *testing.T) {
	joins := make(chan int, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		for n := 1; ; n++ {
			if _, _, err := ws.Read(r.Context()); err != nil {
				return
			}
			joins <- n
			reply := `{"type":"error","code":"unavailable","message":"room history is unavailable; join again"}`
			if n == 3 {
				reply = `{"type":"joined","room":"r","epoch":"e","seq":0,"messages":[]}`
			}
			if err := ws.Write(r.Context(), websocket.MessageText, []byte(reply)); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	res, err := Run(t.Context(), Config{Name: "retry", URLs: []string{srv.URL}, Clients: 1, Hold: time.Millisecond, JoinTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Joined != 1 || res.JoinRetries != 2 || len(joins) != 3 {
		t.Fatalf("joined %d after %d retries and %d joins; want 1 after 2 and 3", res.Joined, res.JoinRetries, len(joins))
	}
}

// TestFramesSentWithTheUpgradeAreHandled: a gateway may send frames right
// behind its 101 response, so that the generator reads them with the
// handshake. Here the first is an "unavailable" for the join the client
// has not sent yet, which makes it join again: handling it must not wait
// on the session it is being set up in.
func TestFramesSentWithTheUpgradeAreHandled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() { served <- serveRawGateway(ln) }()
	res, err := Run(t.Context(), Config{Name: "rest", URLs: []string{"http://" + ln.Addr().String()}, Clients: 1, Hold: time.Millisecond, JoinTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Joined != 1 || res.JoinRetries != 1 {
		t.Fatalf("joined %d after %d retries; want 1 after 1", res.Joined, res.JoinRetries)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// serveRawGateway upgrades one connection, writing an error frame in the
// same write as its 101, and answers the joins that follow: the first is
// ignored (the early error stood for it), the second gets "joined".
func serveRawGateway(ln net.Listener) error {
	conn, err := ln.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + acceptGUID))
	early := serverFrame(true, wsframe.OpText, []byte(`{"type":"error","code":"unavailable","message":"join again"}`))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n" + string(early)
	if _, err := io.WriteString(conn, resp); err != nil {
		return err
	}
	for joins := 1; joins <= 2; joins++ {
		var head [14]byte
		if _, err := io.ReadFull(br, head[:2]); err != nil {
			return err
		}
		n := int(head[1] & 0x7F) // joins are short
		if _, err := io.ReadFull(br, make([]byte, 4+n)); err != nil {
			return err
		}
	}
	joined := serverFrame(true, wsframe.OpText, []byte(`{"type":"joined","room":"r","epoch":"e","seq":0,"messages":[]}`))
	if _, err := conn.Write(joined); err != nil {
		return err
	}
	// Until the generator closes the connection.
	_, _ = io.Copy(io.Discard, br)
	return nil
}
