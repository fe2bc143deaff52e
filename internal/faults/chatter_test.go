//go:build faults

package faults

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/client"
)

// These tests check the checker: a fault test that passes proves something
// only if the Chatter notices the gaps, repeats and lost resumes it is
// there to catch. They feed it frames by hand, with no gateway.

// newTestChatter returns a Chatter in room "r" that believes it is on its
// first connection.
func newTestChatter() *Chatter {
	c := NewChatter(ChatterOptions{Name: "t", Room: "r"})
	c.gen, c.cur = 1, &ConnRecord{}
	c.conns = append(c.conns, c.cur)
	return c
}

// feed hands c the frame v (a map) on connection gen.
func feed(t *testing.T, c *Chatter, gen int, v map[string]any) {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var f client.Frame
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	f.Raw = raw
	c.handle(gen, nil, f)
}

func msg(epoch string, seq int64) map[string]any {
	return map[string]any{"type": "message", "room": "r", "epoch": epoch, "seq": seq,
		"id": "m-" + epoch + "-" + string(rune('a'+seq)), "client_msg_id": "c-" + epoch + string(rune('a'+seq))}
}

func TestChatterShowsMessagesInOrder(t *testing.T) {
	c := newTestChatter()
	feed(t, c, 1, map[string]any{"type": "joined", "room": "r", "epoch": "e", "seq": 5, "messages": []any{msg("e", 5)}})
	for seq := int64(6); seq <= 8; seq++ {
		feed(t, c, 1, msg("e", seq))
	}
	s := c.Snapshot()
	if s.NProblems != 0 || s.Last != 8 || s.Base != 5 || len(s.Seen) != 4 {
		t.Fatalf("got %+v", s)
	}
}

func TestChatterCountsGapsAndRepeats(t *testing.T) {
	c := newTestChatter()
	feed(t, c, 1, map[string]any{"type": "joined", "room": "r", "epoch": "", "seq": 0})
	feed(t, c, 1, msg("e", 1))
	feed(t, c, 1, msg("e", 3)) // 2 is missing: a gap; 3 waits
	if s := c.Snapshot(); s.Gaps != 1 || s.Last != 1 {
		t.Fatalf("after a gap: %+v", s)
	}
	feed(t, c, 1, msg("e", 4)) // while the hole is being filled: held, no new gap
	feed(t, c, 1, map[string]any{"type": "history", "room": "r", "messages": []any{msg("e", 2), msg("e", 3)}})
	if s := c.Snapshot(); s.Gaps != 1 || s.Last != 4 || s.Dups != 0 {
		t.Fatalf("after the history reply: %+v", s)
	}
	feed(t, c, 1, msg("e", 4)) // shown already
	if s := c.Snapshot(); s.Dups != 1 || s.NProblems != 2 {
		t.Fatalf("after a repeat: %+v", s)
	}
}

func TestChatterChecksResumes(t *testing.T) {
	c := newTestChatter()
	feed(t, c, 1, map[string]any{"type": "joined", "room": "r", "epoch": "e", "seq": 2})
	// A new connection resumes: what it brings must follow on.
	c.gen, c.cur = 2, &ConnRecord{}
	feed(t, c, 1, msg("e", 3)) // a late frame of the old connection is ignored
	feed(t, c, 2, map[string]any{"type": "joined", "room": "r", "epoch": "e", "seq": 4, "recovered": true,
		"messages": []any{msg("e", 3), msg("e", 4)}})
	if s := c.Snapshot(); s.NProblems != 0 || s.Last != 4 || s.Seen["m-e-d"].How != "resume" {
		t.Fatalf("after a recovered resume: %+v", s)
	}
	c.gen, c.cur = 3, &ConnRecord{}
	feed(t, c, 3, map[string]any{"type": "joined", "room": "r", "epoch": "e", "seq": 9, "recovered": false,
		"messages": []any{msg("e", 9)}})
	if s := c.Snapshot(); s.NProblems != 1 || !strings.Contains(s.Problems[0], "not recovered") {
		t.Fatalf("a resume that was not recovered went unnoticed: %+v", s)
	}
}

func TestChatterFollowsANewEpoch(t *testing.T) {
	c := newTestChatter()
	feed(t, c, 1, map[string]any{"type": "joined", "room": "r", "epoch": "", "seq": 0})
	feed(t, c, 1, msg("a", 1))
	feed(t, c, 1, msg("a", 2))
	feed(t, c, 1, msg("b", 1))
	feed(t, c, 1, msg("a", 3)) // the old epoch again: a problem
	s := c.Snapshot()
	if s.Epochs != 1 || s.Epoch != "b" || s.Last != 1 || s.NProblems != 1 {
		t.Fatalf("got %+v", s)
	}
}

func TestChatterMatchesAnswersToSends(t *testing.T) {
	c := newTestChatter()
	a, b := c.Send("one"), c.Send("two")
	feed(t, c, 1, map[string]any{"type": "ack", "client_msg_id": a, "room": "r", "seq": 7, "id": "m7"})
	feed(t, c, 1, map[string]any{"type": "error", "code": "unavailable", "ref": b, "room": "r"})
	feed(t, c, 1, map[string]any{"type": "ack", "client_msg_id": a, "room": "r", "seq": 7, "id": "m7"})
	s := c.Snapshot()
	if len(s.Results) != 2 || s.Results[0].Code != "" || s.Results[0].Seq != 7 || s.Results[1].Code != "unavailable" {
		t.Fatalf("results %+v", s.Results)
	}
	if s.Unanswered != 0 || s.NProblems != 1 {
		t.Fatalf("a second answer to one send went unnoticed: %+v", s)
	}
}

func TestBackoffIsFullJitterBelowACeiling(t *testing.T) {
	b := BrowserBackoff
	for attempt, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second} {
		if got := b.Ceiling(attempt); got != want {
			t.Errorf("Ceiling(%d) = %v, want %v", attempt, got, want)
		}
	}
	if got := b.Ceiling(1000); got != b.Cap {
		t.Errorf("Ceiling(1000) = %v, want the cap %v", got, b.Cap)
	}
	var longest time.Duration
	for range 1000 {
		d, next := b.Plan(-1, 2, 0)
		if d < 0 || d >= 2*time.Second || next != 3 {
			t.Fatalf("Plan(dropped, attempt 2) = %v, %d", d, next)
		}
		longest = max(longest, d)
	}
	if longest < time.Second {
		t.Errorf("1000 delays below a 2s ceiling all under %v: not full jitter", longest)
	}
	if d, _ := b.Plan(websocket.StatusServiceRestart, 0, 0); d >= b.RestartJitter {
		t.Errorf("after 1012: %v, want under %v", d, b.RestartJitter)
	}
	if _, next := b.Plan(-1, 5, time.Minute); next != 1 {
		t.Errorf("after a stable connection the attempt count is %d, want 1", next)
	}
}

func TestReportFindsMissingMessages(t *testing.T) {
	now := time.Now()
	sender := State{Name: "s", Room: "r", Conns: []ConnRecord{{Joined: now, Stopped: true, Ended: now}},
		Results: []SendResult{{Room: "r", ClientMsgID: "c1", Created: now, Written: now, Answered: now, Seq: 1, ID: "m1"}},
		Seen:    map[string]Seen{"m1": {Seq: 1, At: now, How: "live"}}}
	member := State{Name: "m", Room: "r", Conns: []ConnRecord{{Joined: now}}, Seen: map[string]Seen{}}
	rep := check([]State{sender, member})
	if rep.Missing != 1 || rep.Checked != 1 || rep.StayedConnected != 2 || rep.Err() == nil {
		t.Fatalf("got %+v, err %v", rep, rep.Err())
	}
	member.Seen["m1"] = Seen{Seq: 2, At: now, How: "live"}
	if rep := check([]State{sender, member}); rep.SeqMismatch != 1 || rep.Err() == nil {
		t.Fatalf("a seq that differs from the ack went unnoticed: %+v", rep)
	}
}

func TestHistogramCountsAndFoldsEmptyRuns(t *testing.T) {
	ms := time.Millisecond
	counts, text := Histogram([]time.Duration{50 * ms, 120 * ms, 150 * ms, 950 * ms}, 100*ms)
	if want := []int{1, 2, 0, 0, 0, 0, 0, 0, 0, 1}; !slices.Equal(counts, want) {
		t.Fatalf("counts %v, want %v", counts, want)
	}
	if lines := strings.Count(text, "\n"); lines != 4 || !strings.Contains(text, "200ms-900ms") {
		t.Fatalf("rendering:\n%s", text)
	}
}
