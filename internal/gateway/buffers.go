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
	"github.com/parleychat/parley/internal/wsframe"
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

// socketWriter is where a connection's frames meet on their way to the
// socket. The gateway frames its own messages here (text), and the
// library's small write buffer writes its control frames here (Write).
//
// Between collect and flush (the connection's writer writing a message) it
// gathers everything in a pooled buffer, so that a message costs one
// write(2); at other times the library's frames are written through.
//
// Messages skip the library's writer: at W1 its locking and framing were
// 11% of the gateways' CPU, more than a microsecond per delivery, to write
// a header of two to four bytes. The library still writes pongs and the
// close handshake, and may do so while a message is written, so its bytes
// are held until they make a whole frame and only then placed, whole,
// between messages; once it has sent a close frame no message follows.
type socketWriter struct {
	conn net.Conn
	pool *sync.Pool

	mu     sync.Mutex
	buf    *bytes.Buffer // nil unless collecting
	lib    []byte        // the start of a library frame, until it is whole
	closed bool          // the library wrote a close frame
}

// errClosedForMessages is text's answer once the close handshake began.
var errClosedForMessages = errors.New("write message: the close handshake has begun")

// Write implements io.Writer, for the library.
func (w *socketWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lib = append(w.lib, p...)
	for {
		n, op := frameLen(w.lib)
		if n == 0 {
			if len(w.lib) == 0 {
				w.lib = nil // control frames are rare; idle connections keep no buffer
			}
			return len(p), nil
		}
		if op == wsframe.OpClose {
			w.closed = true
		}
		var err error
		if w.buf != nil {
			w.buf.Write(w.lib[:n])
		} else {
			_, err = w.conn.Write(w.lib[:n])
		}
		w.lib = w.lib[:copy(w.lib, w.lib[n:])]
		if err != nil {
			return len(p), err
		}
	}
}

// frameLen returns the length and opcode of the frame at the start of b, or
// 0 while b does not hold all of it.
func frameLen(b []byte) (int, byte) {
	h, size, ok := wsframe.Parse(b)
	if !ok || uint64(len(b)-size) < h.Len {
		return 0, 0
	}
	return size + int(h.Len), h.Op
}

// text gathers one text message: the batch's frames separated by newlines
// (see the protocol). The caller must be collecting.
func (w *socketWriter) text(batch []queued) error {
	n := len(batch) - 1
	for _, it := range batch {
		n += len(it.Data)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errClosedForMessages
	}
	var head [wsframe.MaxHeaderLen]byte
	w.buf.Grow(len(head) + n)
	w.buf.Write(wsframe.AppendHeader(head[:0], wsframe.OpText, n, nil))
	for i, it := range batch {
		if i > 0 {
			w.buf.WriteByte('\n')
		}
		w.buf.Write(it.Data)
	}
	return nil
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
	return w.wrote(s.Write(w.hold()))
}

// hold locks the writer for a write that another goroutine makes (a
// flusher's batch) and returns what was gathered; wrote takes the outcome
// and unlocks. The bytes must not change in between: the library's frames
// wait meanwhile.
func (w *socketWriter) hold() []byte {
	w.mu.Lock()
	return w.buf.Bytes()
}

// wrote finishes a write of what hold returned, as flushNow does.
func (w *socketWriter) wrote(n int, err error) (pending bool, _ error) {
	defer w.mu.Unlock()
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
