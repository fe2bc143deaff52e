package loadgen

import (
	"testing"

	"github.com/parleychat/parley/internal/protocol"
)

func TestParsesTheGatewaysFrames(t *testing.T) {
	st := stamp{step: 3, pub: 17, k: 4242, sent: 123456789012}
	text := string(appendText(nil, st, 64))
	if len(text) != 64 {
		t.Fatalf("text %q is %d bytes, want 64", text, len(text))
	}
	msg := protocol.EncodeMessage(protocol.Message{
		Room: "b1-0", Epoch: "e1", Seq: 58, ID: "id1", User: protocol.User{ID: "g_1", Name: "lg1"},
		Text: text, ClientMsgID: "3.4242",
	})
	if k := kindOf(msg); k != kindMessage {
		t.Fatalf("kind of %s = %v", msg, k)
	}
	seq, got, ok := messageFields(msg)
	if !ok || seq != 58 || got != st {
		t.Fatalf("messageFields = %d %+v %v, want 58 %+v", seq, got, ok, st)
	}

	ack := protocol.Encode(protocol.TypeAck, protocol.Ack{ClientMsgID: "3.4242", Room: "b1-0", Seq: 58, ID: "id1"})
	if kindOf(ack) != kindAck {
		t.Fatalf("kind of %s", ack)
	}
	id, ok := stringAfter(ack, keyClientID)
	if step, k, ok2 := parseClientMsgID(id); !ok || !ok2 || step != 3 || k != 4242 {
		t.Fatalf("ack id %q -> %d %d", id, step, k)
	}

	joined := protocol.Encode(protocol.TypeJoined, protocol.Joined{Room: "b1-0", Epoch: "e1", Seq: 41,
		Messages: []protocol.Message{{Room: "b1-0", Seq: 40, Text: "x"}}})
	if kindOf(joined) != kindJoined {
		t.Fatalf("kind of %s", joined)
	}
	if seq, ok := intAfter(joined, keySeq); !ok || seq != 41 {
		t.Fatalf("joined seq = %d %v, want 41", seq, ok)
	}

	e := protocol.EncodeError(&protocol.Error{Code: "rate_limited", Message: "slow down", Ref: "0.7"}, "b1-0")
	if kindOf(e) != kindError {
		t.Fatalf("kind of %s", e)
	}
	if code, _ := stringAfter(e, keyCode); string(code) != "rate_limited" {
		t.Fatalf("code %q", code)
	}

	g := []byte(`{"type":"gap","room":"b1-0","from":41,"to":97}`)
	if kindOf(g) != kindGap {
		t.Fatalf("kind of %s", g)
	}
	if from, _ := intAfter(g, keyFrom); from != 41 {
		t.Fatalf("gap from %d", from)
	}

	// A frame whose type is not first is still recognised, slowly.
	if k := kindOf([]byte(`{"room":"r","type":"message"}`)); k != kindMessage {
		t.Fatalf("kind of a reordered frame = %v", k)
	}
	if k := kindOf([]byte(`not json`)); k != kindOther {
		t.Fatalf("kind of garbage = %v", k)
	}
}

func TestParseMessageDoesNotAllocate(t *testing.T) {
	msg := protocol.EncodeMessage(protocol.Message{
		Room: "b1-0", Epoch: "e1", Seq: 58, ID: "id1", User: protocol.User{ID: "g_1", Name: "lg1"},
		Text: string(appendText(nil, stamp{1, 2, 3, 4}, 64)), ClientMsgID: "1.3",
	})
	n := testing.AllocsPerRun(1000, func() {
		if kindOf(msg) != kindMessage {
			t.Fatal("kind")
		}
		if _, _, ok := messageFields(msg); !ok {
			t.Fatal("fields")
		}
	})
	if n != 0 {
		t.Fatalf("parsing a message allocates %v times", n)
	}
}
