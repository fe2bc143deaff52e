package gateway_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// BenchmarkServerWrite measures one server-side WebSocket write of a chat
// message frame over loopback TCP, the unit of a gateway's fan-out, with
// the three kinds of context a writer can pass to coder/websocket:
//
//   - timeout: a context.WithTimeout per write, as conn.writeLoop does (a
//     timer and a cancel context per write, and the library's AfterFunc);
//   - cancel: a long-lived cancellable context (the library still registers
//     an AfterFunc per write);
//   - background: a context that is never done (the library sets nothing up;
//     a stuck write would then have to be ended by closing the connection,
//     e.g. from a watchdog).
//
// The peer reads and discards on its own goroutine. The difference between
// the variants is what the per-write context costs the gateway.
func BenchmarkServerWrite(b *testing.B) {
	frame := []byte(`{"type":"message","room":"general","epoch":"4k2j9x0c1b5qa","seq":58,"id":"01jq3n9c4k0f3m6t2b7x5d8e1a","user":{"id":"g_0q3v5m2k8d1c7b9a","name":"alice"},"text":"hello, this is a chat message of ordinary length","ts":"2026-11-28T19:20:01.123Z","client_msg_id":"c-17"}`)
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	variants := []struct {
		name  string
		write func(ws *websocket.Conn) error
	}{
		{"timeout", func(ws *websocket.Conn) error {
			ctx, cancel := context.WithTimeout(base, 10*time.Second)
			defer cancel()
			return ws.Write(ctx, websocket.MessageText, frame)
		}},
		{"cancel", func(ws *websocket.Conn) error { return ws.Write(base, websocket.MessageText, frame) }},
		{"background", func(ws *websocket.Conn) error {
			return ws.Write(context.Background(), websocket.MessageText, frame)
		}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			ws := newWritePair(b)
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if err := v.write(ws); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// newWritePair returns the server end of a loopback WebSocket whose client
// end reads and discards everything until the benchmark ends.
func newWritePair(b *testing.B) *websocket.Conn {
	b.Helper()
	accepted := make(chan *websocket.Conn, 1)
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		accepted <- ws
		<-hold // the connection lives as long as its handler
	}))
	ctx := context.Background()
	client, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		b.Fatal(err)
	}
	ws := <-accepted
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			_, r, err := client.Reader(ctx)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
		}
	})
	b.Cleanup(func() {
		_ = client.CloseNow()
		_ = ws.CloseNow()
		wg.Wait()
		close(hold)
		srv.Close()
	})
	return ws
}

// BenchmarkWriterWakeup compares the two ways to get a queued frame written
// by another goroutine, as a member's Push must (it may not block): a
// goroutine started for the write, which ends when the queue is empty (what
// conn.push and writeLoop do), against a long-lived writer goroutine woken
// through a channel. Each iteration waits for its write, so both include
// one hand-off; the difference is goroutine creation and exit against a
// channel wake-up.
func BenchmarkWriterWakeup(b *testing.B) {
	frame := []byte(`{"type":"message","room":"general","seq":58,"text":"hello, this is a chat message of ordinary length"}`)
	ctx := context.Background()
	b.Run("spawn", func(b *testing.B) {
		ws := newWritePair(b)
		done := make(chan error, 1)
		b.ReportAllocs()
		for b.Loop() {
			go func() { done <- ws.Write(ctx, websocket.MessageText, frame) }()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wake", func(b *testing.B) {
		ws := newWritePair(b)
		wake, done := make(chan struct{}, 1), make(chan error, 1)
		var wg sync.WaitGroup
		wg.Go(func() {
			for range wake {
				done <- ws.Write(ctx, websocket.MessageText, frame)
			}
		})
		b.Cleanup(func() {
			close(wake)
			wg.Wait()
		})
		b.ReportAllocs()
		for b.Loop() {
			wake <- struct{}{}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	})
}
