//go:build integration

package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/cluster"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/redistest"
)

// readyStatus returns the HTTP status of a gateway's /readyz, or 0 when it
// does not answer.
func readyStatus(ctx context.Context, base string) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// waitReadyStatus polls every gateway's /readyz until each answers status,
// and returns when the last one did.
func waitReadyStatus(ctx context.Context, t *testing.T, c *cluster.Cluster, status int) time.Time {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := range c.Len() {
		for readyStatus(ctx, c.GatewayURL(i)) != status {
			select {
			case <-ctx.Done():
				t.Fatalf("%s /readyz never answered %d: %v", c.GatewayID(i), status, ctx.Err())
			case <-tick.C:
			}
		}
	}
	return time.Now()
}

// sendUntilAcked sends a message again and again with the same
// client_msg_id, as a client retrying `unavailable` does, until it is
// acked. It returns the ack and how many attempts were refused before.
func sendUntilAcked(ctx context.Context, t *testing.T, p *peer, room, text, cmid string) (client.Frame, int) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for refused := 0; ; refused++ {
		f, err := p.send(ctx, room, text, cmid)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == protocol.TypeAck {
			return f, refused
		}
		if f.Code != protocol.CodeUnavailable {
			t.Fatalf("%s: send %s: %s", p.name, cmid, f.Raw)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %s never acked: %v", p.name, cmid, ctx.Err())
		case <-tick.C:
		}
	}
}

// checkUnavailable fails the test unless f is the `unavailable` error frame
// answering the send of cmid in room.
func checkUnavailable(t *testing.T, f client.Frame, room, cmid string) {
	t.Helper()
	if f.Type != protocol.TypeError || f.Code != protocol.CodeUnavailable || f.Ref != cmid || f.Room != room || f.ErrorMessage == "" {
		t.Errorf("send %s while Redis is down: got %s, want error unavailable with ref %s and room %s", cmid, f.Raw, cmid, room)
	}
}

// TestSendsAreUnavailableWhileRedisIsDownAndWorkAgainWhenItIsBack runs a
// cluster of two gateways on a private Redis and shuts that Redis down
// mid-run. Every send is then answered promptly with an `unavailable` error
// that names it, nothing is acked or delivered, joins are refused the same
// way and /readyz says so. When Redis is back on the same port (empty: it
// persisted nothing), the same gateway processes, not restarted, take sends
// again; the retried messages are stored once each, in a new epoch, and
// every member gets them in order.
func TestSendsAreUnavailableWhileRedisIsDownAndWorkAgainWhenItIsBack(t *testing.T) {
	rs := redistest.Start(t)
	c := launchCluster(t, cluster.Options{Gateways: 2, RedisURL: rs.URL(), Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const room, down = "outage", 10

	peers := []*peer{
		connectPeer(ctx, t, c.GatewayURL(0), "ada", guestKey(t)),
		connectPeer(ctx, t, c.GatewayURL(1), "bob", guestKey(t)),
	}
	for _, p := range peers {
		p.mustJoin(ctx, t, room)
	}
	for i := range 3 {
		peers[i%2].mustSend(ctx, t, room, fmt.Sprint("before ", i), fmt.Sprint("before-", i))
	}
	for _, p := range peers {
		if err := p.waitMessages(ctx, room, 3); err != nil {
			t.Fatal(err)
		}
	}
	oldEpoch := peers[0].messagesSince(0, room)[0].Epoch
	pids := []int{c.GatewayPID(0), c.GatewayPID(1)}

	// Redis goes away.
	outage := []int{peers[0].cursor(), peers[1].cursor()}
	stopped := time.Now()
	if err := rs.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("redis shut down in %v", time.Since(stopped).Round(time.Millisecond))
	var failLatency []time.Duration
	for i := range down {
		p, cmid := peers[i%2], fmt.Sprint("down-", i)
		start := time.Now()
		f, err := p.send(ctx, room, fmt.Sprint("during the outage ", i), cmid)
		if err != nil {
			t.Fatal(err)
		}
		failLatency = append(failLatency, time.Since(start))
		checkUnavailable(t, f, room, cmid)
	}
	lo, mid, hi := percentiles(failLatency)
	t.Logf("%d sends while Redis was down: each answered unavailable in min %v, median %v, max %v",
		down, lo.Round(time.Microsecond), mid.Round(time.Microsecond), hi.Round(time.Microsecond))
	notReady := waitReadyStatus(ctx, t, c, http.StatusServiceUnavailable)
	t.Logf("/readyz of both gateways answered 503 %v after the shutdown", notReady.Sub(stopped).Round(time.Millisecond))

	// A join cannot be served either; it is refused, and the connection
	// stays.
	late := connectPeer(ctx, t, c.URL(), "late", guestKey(t))
	if j, err := late.join(ctx, room, -1, ""); err == nil || j.Type != protocol.TypeError || j.Code != protocol.CodeUnavailable {
		t.Errorf("join while Redis is down: %s, %v; want error unavailable", j.Raw, err)
	}

	// Redis comes back on the same port.
	if err := rs.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("redis back after an outage of %v", back.Sub(stopped).Round(time.Millisecond))
	for i, p := range peers {
		for _, f := range p.framesSince(outage[i]) {
			if f.Type == protocol.TypeAck || f.Type == protocol.TypeMessage {
				t.Errorf("%s got %s while Redis was down", p.name, f.Raw)
			}
		}
	}
	resumed := []int{peers[0].cursor(), peers[1].cursor()}

	// Each gateway takes a send again, without a restart.
	acks := map[string]client.Frame{}
	for i, p := range peers {
		cmid := fmt.Sprint("down-", i)
		a, refused := sendUntilAcked(ctx, t, p, room, fmt.Sprint("during the outage ", i), cmid)
		acks[cmid] = a
		t.Logf("%s (%s): first send acked %v after Redis was back, %d attempts refused before",
			p.name, p.welcome.Gateway, time.Since(back).Round(time.Millisecond), refused)
	}
	readyAgain := waitReadyStatus(ctx, t, c, http.StatusOK)
	t.Logf("/readyz of both gateways answered 200 %v after Redis was back", readyAgain.Sub(back).Round(time.Millisecond))
	for i := range c.Len() {
		if got := c.GatewayPID(i); got != pids[i] {
			t.Errorf("%s is pid %d, was %d: it was restarted", c.GatewayID(i), got, pids[i])
		}
	}
	// The other refused messages, retried with their client_msg_id.
	for i := 2; i < down; i++ {
		cmid := fmt.Sprint("down-", i)
		acks[cmid] = peers[i%2].mustSend(ctx, t, room, fmt.Sprint("during the outage ", i), cmid)
	}
	if j, err := late.join(ctx, room, -1, ""); err != nil || len(j.Messages) != down {
		t.Errorf("join after Redis is back: %s, %v", j.Raw, err)
	}

	// Redis persisted nothing, so the room started a new epoch: the store
	// holds the retried messages once each, and every member got them in
	// order.
	stored, epoch, seq, err := peers[1].history(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if epoch == oldEpoch || seq != down {
		t.Errorf("after the outage: epoch %q (old %q), seq %d, want a new epoch with %d messages", epoch, oldEpoch, seq, down)
	}
	es := entriesOfMessages(stored)
	if err := checkContiguous(es, 1, down); err != nil {
		t.Errorf("store: %v", err)
	}
	for _, e := range es {
		if a, ok := acks[e.CMID]; !ok || a.Seq != e.Seq || a.ID != e.ID {
			t.Errorf("stored %+v, acked %s", e, a.Raw)
		}
	}
	for i, p := range peers {
		if err := p.waitUntil(ctx, "the retried messages", func() bool {
			n := 0
			for _, f := range p.frames[resumed[i]:] {
				if f.Type == protocol.TypeMessage && f.Epoch == epoch {
					n++
				}
			}
			return n >= down
		}); err != nil {
			t.Fatal(err)
		}
		got, _, err := p.view(ctx, resumed[i], room)
		if err != nil {
			t.Fatal(err)
		}
		if err := diffEntries(got, es); err != nil {
			t.Errorf("%s (%s): %v", p.name, p.welcome.Gateway, err)
		}
	}
}

// TestSendsAreUnavailableWhileRedisHangsAndRetriesAreStoredOnce pauses the
// private Redis (SIGSTOP): it keeps its connections and data but answers
// nothing, so the gateways' commands time out. Sends are answered
// `unavailable` within the store's timeout. A command that timed out may
// still run when Redis goes on, so some of those messages may be stored
// without having been acked; retries with the same client_msg_id must then
// get the original seq, and the store and every member must hold each
// message once, with no hole.
func TestSendsAreUnavailableWhileRedisHangsAndRetriesAreStoredOnce(t *testing.T) {
	rs := redistest.Start(t)
	c := launchCluster(t, cluster.Options{Gateways: 2, RedisURL: rs.URL(), Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const room, before, hung = "stall", 3, 6

	peers := []*peer{
		connectPeer(ctx, t, c.GatewayURL(0), "cleo", guestKey(t)),
		connectPeer(ctx, t, c.GatewayURL(1), "dan", guestKey(t)),
	}
	for _, p := range peers {
		p.mustJoin(ctx, t, room)
	}
	for i := range before {
		peers[i%2].mustSend(ctx, t, room, fmt.Sprint("before ", i), fmt.Sprint("before-", i))
	}

	paused := time.Now()
	if err := rs.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Resume() }) // a paused Redis must not outlive a failed test
	outage := []int{peers[0].cursor(), peers[1].cursor()}
	var failLatency []time.Duration
	for i := range hung {
		p, cmid := peers[i%2], fmt.Sprint("hung-", i)
		start := time.Now()
		f, err := p.send(ctx, room, fmt.Sprint("while Redis hangs ", i), cmid)
		if err != nil {
			t.Fatal(err)
		}
		failLatency = append(failLatency, time.Since(start))
		checkUnavailable(t, f, room, cmid)
	}
	lo, mid, hi := percentiles(failLatency)
	t.Logf("%d sends while Redis hung: each answered unavailable in min %v, median %v, max %v",
		hung, lo.Round(time.Millisecond), mid.Round(time.Millisecond), hi.Round(time.Millisecond))
	for i, p := range peers {
		for _, f := range p.framesSince(outage[i]) {
			if f.Type == protocol.TypeAck {
				t.Errorf("%s got %s while Redis hung", p.name, f.Raw)
			}
		}
	}

	if err := rs.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	t.Logf("redis resumed after hanging for %v", resumed.Sub(paused).Round(time.Millisecond))

	acks := map[string]client.Frame{}
	for i := range hung {
		cmid := fmt.Sprint("hung-", i)
		a, refused := sendUntilAcked(ctx, t, peers[i%2], room, fmt.Sprint("while Redis hangs ", i), cmid)
		acks[cmid] = a
		if i == 0 {
			t.Logf("first retry acked %v after Redis went on, %d attempts refused before", time.Since(resumed).Round(time.Millisecond), refused)
		}
	}
	end := peers[0].mustSend(ctx, t, room, "the end", "end")

	stored, _, seq, err := peers[1].history(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	es := entriesOfMessages(stored)
	if err := checkContiguous(es, 1, before+hung+1); err != nil {
		t.Errorf("store: %v", err)
	}
	if seq != end.Seq {
		t.Errorf("room seq %d, the last ack said %d", seq, end.Seq)
	}
	count := map[string]int{}
	storedEarly := 0
	for _, m := range stored {
		count[m.ClientMsgID]++
		if a, ok := acks[m.ClientMsgID]; ok && (a.Seq != m.Seq || a.ID != m.ID) {
			t.Errorf("stored %s as seq %d id %s, its ack says seq %d id %s", m.ClientMsgID, m.Seq, m.ID, a.Seq, a.ID)
		}
		if _, ok := acks[m.ClientMsgID]; ok && m.TS.Before(resumed.Add(-time.Millisecond)) {
			storedEarly++ // appended by the command that timed out
		}
	}
	for cmid := range acks {
		if count[cmid] != 1 {
			t.Errorf("%s stored %d times", cmid, count[cmid])
		}
	}
	t.Logf("%d of the %d sends answered unavailable had been stored anyway (their command ran when Redis went on); the retries got their original seqs",
		storedEarly, hung)
	for _, p := range peers {
		if err := p.waitMessages(ctx, room, int(end.Seq)); err != nil {
			t.Fatal(err)
		}
		got, _, err := p.view(ctx, 0, room)
		if err != nil {
			t.Fatal(err)
		}
		if err := diffEntries(got, es); err != nil {
			t.Errorf("%s (%s): %v", p.name, p.welcome.Gateway, err)
		}
	}
}

// TestMessageStoredDespiteAnUnavailableAnswerReachesMembers shows what
// becomes of a send answered `unavailable` because Redis hung, whose append
// Redis nevertheless ran when it went on: the message is in the store (the
// sender's client finds it in history after a reload and, like the browser
// client, stops resending it), but it was never published. The room's other
// members must still get it, live, without anyone sending after it; today
// they only see it when a later message reveals the hole.
func TestMessageStoredDespiteAnUnavailableAnswerReachesMembers(t *testing.T) {
	rs := redistest.Start(t)
	c := launchCluster(t, cluster.Options{Gateways: 2, RedisURL: rs.URL(), Env: fastSends})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const room = "limbo"

	sender := connectPeer(ctx, t, c.GatewayURL(0), "sender", guestKey(t))
	members := []*peer{
		connectPeer(ctx, t, c.GatewayURL(0), "near", guestKey(t)),
		connectPeer(ctx, t, c.GatewayURL(1), "far", guestKey(t)),
	}
	for _, p := range append([]*peer{sender}, members...) {
		p.mustJoin(ctx, t, room)
	}
	for i := range 2 {
		sender.mustSend(ctx, t, room, fmt.Sprint("before ", i), fmt.Sprint("before-", i))
	}

	// The append goes out on a pooled connection to a Redis that hangs: the
	// gateway gives up and answers unavailable, Redis runs it later.
	if err := rs.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Resume() })
	f, err := sender.send(ctx, room, "stored in limbo", "limbo-1")
	if err != nil {
		t.Fatal(err)
	}
	checkUnavailable(t, f, room, "limbo-1")
	if err := rs.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	// The gateway answers unavailable until its next store ping succeeds.
	var stored []protocol.Message
	var seq int64
	for {
		stored, _, seq, err = sender.history(ctx, room)
		if err == nil || !strings.Contains(err.Error(), protocol.CodeUnavailable) || time.Since(resumed) > 5*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling until the gateway sees Redis again
	}
	if err != nil {
		t.Fatal(err)
	}
	if seq != 3 || stored[2].ClientMsgID != "limbo-1" {
		t.Fatalf("precondition: Redis did not run the timed-out append (room seq %d); nothing to show", seq)
	}
	t.Logf("the send answered unavailable is stored as seq %d", stored[2].Seq)

	// Nobody retries and nobody else speaks. The members must get it.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	for _, m := range members {
		if err := m.waitMessages(wctx, room, 3); err != nil {
			t.Errorf("%s (%s) never got the stored message: %v", m.name, m.welcome.Gateway, err)
		}
	}
	if t.Failed() {
		// Any later message reveals the hole, and the hubs fill it.
		other := connectPeer(ctx, t, c.GatewayURL(1), "other", guestKey(t))
		other.mustJoin(ctx, t, room)
		other.mustSend(ctx, t, room, "anyone there?", "other-1")
		for _, m := range members {
			if err := m.waitMessages(ctx, room, 4); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("the members got seq 3 only with the next message, %v after Redis went on", time.Since(resumed).Round(time.Millisecond))
	}
}
