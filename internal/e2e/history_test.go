//go:build integration

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/cluster"
	"github.com/parleychat/parley/internal/protocol"
)

// TestEveryClientSeesEachRoomAsOneContiguousRange has 20 senders, spread over
// two gateways, send 1,000 messages to three rooms at once. Every client
// must then hold, for each room, exactly the seqs 1..n of that room in order,
// each once, with the same id, epoch, sender and text on every client, the
// same as its sender's ack and the same as the store.
func TestEveryClientSeesEachRoomAsOneContiguousRange(t *testing.T) {
	c := launchCluster(t, cluster.Options{Gateways: 2, Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	rooms := []string{"alpha", "beta", "gamma"}
	const senders, perSender = 20, 50
	peers := make([]*peer, senders)
	for i := range peers {
		gw := i % 2
		p := connectPeer(ctx, t, c.GatewayURL(gw), fmt.Sprintf("sender-%02d", i), guestKey(t))
		if p.welcome.Gateway != c.GatewayID(gw) {
			t.Fatalf("%s landed on %s, want %s", p.name, p.welcome.Gateway, c.GatewayID(gw))
		}
		for _, r := range rooms {
			if j := p.mustJoin(ctx, t, r); j.Seq != 0 || len(j.Messages) != 0 {
				t.Fatalf("%s: room %s is not new: %s", p.name, r, j.Raw)
			}
		}
		peers[i] = p
	}

	// Message k of sender i goes to room (i+k)%3, so every room gets messages
	// from every sender, through both gateways, interleaved.
	want := map[string]int{}
	for i := range senders {
		for k := range perSender {
			want[rooms[(i+k)%len(rooms)]]++
		}
	}
	start := time.Now()
	acks := make([][]client.Frame, senders)
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i, p := range peers {
		wg.Go(func() {
			from := p.cursor()
			for k := range perSender {
				room := rooms[(i+k)%len(rooms)]
				if err := p.conn.Send(ctx, sendFrame(room, fmt.Sprintf("%s says %d", p.name, k), fmt.Sprintf("s%02d-%03d", i, k))); err != nil {
					errs <- err
					return
				}
			}
			err := p.waitUntil(ctx, "acks", func() bool {
				n := 0
				for _, f := range p.frames[from:] {
					if f.Type == protocol.TypeAck || f.Type == protocol.TypeError {
						n++
					}
				}
				return n >= perSender
			})
			if err != nil {
				errs <- err
				return
			}
			for _, f := range p.framesOf(protocol.TypeError) {
				errs <- fmt.Errorf("%s: %s", p.name, f.Raw)
			}
			acks[i] = p.framesOf(protocol.TypeAck)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	acked := time.Since(start)
	for _, p := range peers {
		for _, r := range rooms {
			if err := p.waitMessages(ctx, r, want[r]); err != nil {
				t.Fatal(err)
			}
		}
	}
	delivered := time.Since(start)
	t.Logf("%d messages from %d senders on 2 gateways to %d rooms %v: all acked in %v, all delivered to all %d clients in %v (%.0f messages/s in, %.0f deliveries/s out)",
		senders*perSender, senders, len(rooms), want, acked.Round(time.Millisecond),
		senders, delivered.Round(time.Millisecond), float64(senders*perSender)/delivered.Seconds(), float64(senders*senders*perSender)/delivered.Seconds())

	// The reference view of each room is the store's.
	ref := map[string][]entry{}
	for _, r := range rooms {
		msgs, epoch, seq, err := peers[1].history(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		ref[r] = entriesOfMessages(msgs)
		if err := checkContiguous(ref[r], 1, want[r]); err != nil {
			t.Errorf("store, room %s: %v", r, err)
		}
		if seq != int64(want[r]) || epoch == "" {
			t.Errorf("store, room %s: epoch %q seq %d, want seq %d", r, epoch, seq, want[r])
		}
	}
	// Each ack names the message its sender sent, as every client saw it.
	bySeq := map[string]map[int64]entry{}
	for _, r := range rooms {
		bySeq[r] = map[int64]entry{}
		for _, e := range ref[r] {
			bySeq[r][e.Seq] = e
		}
	}
	nacks := 0
	for i, as := range acks {
		for _, a := range as {
			nacks++
			e, ok := bySeq[a.Room][a.Seq]
			if !ok || e.ID != a.ID || e.CMID != a.ClientMsgID || e.User != peers[i].user() {
				t.Errorf("%s: ack %s does not match the stored message %+v", peers[i].name, a.Raw, e)
			}
		}
	}
	if nacks != senders*perSender {
		t.Errorf("%d acks, want %d", nacks, senders*perSender)
	}
	// Every client's stream of each room is the reference, in arrival order
	// (gaps, if a client fell behind, filled from history where they were).
	gaps := 0
	for _, p := range peers {
		for _, r := range rooms {
			got, filled, err := p.view(ctx, 0, r)
			if err != nil {
				t.Fatal(err)
			}
			gaps += filled
			if err := checkContiguous(got, 1, want[r]); err != nil {
				t.Errorf("%s (%s), room %s: %v", p.name, p.welcome.Gateway, r, err)
			} else if err := diffEntries(got, ref[r]); err != nil {
				t.Errorf("%s (%s), room %s differs from the store: %v", p.name, p.welcome.Gateway, r, err)
			}
		}
	}
	t.Logf("gap frames filled from history: %d", gaps)
	var wsMessages, frames int
	for _, p := range peers {
		p.drop()
		wsMessages += p.conn.Messages
		frames += p.conn.Frames
	}
	t.Logf("clients received %d frames in %d WebSocket messages (%.1f frames per message)",
		frames, wsMessages, float64(frames)/float64(max(wsMessages, 1)))
}

// TestResumeOnTheOtherGatewayGetsExactlyWhatWasMissed drops a client without
// a close handshake while 200 messages are sent through both gateways, then
// resumes it on the other gateway with since and epoch: the joined frame must
// carry exactly the 200 messages it missed, recovered, and live delivery
// must go on right after them.
func TestResumeOnTheOtherGatewayGetsExactlyWhatWasMissed(t *testing.T) {
	testResume(t, 200)
}

// TestResumeAfterALongAbsencePagesThroughEverythingMissed is the same with
// 1,200 missed messages, more than one joined frame carries: joined says
// more, and history "after" pages bring the rest, nothing twice.
func TestResumeAfterALongAbsencePagesThroughEverythingMissed(t *testing.T) {
	testResume(t, 1200)
}

func testResume(t *testing.T, missed int) {
	c := launchCluster(t, cluster.Options{Gateways: 2, Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const room, before = "lobby", 10

	vkey := guestKey(t)
	victim := connectPeer(ctx, t, c.GatewayURL(0), "victim", vkey)
	senders := []*peer{
		connectPeer(ctx, t, c.GatewayURL(0), "sender-1", guestKey(t)),
		connectPeer(ctx, t, c.GatewayURL(1), "sender-2", guestKey(t)),
	}
	for _, p := range append([]*peer{victim}, senders...) {
		p.mustJoin(ctx, t, room)
	}
	for i := range before {
		senders[i%2].mustSend(ctx, t, room, fmt.Sprint("before ", i), fmt.Sprint("b-", i))
	}
	if err := victim.waitMessages(ctx, room, before); err != nil {
		t.Fatal(err)
	}
	seen := victim.messagesSince(0, room)
	last := seen[len(seen)-1]
	if err := checkContiguous(entriesOf(seen), 1, before); err != nil {
		t.Fatalf("victim before the drop: %v", err)
	}

	// The victim stops reading the moment the burst starts and is cut off
	// during it: whatever reached its socket is lost with the connection.
	var wg sync.WaitGroup
	acks := make([][]client.Frame, len(senders))
	errs := make([]error, len(senders))
	burst := make(chan struct{})
	for s, p := range senders {
		wg.Go(func() {
			<-burst
			from := p.cursor()
			for k := range missed / len(senders) {
				if err := p.conn.Send(ctx, sendFrame(room, fmt.Sprintf("missed %d.%d", s, k), fmt.Sprintf("m-%d-%d", s, k))); err != nil {
					errs[s] = err
					return
				}
			}
			errs[s] = p.waitUntil(ctx, "acks", func() bool {
				n := 0
				for _, f := range p.frames[from:] {
					if f.Type == protocol.TypeAck || f.Type == protocol.TypeError {
						n++
					}
				}
				return n >= missed/len(senders)
			})
			acks[s] = p.framesOf(protocol.TypeAck)
		})
	}
	close(burst)
	victim.drop()
	wg.Wait()
	for s, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		if n := len(senders[s].framesOf(protocol.TypeError)); n > 0 {
			t.Fatalf("%s got %d errors: %s", senders[s].name, n, senders[s].framesOf(protocol.TypeError)[0].Raw)
		}
	}
	ackedIDs := map[int64]string{}
	for _, as := range acks {
		for _, a := range as {
			if a.Seq > before {
				ackedIDs[a.Seq] = a.ID
			}
		}
	}
	if len(ackedIDs) != missed {
		t.Fatalf("%d messages acked during the absence, want %d", len(ackedIDs), missed)
	}

	// Back, as the same guest, on the other gateway.
	back := connectPeer(ctx, t, c.GatewayURL(1), "victim", vkey)
	if back.welcome.Gateway != c.GatewayID(1) || back.user() != victim.user() {
		t.Fatalf("resumed as %s on %s, want %s on %s", back.user(), back.welcome.Gateway, victim.user(), c.GatewayID(1))
	}
	start := time.Now()
	j, err := back.join(ctx, room, last.Seq, last.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	if j.Recovered == nil || !*j.Recovered || j.Epoch != last.Epoch || j.Seq != int64(before+missed) {
		t.Fatalf("resume after %d: recovered %v, epoch %q (want %q), seq %d (want %d)",
			last.Seq, j.Recovered, j.Epoch, last.Epoch, j.Seq, before+missed)
	}
	got := slices.Clone(j.Messages)
	pages := 0
	more := j.More
	for more {
		pages++
		h, err := back.reply(ctx, map[string]any{"type": protocol.TypeHistory, "room": room, "after": got[len(got)-1].Seq, "limit": 100})
		if err != nil || h.Type != protocol.TypeHistory {
			t.Fatalf("history page %d: %s, %v", pages, h.Raw, err)
		}
		got = append(got, h.Messages...)
		more = len(h.Messages) > 0 && h.Messages[len(h.Messages)-1].Seq < j.Seq
	}
	t.Logf("missed %d messages; the resume on %s brought %d in the joined frame (more: %v) and %d in %d history pages, in %v",
		missed, back.welcome.Gateway, len(j.Messages), j.More, len(got)-len(j.Messages), pages, time.Since(start).Round(time.Millisecond))
	if wantMore := missed > 500; j.More != wantMore {
		t.Errorf("joined more = %v with %d missed", j.More, missed)
	}
	ges := entriesOfMessages(got)
	if err := checkContiguous(ges, last.Seq+1, missed); err != nil {
		t.Fatalf("resumed messages: %v", err)
	}
	for _, e := range ges {
		if ackedIDs[e.Seq] != e.ID {
			t.Fatalf("resumed seq %d has id %s, its ack said %s", e.Seq, e.ID, ackedIDs[e.Seq])
		}
	}

	// Live delivery goes on after the resumed range, with nothing repeated.
	from := back.cursor()
	ack := senders[0].mustSend(ctx, t, room, "after the resume", "after-1")
	m, _, err := back.next(ctx, from, "the live message", func(f client.Frame) bool { return f.Type == protocol.TypeMessage })
	if err != nil || m.Seq != ack.Seq || m.Seq != int64(before+missed+1) {
		t.Fatalf("first live message after the resume: %s, %v (want seq %d)", m.Raw, err, before+missed+1)
	}
}

// TestHistorySurvivesARestartOfEveryGateway stops every gateway, so that for
// a while none runs, then starts them again: the room's history is in Redis,
// so a new client on any gateway sees all of it in its joined frame, in the
// same epoch, and the next message continues the seqs.
func TestHistorySurvivesARestartOfEveryGateway(t *testing.T) {
	c := launchCluster(t, cluster.Options{Gateways: 2, Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const room, n = "archive", 30

	writers := []*peer{
		connectPeer(ctx, t, c.GatewayURL(0), "writer-1", guestKey(t)),
		connectPeer(ctx, t, c.GatewayURL(1), "writer-2", guestKey(t)),
	}
	for _, w := range writers {
		w.mustJoin(ctx, t, room)
	}
	var sent []entry
	for i := range n {
		w := writers[i%2]
		a := w.mustSend(ctx, t, room, fmt.Sprint("kept ", i), fmt.Sprint("k-", i))
		sent = append(sent, entry{Seq: a.Seq, ID: a.ID, User: w.user(), CMID: a.ClientMsgID, T: fmt.Sprint("kept ", i)})
	}
	if err := writers[0].waitMessages(ctx, room, n); err != nil {
		t.Fatal(err)
	}
	epoch := writers[0].messagesSince(0, room)[0].Epoch
	for i := range sent {
		sent[i].Epoch = epoch
	}

	start := time.Now()
	for i := range c.Len() {
		if err := c.Stop(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.Len() {
		if pid := c.GatewayPID(i); pid != 0 {
			t.Fatalf("%s still runs as pid %d", c.GatewayID(i), pid)
		}
	}
	stopped := time.Since(start)
	for i := range c.Len() {
		if err := c.Restart(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stopped both gateways in %v; both ready again %v later", stopped.Round(time.Millisecond), (time.Since(start) - stopped).Round(time.Millisecond))

	// A newcomer through nginx, and one on each gateway directly.
	bases := []string{c.URL(), c.GatewayURL(0), c.GatewayURL(1)}
	newcomers := make([]*peer, len(bases))
	for i, base := range bases {
		p := connectPeer(ctx, t, base, fmt.Sprint("newcomer-", i), guestKey(t))
		j := p.mustJoin(ctx, t, room)
		if j.Epoch != epoch || j.Seq != n {
			t.Errorf("newcomer on %s: joined epoch %q seq %d, want %q %d", p.welcome.Gateway, j.Epoch, j.Seq, epoch, n)
		}
		if err := diffEntries(entriesOfMessages(j.Messages), sent); err != nil {
			t.Errorf("newcomer on %s: joined messages: %v", p.welcome.Gateway, err)
		}
		newcomers[i] = p
	}
	// The seqs go on in the same epoch, on every gateway.
	a := newcomers[0].mustSend(ctx, t, room, "after the restart", "after-restart")
	if a.Seq != n+1 {
		t.Errorf("first message after the restart has seq %d, want %d", a.Seq, n+1)
	}
	for _, p := range newcomers {
		m, _, err := p.next(ctx, 0, "the message after the restart", func(f client.Frame) bool { return f.Type == protocol.TypeMessage })
		if err != nil || m.Epoch != epoch || m.Seq != n+1 || m.ID != a.ID {
			t.Errorf("%s (%s): message after the restart: %s, %v; want epoch %q seq %d", p.name, p.welcome.Gateway, m.Raw, err, epoch, n+1)
		}
	}
}

// roomKeys returns the Redis keys of one room of a cluster, sorted.
func roomKeys(ctx context.Context, rdb *redis.Client, prefix, room string) ([]string, error) {
	var keys []string
	// Redis globs treat '{' and '}' as ordinary characters; room names have
	// no glob characters (see protocol.ValidRoom).
	iter := rdb.Scan(ctx, 0, prefix+"{"+room+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan keys of room %s: %w", room, err)
	}
	slices.Sort(keys)
	return keys, nil
}

// TestFlushedRoomStartsANewEpochAndResumeIsNotRecovered deletes one room's
// keys from Redis behind the gateways' backs (only that room's, of this
// cluster: Redis is shared). A resume before anyone writes again, and one
// after, both get recovered:false and no error; the next message starts a new
// epoch at seq 1, which live members on both gateways receive.
func TestFlushedRoomStartsANewEpochAndResumeIsNotRecovered(t *testing.T) {
	c := launchCluster(t, cluster.Options{Gateways: 2, Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const room, n = "ephemeral", 5

	rdb := clusterRedis(ctx, t)

	a := connectPeer(ctx, t, c.GatewayURL(0), "anna", guestKey(t))
	b := connectPeer(ctx, t, c.GatewayURL(1), "bert", guestKey(t))
	a.mustJoin(ctx, t, room)
	b.mustJoin(ctx, t, room)
	for i := range n {
		a.mustSend(ctx, t, room, fmt.Sprint("old ", i), fmt.Sprint("old-", i))
	}
	if err := b.waitMessages(ctx, room, n); err != nil {
		t.Fatal(err)
	}
	old := b.messagesSince(0, room)[n-1]

	keys, err := roomKeys(ctx, rdb, c.RedisPrefix(), room)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatalf("no keys of room %s under %s", room, c.RedisPrefix())
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatalf("delete %v: %v", keys, err)
	}
	t.Logf("deleted %v", keys)

	resume := func(name string) (*peer, client.Frame) {
		t.Helper()
		p := connectPeer(ctx, t, c.URL(), name, guestKey(t))
		j, err := p.join(ctx, room, old.Seq, old.Epoch)
		if err != nil {
			t.Fatal(err)
		}
		if j.Recovered == nil || *j.Recovered {
			t.Errorf("%s: resume after seq %d of the flushed epoch: recovered %v, want false", name, old.Seq, j.Recovered)
		}
		return p, j
	}

	// Before anyone writes again the room has no history at all.
	p1, j1 := resume("early")
	if j1.Epoch != "" || j1.Seq != 0 || len(j1.Messages) != 0 {
		t.Errorf("resume into the flushed room: epoch %q seq %d %d messages, want an empty room", j1.Epoch, j1.Seq, len(j1.Messages))
	}

	// The next append starts a new epoch at seq 1.
	fromA, fromB := a.cursor(), b.cursor()
	ack := b.mustSend(ctx, t, room, "a fresh start", "new-1")
	if ack.Seq != 1 {
		t.Errorf("first message after the flush acked with seq %d, want 1", ack.Seq)
	}
	for _, p := range []*peer{a, b, p1} {
		from := map[*peer]int{a: fromA, b: fromB, p1: 0}[p]
		m, _, err := p.next(ctx, from, "the first message of the new epoch", func(f client.Frame) bool { return f.Type == protocol.TypeMessage })
		if err != nil {
			t.Fatal(err)
		}
		if m.Seq != 1 || m.Epoch == old.Epoch || m.Epoch == "" || m.ID != ack.ID {
			t.Errorf("%s (%s) got %s after the flush; want seq 1 in a new epoch (old: %q)", p.name, p.welcome.Gateway, m.Raw, old.Epoch)
		}
	}

	p2, j2 := resume("late")
	if j2.Epoch == old.Epoch || j2.Epoch == "" || j2.Seq != 1 || len(j2.Messages) != 1 || j2.Messages[0].ID != ack.ID {
		t.Errorf("resume after the new epoch began: %s", j2.Raw)
	}
	t.Logf("old epoch %q ended at seq %d; new epoch %q", old.Epoch, old.Seq, j2.Epoch)
	// Resuming in the new epoch works as usual.
	j3, err := p2.join(ctx, room, 1, j2.Epoch)
	if err != nil || j3.Recovered == nil || !*j3.Recovered || len(j3.Messages) != 0 {
		t.Errorf("resume in the new epoch: %s, %v", j3.Raw, err)
	}
	for _, p := range []*peer{a, b, p1, p2} {
		for _, e := range p.framesOf(protocol.TypeError) {
			t.Errorf("%s got an error: %s", p.name, e.Raw)
		}
	}
}

// TestRetriedSendWithTheSameClientMsgIDIsStoredOnce sends a message, drops
// the connection as if the ack had been lost, and sends it again with the
// same client_msg_id from the same guest key on the other gateway: both acks
// carry the same seq and id, the store holds it once, and a member sees it
// once. A repeat on one connection is deduplicated too; another user's
// message with the same client_msg_id is a message of its own.
func TestRetriedSendWithTheSameClientMsgIDIsStoredOnce(t *testing.T) {
	c := launchCluster(t, cluster.Options{Gateways: 2, Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const room = "retry"

	observer := connectPeer(ctx, t, c.GatewayURL(1), "observer", guestKey(t))
	observer.mustJoin(ctx, t, room)

	key := guestKey(t)
	first := connectPeer(ctx, t, c.GatewayURL(0), "ana", key)
	first.mustJoin(ctx, t, room)
	ack1 := first.mustSend(ctx, t, room, "said once", "cm-1")
	first.drop()

	again := connectPeer(ctx, t, c.GatewayURL(1), "ana", key)
	if again.user() != first.user() {
		t.Fatalf("the same guest key gave user %s, then %s", first.user(), again.user())
	}
	again.mustJoin(ctx, t, room)
	ack2 := again.mustSend(ctx, t, room, "said once", "cm-1")
	t.Logf("first ack seq %d id %s on %s; retry's ack seq %d id %s on %s",
		ack1.Seq, ack1.ID, first.welcome.Gateway, ack2.Seq, ack2.ID, again.welcome.Gateway)
	if ack2.Seq != ack1.Seq || ack2.ID != ack1.ID {
		t.Errorf("retry acked as seq %d id %s, the original as seq %d id %s", ack2.Seq, ack2.ID, ack1.Seq, ack1.ID)
	}

	// Two sends of one message on one connection, without waiting.
	from := again.cursor()
	for range 2 {
		if err := again.conn.Send(ctx, sendFrame(room, "sent twice at once", "cm-2")); err != nil {
			t.Fatal(err)
		}
	}
	if err := again.waitUntil(ctx, "two acks of cm-2", func() bool {
		n := 0
		for _, f := range again.frames[from:] {
			if isAnswerTo("cm-2")(f) {
				n++
			}
		}
		return n == 2
	}); err != nil {
		t.Fatal(err)
	}
	var twice []client.Frame
	for _, f := range again.framesOf(protocol.TypeAck) {
		if f.ClientMsgID == "cm-2" {
			twice = append(twice, f)
		}
	}
	if len(twice) != 2 || twice[0].Seq != twice[1].Seq || twice[0].ID != twice[1].ID {
		t.Errorf("acks of a message sent twice at once: %v", twice)
	}

	// The same client_msg_id from someone else is not a repeat.
	other := connectPeer(ctx, t, c.GatewayURL(0), "ben", guestKey(t))
	other.mustJoin(ctx, t, room)
	ack3 := other.mustSend(ctx, t, room, "my own cm-1", "cm-1")
	if ack3.Seq == ack1.Seq {
		t.Errorf("another user's cm-1 was taken for a repeat of ana's: seq %d", ack3.Seq)
	}

	// A last message marks the end: everything before it has been delivered.
	end := observer.mustSend(ctx, t, room, "the end", "end")
	if err := observer.waitMessages(ctx, room, int(end.Seq)); err != nil {
		t.Fatal(err)
	}
	wantEntries := []entry{
		{Seq: ack1.Seq, ID: ack1.ID, User: first.user(), CMID: "cm-1", T: "said once"},
		{Seq: twice[0].Seq, ID: twice[0].ID, User: first.user(), CMID: "cm-2", T: "sent twice at once"},
		{Seq: ack3.Seq, ID: ack3.ID, User: other.user(), CMID: "cm-1", T: "my own cm-1"},
		{Seq: end.Seq, ID: end.ID, User: observer.user(), CMID: "end", T: "the end"},
	}
	stored, epoch, _, err := again.history(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	for i := range wantEntries {
		wantEntries[i].Epoch = epoch
	}
	if err := diffEntries(entriesOfMessages(stored), wantEntries); err != nil {
		t.Errorf("store: %v", err)
	}
	if err := diffEntries(entriesOf(observer.messagesSince(0, room)), wantEntries); err != nil {
		t.Errorf("observer: %v", err)
	}
}

// TestBadHistoryAndResumeInputGetsAClearAnswer sends history and join frames
// with bad seqs, limits, epochs and rooms. Each gets a clear error frame (or,
// where the input is valid but points at nothing, an empty page or an
// unrecovered resume), and the connection stays usable: a good request after
// each is answered, and a message sent at the end is acked.
func TestBadHistoryAndResumeInputGetsAClearAnswer(t *testing.T) {
	c := launchCluster(t, cluster.Options{Gateways: 1, Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// probe holds 3 messages, quiet none; chatter is where each connection
	// shows it still works.
	const room, quiet, chatter = "probe", "quiet", "chatter"

	// A connection that sends a burst of 30 bad frames is closed as abusive
	// (docs/protocol.md), so the cases are spread over a few connections,
	// each of which must stay usable.
	const casesPerConn = 8
	conns := 0
	connect := func() *peer {
		conns++
		p := connectPeer(ctx, t, c.URL(), fmt.Sprint("prober-", conns), guestKey(t))
		p.mustJoin(ctx, t, room)
		p.mustJoin(ctx, t, quiet)
		p.mustJoin(ctx, t, chatter)
		return p
	}
	p := connect()
	for i := range 3 {
		p.mustSend(ctx, t, room, fmt.Sprint("probe ", i), fmt.Sprint("p-", i))
	}
	if err := p.waitMessages(ctx, room, 3); err != nil {
		t.Fatal(err)
	}
	epoch := p.messagesSince(0, room)[0].Epoch

	type want struct {
		code      string // an error frame with this code, or
		typ       string // a frame of this type
		n         int    // with this many messages
		recovered *bool  // joined only
	}
	no, yes := false, true
	bad := want{code: protocol.CodeBadRequest}
	cases := []struct {
		name  string
		frame string
		want  want
	}{
		{"history after negative", `{"type":"history","room":"probe","after":-1}`, bad},
		{"history after fraction", `{"type":"history","room":"probe","after":1.5}`, bad},
		{"history after string", `{"type":"history","room":"probe","after":"1"}`, bad},
		{"history after bool", `{"type":"history","room":"probe","after":true}`, bad},
		{"history after huge float", `{"type":"history","room":"probe","after":1e300}`, bad},
		{"history after past int64", `{"type":"history","room":"probe","after":9223372036854775808}`, bad},
		{"history after max int64", `{"type":"history","room":"probe","after":9223372036854775807}`, want{typ: protocol.TypeHistory}},
		{"history after past 2^53", `{"type":"history","room":"probe","after":9007199254740993}`, want{typ: protocol.TypeHistory}},
		{"history after latest", `{"type":"history","room":"probe","after":3}`, want{typ: protocol.TypeHistory}},
		{"history after zero", `{"type":"history","room":"probe","after":0}`, want{typ: protocol.TypeHistory, n: 3}},
		{"history before zero", `{"type":"history","room":"probe","before":0}`, bad},
		{"history before negative", `{"type":"history","room":"probe","before":-3}`, bad},
		{"history before string", `{"type":"history","room":"probe","before":"x"}`, bad},
		{"history before fraction", `{"type":"history","room":"probe","before":2.5}`, bad},
		{"history before max int64", `{"type":"history","room":"probe","before":9223372036854775807,"limit":2}`, want{typ: protocol.TypeHistory, n: 2}},
		{"history before one", `{"type":"history","room":"probe","before":1}`, want{typ: protocol.TypeHistory}},
		{"history before and after", `{"type":"history","room":"probe","before":2,"after":1}`, bad},
		{"history limit zero", `{"type":"history","room":"probe","limit":0}`, bad},
		{"history limit negative", `{"type":"history","room":"probe","limit":-1}`, bad},
		{"history limit 101", `{"type":"history","room":"probe","limit":101}`, bad},
		{"history limit huge", `{"type":"history","room":"probe","limit":1000000000000}`, bad},
		{"history limit string", `{"type":"history","room":"probe","limit":"10"}`, bad},
		{"history limit fraction", `{"type":"history","room":"probe","limit":2.5}`, bad},
		{"history limit 100", `{"type":"history","room":"probe","limit":100}`, want{typ: protocol.TypeHistory, n: 3}},
		{"history of a room not joined", `{"type":"history","room":"elsewhere","after":0}`, want{code: protocol.CodeNotJoined}},
		{"history of a bad room name", `{"type":"history","room":"no such room!","after":0}`, want{code: protocol.CodeBadRoom}},
		{"history without a room", `{"type":"history","after":0}`, bad},
		{"history of an empty room", `{"type":"history","room":"quiet","after":0}`, want{typ: protocol.TypeHistory}},
		{"history of an empty room before", `{"type":"history","room":"quiet","before":10}`, want{typ: protocol.TypeHistory}},
		{"join since negative", `{"type":"join","room":"probe","since":-1,"epoch":"` + epoch + `"}`, bad},
		{"join since string", `{"type":"join","room":"probe","since":"2","epoch":"` + epoch + `"}`, bad},
		{"join since fraction", `{"type":"join","room":"probe","since":1.5,"epoch":"` + epoch + `"}`, bad},
		{"join since past int64", `{"type":"join","room":"probe","since":9223372036854775808,"epoch":"` + epoch + `"}`, bad},
		{"join epoch malformed", `{"type":"join","room":"probe","since":1,"epoch":"not an epoch!"}`, bad},
		{"join epoch number", `{"type":"join","room":"probe","since":1,"epoch":42}`, bad},
		{"join unknown epoch", `{"type":"join","room":"probe","since":1,"epoch":"nosuchepoch0"}`, want{typ: protocol.TypeJoined, n: 3, recovered: &no}},
		{"join since without epoch", `{"type":"join","room":"probe","since":1}`, want{typ: protocol.TypeJoined, n: 3, recovered: &no}},
		{"join since beyond the room", `{"type":"join","room":"probe","since":100,"epoch":"` + epoch + `"}`, want{typ: protocol.TypeJoined, n: 3, recovered: &no}},
		{"join since max int64", `{"type":"join","room":"probe","since":9223372036854775807,"epoch":"` + epoch + `"}`, want{typ: protocol.TypeJoined, n: 3, recovered: &no}},
		{"join since latest", `{"type":"join","room":"probe","since":3,"epoch":"` + epoch + `"}`, want{typ: protocol.TypeJoined, recovered: &yes}},
		{"join since zero", `{"type":"join","room":"probe","since":0,"epoch":"` + epoch + `"}`, want{typ: protocol.TypeJoined, n: 3, recovered: &yes}},
		{"join empty room with an epoch", `{"type":"join","room":"quiet","since":0,"epoch":"` + epoch + `"}`, want{typ: protocol.TypeJoined, recovered: &no}},
	}
	for i, tc := range cases {
		if i > 0 && i%casesPerConn == 0 {
			// The old connection is still usable: a message goes through.
			p.mustSend(ctx, t, chatter, "still here", fmt.Sprint("still-", conns))
			p = connect()
		}
		from := p.cursor()
		if err := p.conn.SendRaw(ctx, []byte(tc.frame)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		f, at, err := p.next(ctx, from, tc.name, isAnswer)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		switch {
		case tc.want.code != "":
			if f.Type != protocol.TypeError || f.Code != tc.want.code || f.ErrorMessage == "" {
				t.Errorf("%s: got %s, want an error %s with a message", tc.name, f.Raw, tc.want.code)
			}
		case f.Type != tc.want.typ || len(f.Messages) != tc.want.n:
			t.Errorf("%s: got %s, want %s with %d messages", tc.name, f.Raw, tc.want.typ, tc.want.n)
		case tc.want.recovered != nil && (f.Recovered == nil || *f.Recovered != *tc.want.recovered):
			t.Errorf("%s: got %s, want recovered %v", tc.name, f.Raw, *tc.want.recovered)
		}
		t.Logf("%-32s -> %s", tc.name, shorten(f.Raw))
		// The connection still answers a good request, and the next answer
		// is that one's: the bad frame got exactly one.
		if err := p.conn.Send(ctx, map[string]any{"type": protocol.TypeHistory, "room": room, "limit": 1}); err != nil {
			t.Fatalf("after %s: %v", tc.name, err)
		}
		h, _, err := p.next(ctx, at+1, "the good request after "+tc.name, isAnswer)
		if err != nil || h.Type != protocol.TypeHistory || len(h.Messages) != 1 {
			t.Fatalf("after %s, a good history request got %s, %v", tc.name, h.Raw, err)
		}
	}
	p.mustSend(ctx, t, chatter, "still here", "still-last")
	t.Logf("%d cases on %d connections; none was closed", len(cases), conns)

	// The HTTP history API checks the same bounds.
	for _, tc := range []struct {
		query  string
		status int
		n      int
	}{
		{"after=-1", http.StatusBadRequest, 0},
		{"after=x", http.StatusBadRequest, 0},
		{"after=1.5", http.StatusBadRequest, 0},
		{"after=9223372036854775808", http.StatusBadRequest, 0},
		{"before=0", http.StatusBadRequest, 0},
		{"before=abc", http.StatusBadRequest, 0},
		{"before=2&after=1", http.StatusBadRequest, 0},
		{"limit=0", http.StatusBadRequest, 0},
		{"limit=101", http.StatusBadRequest, 0},
		{"limit=", http.StatusBadRequest, 0},
		{"after=3", http.StatusOK, 0},
		{"after=9007199254740992", http.StatusOK, 0},
		{"before=9007199254740992&limit=2", http.StatusOK, 2},
		{"after=0&limit=100", http.StatusOK, 3},
	} {
		status, body := getJSON(ctx, t, c.URL()+"/api/rooms/"+room+"/messages?"+tc.query)
		var h client.Frame
		err := json.Unmarshal(body, &h)
		switch {
		case status != tc.status || err != nil:
			t.Errorf("GET ?%s: %d %s, want %d", tc.query, status, body, tc.status)
		case status == http.StatusBadRequest && (h.Code != protocol.CodeBadRequest || h.ErrorMessage == ""):
			t.Errorf("GET ?%s: %s, want a bad_request error with a message", tc.query, body)
		case status == http.StatusOK && len(h.Messages) != tc.n:
			t.Errorf("GET ?%s: %d messages, want %d", tc.query, len(h.Messages), tc.n)
		}
	}
	if status, body := getJSON(ctx, t, c.URL()+"/api/rooms/no%20such%20room!/messages"); status != http.StatusBadRequest {
		t.Errorf("GET messages of a bad room name: %d %s", status, body)
	}
}

// getJSON GETs url and returns the status and body.
func getJSON(ctx context.Context, t *testing.T, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}

func shorten(b []byte) string {
	const n = 160
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}
