//go:build integration

package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/cluster"
	"github.com/parleychat/parley/internal/protocol"
)

// member is a test client that keeps the messages it reads while waiting
// for something else (an ack may come before or after the sender's own
// message).
type member struct {
	*client.Conn
	buf []client.Frame
}

// dialOn connects through the load balancer until nginx hands the
// connection to gateway id (it balances round robin, so a few tries do).
func dialOn(ctx context.Context, t *testing.T, c *cluster.Cluster, name, key, id string) *member {
	t.Helper()
	for range 20 {
		conn, _, err := client.Dial(ctx, c.URL(), client.Options{Name: name, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		w, err := conn.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if w.Gateway == id {
			t.Cleanup(func() { _ = conn.CloseNow() })
			return &member{Conn: conn}
		}
		_ = conn.Close()
	}
	t.Fatalf("nginx never sent %s to %s", name, id)
	return nil
}

func (m *member) send(ctx context.Context, t *testing.T, text, id string) client.Frame {
	t.Helper()
	if err := m.Send(ctx, map[string]any{"type": "send", "room": "general", "text": text, "client_msg_id": id}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := m.NextOf(ctx, protocol.TypeAck, protocol.TypeError, protocol.TypeMessage)
		switch {
		case err != nil || f.Type == protocol.TypeError:
			t.Fatalf("send %q: %s, %v", text, f.Raw, err)
		case f.Type == protocol.TypeMessage:
			m.buf = append(m.buf, f)
		default:
			return f
		}
	}
}

func (m *member) receive(ctx context.Context, t *testing.T, seq int64, text string) client.Frame {
	t.Helper()
	var f client.Frame
	var err error
	if len(m.buf) > 0 {
		f, m.buf = m.buf[0], m.buf[1:]
	} else {
		f, err = m.NextOf(ctx, protocol.TypeMessage)
	}
	if err != nil || f.Seq != seq || f.Text != text {
		t.Fatalf("want seq %d %q, got %s, %v", seq, text, f.Raw, err)
	}
	return f
}

func TestClientsOfAKilledGatewayReconnectThroughNginxAndKeepChatting(t *testing.T) {
	c := startCluster(t, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	xena := dialOn(ctx, t, c, "xena", "key-of-xena-0123456789", c.GatewayID(0))
	yuri := dialOn(ctx, t, c, "yuri", "key-of-yuri-0123456789", c.GatewayID(1))
	for _, m := range []*member{xena, yuri} {
		if _, err := m.Join(ctx, "general"); err != nil {
			t.Fatal(err)
		}
	}
	xena.send(ctx, t, "before", "x-1")
	first := xena.receive(ctx, t, 1, "before")
	yuri.receive(ctx, t, 1, "before")

	// SIGKILL: no drain, no close frame. Xena's connection just ends.
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if _, err := xena.Next(ctx); err == nil {
		t.Fatal("xena's connection survived the death of its gateway")
	} else if code := websocket.CloseStatus(err); code != -1 && code != websocket.StatusAbnormalClosure {
		t.Fatalf("xena's connection ended with %v", err)
	}

	// While xena is away, yuri keeps chatting on the surviving gateway.
	yuri.send(ctx, t, "while you were away", "y-1")
	yuri.receive(ctx, t, 2, "while you were away")

	// Xena reconnects through nginx, lands on the survivor, and resumes.
	again := dialOn(ctx, t, c, "xena", "key-of-xena-0123456789", c.GatewayID(1))
	if err := again.Send(ctx, map[string]any{"type": "join", "room": "general", "since": 1, "epoch": first.Epoch}); err != nil {
		t.Fatal(err)
	}
	j, err := again.NextOf(ctx, protocol.TypeJoined)
	if err != nil || j.Recovered == nil || !*j.Recovered || len(j.Messages) != 1 || j.Messages[0].Text != "while you were away" {
		t.Fatalf("resume: %s, %v", j.Raw, err)
	}
	for i, m := range []*member{again, yuri} {
		text := fmt.Sprint("after ", i)
		m.send(ctx, t, text, fmt.Sprint("after-", i))
		again.receive(ctx, t, int64(3+i), text)
		yuri.receive(ctx, t, int64(3+i), text)
	}
}
