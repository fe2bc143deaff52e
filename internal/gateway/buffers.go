package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/parleychat/parley/internal/poller"
)

// Buffer sizes of an upgraded connection. net/http hands a hijacker 4 KB for
// each direction, and coder/websocket keeps them for the connection's life:
// most of an idle connection's memory once it keeps no goroutine (see
// park). Client frames are small: a join, a pong or a short send fits the
// read buffer, and a larger frame's payload is read straight into the
// message. The write buffer only has to hold a frame header: what the
// library writes goes on to a socketWriter, which gathers a message in a
// pooled buffer while the connection's writer writes it.
const (
	readBufSize  = 256
	writeBufSize = 16 // bufio's minimum
)

// smallBuffers gives the WebSocket library small buffers when it hijacks the
// connection, and keeps what it handed over: the connection, for the poller;
// the read buffer, since a connection may park only when the library has
// nothing buffered (see conn.park); and the socketWriter.
type smallBuffers struct {
	http.ResponseWriter
	pool *sync.Pool // of *bytes.Buffer, for the socketWriter
	conn net.Conn
	br   *bufio.Reader
	sw   *socketWriter
}

// Hijack implements http.Hijacker.
func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the server read past the request belong to the WebSocket (a
	// client may send its first frame as soon as it has the 101). The
	// library takes them from the reader's buffer, then points the reader
	// at the connection, so they must be in the buffer, not behind it.
	rd := bufio.NewReaderSize(conn, readBufSize)
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		rd = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn), max(readBufSize, n))
		if _, err := rd.Peek(n); err != nil {
			return nil, nil, fmt.Errorf("keep bytes read past the request: %w", err)
		}
	}
	w.conn, w.br = conn, rd
	w.sw = &socketWriter{conn: conn, pool: w.pool}
	return conn, bufio.NewReadWriter(rd, bufio.NewWriterSize(w.sw, writeBufSize)), nil
}

// socketWriter is what the library's small write buffer writes to. Between
// collect and flush (the connection's writer writing a message) it gathers
// the writes in a pooled buffer, so that a message still costs one write(2)
// although the library writes its header and payload separately; at other
// times (the library's own control frames) it writes through.
type socketWriter struct {
	conn net.Conn
	pool *sync.Pool

	mu  sync.Mutex
	buf *bytes.Buffer // nil unless collecting
}

// Write implements io.Writer.
func (w *socketWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf != nil {
		return w.buf.Write(p)
	}
	return w.conn.Write(p)
}

// collect starts gathering writes, behind what is still pending. A control
// frame the library writes meanwhile is gathered too, in the order the
// library wrote it.
func (w *socketWriter) collect() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf == nil {
		w.buf = w.pool.Get().(*bytes.Buffer)
		w.buf.Reset()
	}
}

// flush writes what was gathered and stops gathering.
func (w *socketWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.conn.Write(w.buf.Bytes())
	w.release()
	return err
}

// flushNow writes what was gathered as far as the socket takes it without
// waiting. The rest stays gathered, and pending reports so: it is for flush,
// and writes meanwhile are gathered behind it.
func (w *socketWriter) flushNow(s *poller.Socket) (pending bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := s.Write(w.buf.Bytes())
	if errors.Is(err, poller.ErrWouldBlock) {
		n, err = 0, nil
	}
	if err != nil || n == w.buf.Len() {
		w.release()
		return false, err
	}
	w.buf.Next(n)
	return true, nil
}

// pending reports whether gathered bytes wait for flush.
func (w *socketWriter) pending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf != nil
}

func (w *socketWriter) release() {
	w.pool.Put(w.buf)
	w.buf = nil
}
