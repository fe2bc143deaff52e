//go:build integration

package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/cluster"
	"github.com/parleychat/parley/internal/testenv"
)

// TestParleyCluster runs the real gateway (cmd/parley, built with the race
// detector) twice behind nginx, on the machine's RabbitMQ and Redis.
func TestParleyCluster(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{
		Gateways: 2,
		Race:     true,
		AMQPURL:  testenv.AMQPURL(),
		RedisURL: testenv.RedisURL(),
		Env:      map[string]string{"PARLEY_SHUTDOWN_TIMEOUT": "5s"},
		Dir:      t.TempDir(),
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	groups := processGroups(c)
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = c.Close()
		}
	})

	for i := range c.Len() {
		mustGet(t, c.GatewayURL(i)+"/readyz", http.StatusOK)
	}
	mustGet(t, c.URL()+"/healthz", http.StatusOK)

	// Browsers' WebSockets through nginx: the Origin is nginx's own, which
	// the gateway accepts only if nginx passed the Host on. nginx spreads
	// them over both gateways.
	if got, want := wsServedBy(ctx, t, c.URL(), 6), []string{"gw-1", "gw-2"}; !slices.Equal(got, want) {
		t.Fatalf("WebSockets through nginx landed on %v, want %v", got, want)
	}
	_, resp, err := websocket.Dial(ctx, wsURL(c.URL())+"/ws?name=mallory",
		&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a foreign Origin through nginx: err %v, response %+v; want 403", err, resp)
	}

	// A message sent on one gateway reaches a member on the other: both use
	// the cluster's exchange and prefix.
	room := "cross-" + rand.Text()[:12]
	alice, _ := dialWS(ctx, t, c.GatewayURL(0), "alice")
	bob, _ := dialWS(ctx, t, c.GatewayURL(1), "bob")
	for _, conn := range []*websocket.Conn{alice, bob} {
		writeJSON(ctx, t, conn, map[string]any{"type": "join", "room": room})
		readUntil(ctx, t, conn, "joined")
	}
	writeJSON(ctx, t, alice, map[string]any{"type": "send", "room": room, "text": "across", "client_msg_id": "c-1"})
	if m := readUntil(ctx, t, bob, "message"); m["text"] != "across" {
		t.Errorf("bob got %v, want alice's message", m)
	}
	_ = alice.Close(websocket.StatusNormalClosure, "")
	_ = bob.Close(websocket.StatusNormalClosure, "")

	// A killed gateway is skipped: new WebSockets through nginx all work.
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if got, want := wsServedBy(ctx, t, c.URL(), 4), []string{"gw-2"}; !slices.Equal(got, want) {
		t.Fatalf("with gw-1 killed, WebSockets landed on %v, want %v", got, want)
	}
	for range 6 {
		mustGet(t, c.URL()+"/healthz", http.StatusOK)
	}
	if err := c.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	groups = append(groups, c.GatewayPID(0))

	// SIGTERM: a client of the gateway is closed with 1012 (service
	// restart) and the gateway exits 0.
	conn, _ := dialWS(ctx, t, c.GatewayURL(1), "carol")
	closeCode := make(chan websocket.StatusCode, 1)
	go func() {
		for {
			if _, _, err := conn.Read(ctx); err != nil {
				closeCode <- websocket.CloseStatus(err)
				return
			}
		}
	}()
	if err := c.Stop(ctx, 1); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case code := <-closeCode:
		if code != websocket.StatusServiceRestart {
			t.Errorf("a client of the stopped gateway was closed with %v, want %v", code, websocket.StatusServiceRestart)
		}
	case <-ctx.Done():
		t.Fatal("the client of the stopped gateway was never closed")
	}

	closed = true
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertGone(t, groups)
}

// wsURL turns an http:// base URL into a ws:// one.
func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") }

// dialWS opens a guest WebSocket to base as a browser on base's page would
// (Origin base) and returns it with the gateway its welcome names.
func dialWS(ctx context.Context, t *testing.T, base, name string) (*websocket.Conn, string) {
	t.Helper()
	conn, _, err := websocket.Dial(ctx, wsURL(base)+"/ws?name="+name,
		&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {base}}})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", base, name, err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	w := readUntil(ctx, t, conn, "welcome")
	gw, _ := w["gateway"].(string)
	if gw == "" {
		t.Fatalf("welcome without gateway: %v", w)
	}
	return conn, gw
}

// wsServedBy opens n WebSockets through base, one after the other, and
// returns the sorted gateways their welcomes name.
func wsServedBy(ctx context.Context, t *testing.T, base string, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		conn, gw := dialWS(ctx, t, base, "probe")
		_ = conn.Close(websocket.StatusNormalClosure, "")
		if !slices.Contains(ids, gw) {
			ids = append(ids, gw)
		}
	}
	slices.Sort(ids)
	return ids
}

func writeJSON(ctx context.Context, t *testing.T, conn *websocket.Conn, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

// readUntil reads frames (each message may hold several, one per line)
// until one of type typ, and returns it. An error frame fails the test.
func readUntil(ctx context.Context, t *testing.T, conn *websocket.Conn, typ string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for %q: %v", typ, err)
		}
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var f map[string]any
			if err := json.Unmarshal(line, &f); err != nil {
				t.Fatalf("bad frame %q: %v", line, err)
			}
			switch f["type"] {
			case typ:
				return f
			case "error":
				t.Fatalf("waiting for %q: error frame %v", typ, f)
			}
		}
	}
}
