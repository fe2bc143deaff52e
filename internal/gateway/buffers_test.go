package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
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

func TestSocketWriterGathersAMessageIntoOneWrite(t *testing.T) {
	conn := &writes{}
	sw := &socketWriter{conn: conn, pool: &sync.Pool{New: func() any { return new(bytes.Buffer) }}}
	bw := bufio.NewWriterSize(sw, writeBufSize)

	// As the library writes a frame: header, payload, flush. The payload is
	// larger than the buffer, so bufio passes it on in two writes.
	sw.collect()
	_, _ = bw.Write([]byte("HDR"))
	_, _ = bw.Write([]byte(strings.Repeat("p", 100)))
	_ = bw.Flush()
	if len(conn.got) != 0 {
		t.Fatalf("wrote %q while collecting", conn.got)
	}
	if err := sw.flush(); err != nil {
		t.Fatal(err)
	}
	if want := "HDR" + strings.Repeat("p", 100); len(conn.got) != 1 || conn.got[0] != want {
		t.Fatalf("got writes %q, want one of %q", conn.got, want)
	}

	// Outside a message (the library's control frames) it writes through.
	_, _ = bw.Write([]byte("ping"))
	_ = bw.Flush()
	if len(conn.got) != 2 || conn.got[1] != "ping" {
		t.Fatalf("got writes %q, want the control frame written through", conn.got)
	}
}
