package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/parleychat/parley/internal/hub"
)

// TestSmallBuffersKeepBytesReadPastTheRequest: a client may send data right
// behind its request (its first frame, as soon as it has the 101). The
// server may have read it already; after the hijack it must come first on
// the connection, as the WebSocket library reads it: from the reader's
// buffer, then from the connection.
func TestSmallBuffersKeepBytesReadPastTheRequest(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := (&smallBuffers{ResponseWriter: w, pool: &sync.Pool{New: func() any { return new(bytes.Buffer) }}}).Hijack()
		if err != nil {
			got <- "hijack: " + err.Error()
			return
		}
		defer conn.Close()
		// What coder/websocket's Accept does with the hijacked reader.
		b, _ := brw.Reader.Peek(brw.Reader.Buffered())
		brw.Reader.Reset(io.MultiReader(bytes.NewReader(b), conn))
		rest, _ := io.ReadAll(brw.Reader)
		got <- string(rest)
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Request and data in one write: the server reads both at once.
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\nfirst frame"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "first frame" {
		t.Fatalf("after the hijack the connection read %q, want %q", s, "first frame")
	}
	c.Close()
}

// writes records each Write on a connection.
type writes struct {
	net.Conn
	got []string
}

func (w *writes) Write(p []byte) (int, error) {
	w.got = append(w.got, string(p))
	return len(p), nil
}

func newTestSocketWriter() (*socketWriter, *writes) {
	conn := &writes{}
	return &socketWriter{conn: conn, pool: &sync.Pool{New: func() any { return new(bytes.Buffer) }}}, conn
}

func TestSocketWriterGathersAMessageIntoOneWrite(t *testing.T) {
	sw, conn := newTestSocketWriter()
	sw.collect()
	long := strings.Repeat("p", 200)
	if err := sw.text([]queued{{Frame: hub.Frame{Data: []byte("a")}}, {Frame: hub.Frame{Data: []byte(long)}}}); err != nil {
		t.Fatal(err)
	}
	if len(conn.got) != 0 {
		t.Fatalf("wrote %q while collecting", conn.got)
	}
	if err := sw.flush(); err != nil {
		t.Fatal(err)
	}
	// 202 bytes of payload take the 16-bit length.
	if want := "\x81\x7e\x00\xca" + "a\n" + long; len(conn.got) != 1 || conn.got[0] != want {
		t.Fatalf("got writes %q, want one of %q", conn.got, want)
	}
}

// TestSocketWriterKeepsTheLibrarysFramesWhole: the library writes its
// control frames through a 16-byte buffer, in pieces, and may do so while a
// message is being written. Its frame must reach the socket whole, before
// or after the message, never around it; and no message may follow its
// close frame.
func TestSocketWriterKeepsTheLibrarysFramesWhole(t *testing.T) {
	sw, conn := newTestSocketWriter()
	bw := bufio.NewWriterSize(sw, writeBufSize)
	pong := append([]byte{0x8A, 20}, strings.Repeat("x", 20)...)

	sw.collect()
	_, _ = bw.Write(pong[:2]) // the header alone: bufio passes on 16 bytes
	_, _ = bw.Write(pong[2:])
	if err := sw.text([]queued{{Frame: hub.Frame{Data: []byte("msg")}}}); err != nil {
		t.Fatal(err)
	}
	_ = bw.Flush()
	if err := sw.flush(); err != nil {
		t.Fatal(err)
	}
	if want := "\x81\x03msg" + string(pong); len(conn.got) != 1 || conn.got[0] != want {
		t.Fatalf("got writes %q, want one of %q", conn.got, want)
	}

	// Outside a message the library's frames are written through, whole.
	closeFrame := []byte{0x88, 2, 0x03, 0xE8}
	_, _ = bw.Write(closeFrame[:3])
	_ = bw.Flush()
	if len(conn.got) != 1 {
		t.Fatalf("wrote half a frame: %q", conn.got[1:])
	}
	_, _ = bw.Write(closeFrame[3:])
	_ = bw.Flush()
	if len(conn.got) != 2 || conn.got[1] != string(closeFrame) {
		t.Fatalf("got writes %q, want the close frame written through", conn.got)
	}
	sw.collect()
	if err := sw.text([]queued{{Frame: hub.Frame{Data: []byte("late")}}}); !errors.Is(err, errClosedForMessages) {
		t.Fatalf("a message after the close frame: %v", err)
	}
}
