//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/testenv"
)

// twoGateways runs two gateways in this process, each with its own RabbitMQ
// and Redis connections, sharing an exchange and a key prefix of their own.
func twoGateways(t *testing.T) (a, b string) {
	t.Helper()
	prefix, exchange := testenv.Isolated(t)
	env := func(id string) map[string]string {
		return map[string]string{
			"PARLEY_ADDR":          "127.0.0.1:0",
			"PARLEY_AMQP_URL":      testenv.AMQPURL(),
			"PARLEY_REDIS_URL":     testenv.RedisURL(),
			"PARLEY_AMQP_EXCHANGE": exchange,
			"PARLEY_REDIS_PREFIX":  prefix,
			"PARLEY_GATEWAY_ID":    id,
			"PARLEY_SEND_RATE":     "1000",
			"PARLEY_SEND_BURST":    "1000",
		}
	}
	return startRun(t, env("gw-a")), startRun(t, env("gw-b"))
}

func TestMessageCrossesGateways(t *testing.T) {
	urlA, urlB := twoGateways(t)
	onA, onB := dial(t, urlA, "alice"), dial(t, urlB, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := onA.Send(ctx, map[string]any{"type": "send", "room": "general", "text": "across", "client_msg_id": "a-1"}); err != nil {
		t.Fatal(err)
	}
	var ack, mine client.Frame
	for ack.Type == "" || mine.Type == "" {
		f, err := onA.NextOf(ctx, protocol.TypeAck, protocol.TypeMessage)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == protocol.TypeAck {
			if ack.Type != "" {
				t.Fatal("two acks for one send")
			}
			ack = f
		} else {
			mine = f
		}
	}
	theirs, err := onB.NextOf(ctx, protocol.TypeMessage)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []client.Frame{mine, theirs} {
		if m.ID != ack.ID || m.Seq != ack.Seq || m.Text != "across" {
			t.Fatalf("message %s does not match ack %s", m.Raw, ack.Raw)
		}
	}
	// No second ack trails in.
	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer scancel()
	if f, err := onA.NextOf(sctx, protocol.TypeAck); err == nil {
		t.Fatalf("second ack %s", f.Raw)
	}
}

func TestManySendersAcrossGatewaysAgreeOnOneOrder(t *testing.T) {
	urlA, urlB := twoGateways(t)
	const senders, each = 10, 50
	var members []*client.Conn
	for i := range senders {
		url := urlA
		if i%2 == 1 {
			url = urlB
		}
		members = append(members, dial(t, url, fmt.Sprint("s", i)))
	}
	// Two members that only listen, one per gateway.
	members = append(members, dial(t, urlA, "listener-a"), dial(t, urlB, "listener-b"))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type view struct {
		ids  []string
		acks int
		err  error
	}
	views := make([]view, len(members))
	var wg sync.WaitGroup
	for i, c := range members {
		wg.Go(func() {
			v := &views[i]
			for len(v.ids) < senders*each || (i < senders && v.acks < each) {
				f, err := c.NextOf(ctx, protocol.TypeMessage, protocol.TypeAck, protocol.TypeError)
				if err != nil {
					v.err = err
					return
				}
				switch f.Type {
				case protocol.TypeError:
					v.err = fmt.Errorf("error frame %s", f.Raw)
					return
				case protocol.TypeAck:
					v.acks++
				case protocol.TypeMessage:
					if want := int64(len(v.ids) + 1); f.Seq != want {
						v.err = fmt.Errorf("got seq %d, want %d", f.Seq, want)
						return
					}
					v.ids = append(v.ids, f.ID)
				}
			}
		})
	}
	for i := range senders {
		wg.Go(func() {
			for j := range each {
				msg := map[string]any{"type": "send", "room": "general", "text": fmt.Sprintf("%d/%d", i, j), "client_msg_id": fmt.Sprintf("s%d-%d", i, j)}
				if err := members[i].Send(ctx, msg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, v := range views {
		if v.err != nil {
			t.Fatalf("member %d after %d messages: %v", i, len(v.ids), v.err)
		}
		if i < senders && v.acks != each {
			t.Errorf("sender %d got %d acks, want %d", i, v.acks, each)
		}
		for j := range v.ids {
			if v.ids[j] != views[0].ids[j] {
				t.Fatalf("member %d has %s at seq %d, member 0 has %s", i, v.ids[j], j+1, views[0].ids[j])
			}
		}
	}
	seen := make(map[string]bool)
	for _, id := range views[0].ids {
		if seen[id] {
			t.Fatalf("id %s twice", id)
		}
		seen[id] = true
	}
}

func TestPresenceAcrossGateways(t *testing.T) {
	urlA, urlB := twoGateways(t)
	onA, onB := dial(t, urlA, "alice"), dial(t, urlB, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []*client.Conn{onA, onB} {
		start := time.Now()
		for {
			f, err := c.NextOf(ctx, protocol.TypePresence)
			if err != nil {
				t.Fatalf("waiting for both in presence: %v", err)
			}
			var p protocol.Presence
			if err := json.Unmarshal(f.Raw, &p); err != nil {
				t.Fatal(err)
			}
			if p.Count == 2 && len(p.Members) == 2 {
				t.Logf("presence of both after %v", time.Since(start))
				break
			}
		}
	}
	// Bob leaves on gateway B; alice on A hears of it.
	if err := onB.Send(ctx, map[string]any{"type": "leave", "room": "general"}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := onA.NextOf(ctx, protocol.TypePresence)
		if err != nil {
			t.Fatalf("waiting for bob to leave: %v", err)
		}
		var p protocol.Presence
		_ = json.Unmarshal(f.Raw, &p)
		if p.Count == 1 {
			if len(p.Left) != 1 || p.Left[0].Name != "bob" {
				t.Fatalf("leave frame %s", f.Raw)
			}
			break
		}
	}
}
