package gateway

import (
	"fmt"
	"strings"
	"testing"

	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/protocol"
)

func msg(room string, seq int64, size int) hub.Frame {
	return hub.Frame{Data: []byte(strings.Repeat("m", size)), Kind: hub.KindMessage, Room: room, Seq: seq}
}

func contents(q *outQueue) string {
	var parts []string
	for _, it := range q.items {
		switch {
		case it.gap:
			parts = append(parts, string(it.Data))
		case it.Kind == hub.KindMessage:
			parts = append(parts, fmt.Sprintf("%s%d", it.Room, it.Seq))
		case it.Kind == hub.KindEphemeral:
			parts = append(parts, "eph")
		default:
			parts = append(parts, "ctl")
		}
	}
	return strings.Join(parts, " ")
}

func TestQueueShedsInTiers(t *testing.T) {
	q := &outQueue{limit: 1000}
	q.push(hub.Frame{Data: make([]byte, 50)}) // a control frame: an ack, say
	q.push(hub.Frame{Data: make([]byte, 100), Kind: hub.KindEphemeral})
	for seq := int64(1); seq <= 4; seq++ {
		q.push(msg("a", seq, 100))
	}
	q.push(msg("b", 7, 100))
	q.push(msg("a", 5, 100))
	if got, want := contents(q), "ctl eph a1 a2 a3 a4 b7 a5"; got != want {
		t.Fatalf("queue %q, want %q", got, want)
	}

	// Tier 1: an ephemeral frame that does not fit is dropped, and so are
	// the queued ones.
	s := q.push(hub.Frame{Data: make([]byte, 300), Kind: hub.KindEphemeral})
	if !s.newDropped || s.ephemeralDropped != 1 || s.mustClose || contents(q) != "ctl a1 a2 a3 a4 b7 a5" {
		t.Fatalf("tier 1: %+v, queue %q", s, contents(q))
	}

	// Tier 2: messages become one gap per room, where the room's first stood.
	s = q.push(msg("a", 6, 400))
	want := `ctl {"type":"gap","room":"a","from":1,"to":5} {"type":"gap","room":"b","from":7,"to":7} a6`
	if s.messagesGapped != 6 || s.mustClose || contents(q) != want {
		t.Fatalf("tier 2: %+v, queue %q, want %q", s, contents(q), want)
	}
	if q.bytes != sumBytes(q) || q.gaps != 2 {
		t.Fatalf("accounting: bytes %d (items %d), gaps %d", q.bytes, sumBytes(q), q.gaps)
	}

	// Tier 3: the queue fills again while a gap still waits: close.
	if s = q.push(msg("a", 7, 900)); !s.mustClose {
		t.Fatalf("tier 3: %+v", s)
	}
}

func TestQueueTierTwoOnlyOnceTheClientReadsAgain(t *testing.T) {
	q := &outQueue{limit: 500}
	for seq := int64(1); seq <= 4; seq++ {
		q.push(msg("a", seq, 100))
	}
	q.push(msg("a", 5, 200)) // gapped
	if q.gaps != 1 {
		t.Fatalf("no gap: %q", contents(q))
	}
	// The client reads: the writer takes everything, gap included.
	if b := q.take(1 << 20); len(b) != 2 || q.len() != 0 || q.bytes != 0 || q.gaps != 0 {
		t.Fatalf("take: %d frames, left %d (%d bytes, %d gaps)", len(b), q.len(), q.bytes, q.gaps)
	}
	// Falling behind again is tier 2 again, not a close.
	for seq := int64(6); seq <= 9; seq++ {
		q.push(msg("a", seq, 100))
	}
	if s := q.push(msg("a", 10, 200)); s.mustClose || s.messagesGapped != 4 {
		t.Fatalf("second fall: %+v", s)
	}
}

func TestQueueTakeBatchesUpToTheLimit(t *testing.T) {
	q := &outQueue{limit: 1 << 20}
	for seq := int64(1); seq <= 10; seq++ {
		q.push(msg("a", seq, 99))
	}
	if b := q.take(350); len(b) != 3 { // 3 x (99 + a newline) fit in 350
		t.Fatalf("took %d frames", len(b))
	}
	if b := q.take(10); len(b) != 1 { // at least one, however large
		t.Fatalf("took %d frames", len(b))
	}
	if q.len() != 6 || q.bytes != 6*99 {
		t.Fatalf("left %d frames, %d bytes", q.len(), q.bytes)
	}
}

func sumBytes(q *outQueue) int {
	n := 0
	for _, it := range q.items {
		n += len(it.Data)
	}
	return n
}

func TestQueueTakesAnOversizedReplyIntoAnEmptyQueue(t *testing.T) {
	q := &outQueue{limit: 100}
	if s := q.push(hub.Frame{Data: make([]byte, 500)}); s.mustClose || q.len() != 1 {
		t.Fatalf("an oversized reply into an empty queue: %+v, %d queued", s, q.len())
	}
	if s := q.push(hub.Frame{Data: make([]byte, 500)}); !s.mustClose {
		t.Fatalf("a second oversized reply behind the first: %+v", s)
	}
}

func TestRepliesFitTheBudget(t *testing.T) {
	var msgs []protocol.Message
	for seq := int64(1); seq <= 10; seq++ {
		msgs = append(msgs, protocol.Message{Seq: seq, Text: strings.Repeat("x", 850)}) // 1000 bytes each
	}
	if got, trimmed := fitOldest(msgs, 3500); len(got) != 3 || got[0].Seq != 1 || !trimmed {
		t.Errorf("fitOldest kept %d from seq %d (trimmed %v)", len(got), got[0].Seq, trimmed)
	}
	if got, trimmed := fitNewest(msgs, 3500); len(got) != 3 || got[2].Seq != 10 || !trimmed {
		t.Errorf("fitNewest kept %d up to seq %d (trimmed %v)", len(got), got[len(got)-1].Seq, trimmed)
	}
	if got, _ := fitOldest(msgs, 10); len(got) != 1 {
		t.Errorf("a tiny budget kept %d, want the one that must go", len(got))
	}
	if got, trimmed := fitNewest(msgs, 1<<20); len(got) != 10 || trimmed {
		t.Errorf("a large budget kept %d (trimmed %v)", len(got), trimmed)
	}
}
