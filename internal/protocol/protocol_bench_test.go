package protocol

import (
	"testing"
	"time"
)

// benchText is a chat message of ordinary length.
const benchText = "hello, this is a chat message of ordinary length"

// BenchmarkDecodeRequestSend decodes and validates a "send" frame: the
// gateway's work on every frame a publisher sends, before the store.
func BenchmarkDecodeRequestSend(b *testing.B) {
	frame := []byte(`{"type":"send","room":"general","text":"` + benchText + `","client_msg_id":"c-1732"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		req, err := DecodeRequest(frame, Limits{})
		if err != nil || req.Type != TypeSend {
			b.Fatalf("DecodeRequest = %+v, %v", req, err)
		}
	}
}

func benchMessage() Message {
	return Message{
		Room: "general", Epoch: "4k2j9x0c1b5qa", Seq: 58, ID: "01jq3n9c4k0f3m6t2b7x5d8e1a",
		User: User{ID: "g_0q3v5m2k8d1c7b9a", Name: "alice"}, Text: benchText,
		TS: time.Date(2026, 11, 28, 19, 20, 1, 123e6, time.UTC), ClientMsgID: "c-1732",
	}
}

// BenchmarkEncodeMessage encodes a "message" frame: done once per message
// when it is published, and once more per message and gateway by the hub,
// which re-encodes what the broker delivers.
func BenchmarkEncodeMessage(b *testing.B) {
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		if out := EncodeMessage(m); len(out) == 0 {
			b.Fatal("empty frame")
		}
	}
}

// BenchmarkDecodeMessage decodes and validates a broker body: done once per
// message and gateway by the hub, before it re-encodes it.
func BenchmarkDecodeMessage(b *testing.B) {
	body := EncodeMessage(benchMessage())
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeMessage(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeAck encodes the "ack" a sender gets for every message.
func BenchmarkEncodeAck(b *testing.B) {
	a := Ack{ClientMsgID: "c-1732", Room: "general", Seq: 58, ID: "01jq3n9c4k0f3m6t2b7x5d8e1a"}
	b.ReportAllocs()
	for b.Loop() {
		if out := Encode(TypeAck, a); len(out) == 0 {
			b.Fatal("empty frame")
		}
	}
}
