package hub_test

import (
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

// countMember is the cheapest Member: it counts what it is pushed. The hub
// calls Push under the room's lock, so the count needs no lock of its own.
type countMember struct{ n int }

func (m *countMember) Push(hub.Frame) { m.n++ }

// BenchmarkDeliverFanOut measures the hub's share of fan-out: one broker
// body decoded, re-encoded and pushed to every member of a room on this
// gateway. ns/delivery is the cost per member; the one allocation per op
// that is the benchmark's own is building the body.
func BenchmarkDeliverFanOut(b *testing.B) {
	for _, members := range []int{1, 100, 1000, 10000} {
		b.Run(strconv.Itoa(members), func(b *testing.B) {
			h := hub.New(hub.Config{}, store.NewMemory(store.Retention{}, nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
			ms := make([]*countMember, members)
			for i := range ms {
				ms[i] = &countMember{}
				s := h.Subscribe("general", ms[i])
				s.Start([]byte(`{"type":"joined"}`), "e1", 0)
				b.Cleanup(s.Close)
			}
			tmpl := protocol.EncodeMessage(protocol.Message{
				Room: "general", Epoch: "e1", Seq: 999999999, ID: "01jq3n9c4k0f3m6t2b7x5d8e1a",
				User: protocol.User{ID: "g_0q3v5m2k8d1c7b9a", Name: "alice"},
				Text: "hello, this is a chat message of ordinary length", ClientMsgID: "c-17",
			})
			// The body of message seq: the template with its seq replaced.
			at := indexOf(tmpl, "999999999")
			seq := int64(0)
			b.ReportAllocs()
			for b.Loop() {
				seq++
				body := make([]byte, 0, len(tmpl)+10)
				body = append(body, tmpl[:at]...)
				body = strconv.AppendInt(body, seq, 10)
				body = append(body, tmpl[at+9:]...)
				h.Deliver(body)
			}
			b.StopTimer()
			if ms[0].n != int(seq)+1 { // the joined frame, then every message
				b.Fatalf("member got %d frames, want %d", ms[0].n, seq+1)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq)/float64(members), "ns/delivery")
		})
	}
}

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	panic("template has no " + s)
}
