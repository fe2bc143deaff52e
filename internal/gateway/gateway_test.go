package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/auth"
	"github.com/parleychat/parley/internal/broker"
	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/gateway"
	"github.com/parleychat/parley/internal/gatewaytest"
	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testGateway = gatewaytest.Gateway

// newGateway runs a gateway on the embedded broker and store, and stops all
// of it when the test ends.
func newGateway(t *testing.T, opts gateway.Options) *testGateway {
	t.Helper()
	return newGatewayWith(t, opts, nil, nil, nil)
}

func newGatewayOn(t *testing.T, opts gateway.Options, b broker.Broker, st store.Store) *testGateway {
	t.Helper()
	return newGatewayWith(t, opts, b, st, nil)
}

// newGatewayWith runs a gateway on b, st and authn (nil: the embedded
// defaults and guest mode), logging to the test log.
func newGatewayWith(t *testing.T, opts gateway.Options, b broker.Broker, st store.Store, authn gateway.Authenticator) *testGateway {
	t.Helper()
	return gatewaytest.Start(t, gatewaytest.Config{
		Options: opts, Hub: hub.Config{RepairDelay: 20 * time.Millisecond},
		Broker: b, Store: st, Auth: authn, Log: true,
	})
}

func dial(t *testing.T, url, name string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := client.Dial(ctx, url, client.Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	w, err := c.Next(ctx)
	if err != nil || w.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %+v, %v: want welcome", w, err)
	}
	return c
}

func join(t *testing.T, c *client.Conn, room string) client.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := c.Join(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func send(t *testing.T, c *client.Conn, v map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Send(ctx, v); err != nil {
		t.Fatal(err)
	}
}

func sendText(t *testing.T, c *client.Conn, room, text, id string) {
	t.Helper()
	send(t, c, map[string]any{"type": "send", "room": room, "text": text, "client_msg_id": id})
}

// next returns the next frame of one of types, failing the test after a few
// seconds.
func next(t *testing.T, c *client.Conn, types ...string) client.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := c.NextOf(ctx, types...)
	if err != nil {
		t.Fatalf("waiting for %v: %v", types, err)
	}
	return f
}

// expectError reads the next frame and checks it is an error with code.
func expectError(t *testing.T, c *client.Conn, code string) client.Frame {
	t.Helper()
	f := next(t, c, protocol.TypeError, protocol.TypeAck, protocol.TypeJoined, protocol.TypeHistory)
	if f.Type != protocol.TypeError || f.Code != code {
		t.Fatalf("got %s, want error %s", f.Raw, code)
	}
	return f
}

// expectClose reads until the connection ends and checks the close code.
func expectClose(t *testing.T, c *client.Conn, code websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := c.Next(ctx)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != code {
			t.Fatalf("connection ended with %v (status %d), want close %d", err, got, code)
		}
		return
	}
}

func TestMessageReachesEveryMemberAndSenderGetsOneAck(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	alice, bob := dial(t, g.URL, "alice"), dial(t, g.URL, "bob")
	join(t, alice, "general")
	join(t, bob, "general")

	sendText(t, alice, "general", "hi bob", "a-1")
	var ack, mine client.Frame
	for ack.Type == "" || mine.Type == "" {
		f := next(t, alice, protocol.TypeAck, protocol.TypeMessage)
		if f.Type == protocol.TypeAck {
			if ack.Type != "" {
				t.Fatal("two acks for one send")
			}
			ack = f
		} else {
			mine = f
		}
	}
	theirs := next(t, bob, protocol.TypeMessage)
	if ack.ClientMsgID != "a-1" || ack.Seq != 1 || ack.ID == "" {
		t.Fatalf("ack %s", ack.Raw)
	}
	for _, m := range []client.Frame{mine, theirs} {
		if m.Seq != ack.Seq || m.ID != ack.ID || m.Text != "hi bob" || m.User.Name != "alice" || m.ClientMsgID != "a-1" || m.Epoch == "" {
			t.Fatalf("message %s does not match ack %s", m.Raw, ack.Raw)
		}
	}
}

func TestJoinReturnsRecentHistory(t *testing.T) {
	g := newGateway(t, gateway.Options{JoinHistory: 3})
	alice := dial(t, g.URL, "alice")
	join(t, alice, "general")
	for i := range 5 {
		sendText(t, alice, "general", fmt.Sprint("m", i), fmt.Sprint("a-", i))
		next(t, alice, protocol.TypeAck)
	}
	bob := dial(t, g.URL, "bob")
	j := join(t, bob, "general")
	if j.Seq != 5 || j.Epoch == "" || len(j.Messages) != 3 || j.Messages[0].Seq != 3 || j.Messages[2].Text != "m4" {
		t.Fatalf("joined %s", j.Raw)
	}
	if j.Recovered != nil {
		t.Fatalf("plain join carries recovered: %s", j.Raw)
	}
}

func TestResume(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	alice := dial(t, g.URL, "alice")
	first := join(t, alice, "general")
	for i := range 4 {
		sendText(t, alice, "general", fmt.Sprint("m", i), fmt.Sprint("a-", i))
		next(t, alice, protocol.TypeAck)
	}
	if first.Epoch != "" {
		t.Fatalf("a room nobody wrote to has epoch %q", first.Epoch)
	}
	epoch := join(t, alice, "general").Epoch

	bob := dial(t, g.URL, "bob")
	send(t, bob, map[string]any{"type": "join", "room": "general", "since": 2, "epoch": epoch})
	j := next(t, bob, protocol.TypeJoined)
	if j.Recovered == nil || !*j.Recovered || len(j.Messages) != 2 || j.Messages[0].Seq != 3 || j.Messages[1].Seq != 4 {
		t.Fatalf("resume after 2: %s", j.Raw)
	}

	send(t, bob, map[string]any{"type": "join", "room": "general", "since": 2, "epoch": "someotherepoch"})
	j = next(t, bob, protocol.TypeJoined)
	if j.Recovered == nil || *j.Recovered || len(j.Messages) != 4 {
		t.Fatalf("resume in a foreign epoch: %s", j.Raw)
	}

	send(t, bob, map[string]any{"type": "join", "room": "general", "since": 99, "epoch": epoch})
	j = next(t, bob, protocol.TypeJoined)
	if j.Recovered == nil || *j.Recovered {
		t.Fatalf("resume after a seq the room never had: %s", j.Raw)
	}

	send(t, bob, map[string]any{"type": "join", "room": "general", "since": 4, "epoch": epoch})
	j = next(t, bob, protocol.TypeJoined)
	if j.Recovered == nil || !*j.Recovered || len(j.Messages) != 0 || j.Seq != 4 {
		t.Fatalf("resume with nothing missed: %s", j.Raw)
	}
}

func TestHistory(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	alice := dial(t, g.URL, "alice")
	join(t, alice, "general")
	for i := range 10 {
		sendText(t, alice, "general", fmt.Sprint("m", i), fmt.Sprint("a-", i))
		next(t, alice, protocol.TypeAck)
	}
	for _, tc := range []struct {
		req        map[string]any
		first, len int64
	}{
		{map[string]any{"before": 5, "limit": 2}, 3, 2},
		{map[string]any{"after": 7}, 8, 3},
		{map[string]any{"limit": 4}, 7, 4},
		{map[string]any{"before": 1}, 0, 0},
		{map[string]any{"after": 10}, 0, 0},
	} {
		tc.req["type"], tc.req["room"] = "history", "general"
		send(t, alice, tc.req)
		h := next(t, alice, protocol.TypeHistory)
		if int64(len(h.Messages)) != tc.len || (tc.len > 0 && h.Messages[0].Seq != tc.first) || h.Seq != 10 {
			t.Errorf("history %v: %s", tc.req, h.Raw)
		}
		for _, k := range []string{"before", "after"} {
			if v, ok := tc.req[k]; ok && !strings.Contains(string(h.Raw), fmt.Sprintf(`"%s":%d`, k, v)) {
				t.Errorf("history %v does not echo %s: %s", tc.req, k, h.Raw)
			}
		}
	}
}

func TestBadInputGetsErrorAndConnectionStaysOpen(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	c := dial(t, g.URL, "mallory")
	other := dial(t, g.URL, "olive")
	join(t, other, "general")

	cases := []struct {
		frame string
		code  string
	}{
		{`{`, protocol.CodeBadJSON},
		{`[1,2]`, protocol.CodeBadJSON},
		{`"join"`, protocol.CodeBadJSON},
		{`{"room":"general"}`, protocol.CodeUnknownType},
		{`{"type":"dance","room":"general"}`, protocol.CodeUnknownType},
		{`{"type":"join"}`, protocol.CodeBadRequest},
		{`{"type":"join","room":5}`, protocol.CodeBadRequest},
		{`{"type":"join","room":"` + strings.Repeat("r", 65) + `"}`, protocol.CodeBadRoom},
		{`{"type":"join","room":"a b"}`, protocol.CodeBadRoom},
		{`{"type":"join","room":"general","since":-1}`, protocol.CodeBadRequest},
		{`{"type":"join","room":"general","since":"41"}`, protocol.CodeBadRequest},
		{`{"type":"send","room":"general","text":"hi","client_msg_id":"x-1"}`, protocol.CodeNotJoined},
		{`{"type":"history","room":"general"}`, protocol.CodeNotJoined},
		{`{"type":"send","room":"general","text":"hi"}`, protocol.CodeBadRequest},
		{`{"type":"send","room":"general","client_msg_id":"x-2"}`, protocol.CodeBadRequest},
		{`{"type":"send","room":"general","text":"   ","client_msg_id":"x-3"}`, protocol.CodeBadRequest},
		{`{"type":"send","room":"general","text":"` + strings.Repeat("x", 4001) + `","client_msg_id":"x-4"}`, protocol.CodeTextTooLong},
		{`{"type":"history","room":"general","limit":1000}`, protocol.CodeBadRequest},
		{`{"type":"history","room":"general","before":2,"after":1}`, protocol.CodeBadRequest},
		{`{"type":"history","room":"general","before":1.5}`, protocol.CodeBadRequest},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range cases {
		if err := c.SendRaw(ctx, []byte(tc.frame)); err != nil {
			t.Fatal(err)
		}
		f := expectError(t, c, tc.code)
		if strings.Contains(tc.frame, "client_msg_id") && f.Ref == "" {
			t.Errorf("error for %s carries no ref", tc.frame)
		}
	}
	if err := c.WS().Write(ctx, websocket.MessageBinary, []byte(`{"type":"join","room":"general"}`)); err != nil {
		t.Fatal(err)
	}
	expectError(t, c, protocol.CodeBinaryUnsupported)

	// Still open, and still useful; the other client never noticed.
	join(t, c, "general")
	sendText(t, c, "general", "still here", "x-5")
	if m := next(t, other, protocol.TypeMessage); m.Text != "still here" {
		t.Fatalf("other client got %s", m.Raw)
	}
}

func TestOversizedFrameClosesWith1009(t *testing.T) {
	g := newGateway(t, gateway.Options{MaxFrameBytes: 1024})
	c := dial(t, g.URL, "mallory")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.SendRaw(ctx, []byte(`{"type":"send","text":"`+strings.Repeat("x", 2000)+`"}`))
	expectClose(t, c, websocket.StatusMessageTooBig)
}

func TestInvalidUTF8ClosesWith1007(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	c := dial(t, g.URL, "mallory")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.SendRaw(ctx, []byte("{\"type\":\"join\",\"room\":\"gen\xff\"}")); err != nil {
		t.Fatal(err)
	}
	expectClose(t, c, websocket.StatusInvalidFramePayloadData)
}

func TestRateLimit(t *testing.T) {
	g := newGateway(t, gateway.Options{SendRate: 1, SendBurst: 2})
	c := dial(t, g.URL, "fast")
	join(t, c, "general")
	for i := range 3 {
		sendText(t, c, "general", "x", fmt.Sprint("f-", i))
	}
	next(t, c, protocol.TypeAck)
	next(t, c, protocol.TypeAck)
	if f := expectError(t, c, protocol.CodeRateLimited); f.Ref != "f-2" {
		t.Fatalf("rate limit error %s", f.Raw)
	}
}

func TestLeaveStopsDelivery(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	alice, bob := dial(t, g.URL, "alice"), dial(t, g.URL, "bob")
	join(t, alice, "general")
	join(t, alice, "random")
	join(t, bob, "general")
	join(t, bob, "random")
	send(t, bob, map[string]any{"type": "leave", "room": "general"})
	if f := next(t, bob, protocol.TypeLeft); f.Room != "general" {
		t.Fatalf("left %s", f.Raw)
	}
	sendText(t, alice, "general", "to general", "a-1")
	sendText(t, alice, "random", "to random", "a-2")
	if m := next(t, bob, protocol.TypeMessage); m.Room != "random" {
		t.Fatalf("bob got %s after leaving general", m.Raw)
	}
}

// metric returns the value of a counter or gauge line on /metrics, such as
// `parley_backpressure_total{tier="gap"}`, or 0 when it is absent.
func metric(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// flood sends big messages from sender, each after the ack of the one
// before (so the sender itself keeps up), until stop says enough, and
// returns how many it sent.
func flood(t *testing.T, sender *client.Conn, stop func() bool) int {
	t.Helper()
	text := strings.Repeat("x", 3000)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		if i%20 == 0 && stop() {
			return i
		}
		if err := sender.Send(ctx, map[string]any{"type": "send", "room": "general", "text": text, "client_msg_id": fmt.Sprint("s-", i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := sender.NextOf(ctx, protocol.TypeAck); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll reads a client's messages in the background as a real client
// would: live messages must come in seq order, and a gap frame (the client
// itself fell behind, which a loaded machine can cause) is filled from
// history. wait checks that seqs 1..n all arrived, live or through history.
func readAll(t *testing.T, c *client.Conn) (wait func(n int)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	seen := make(map[int64]bool)
	var failure error
	go func() {
		var lastLive, fillTo int64
		for {
			f, err := c.NextOf(ctx, protocol.TypeMessage, protocol.TypeGap, protocol.TypeHistory)
			if err != nil {
				return
			}
			mu.Lock()
			switch f.Type {
			case protocol.TypeMessage:
				if f.Seq <= lastLive {
					failure = fmt.Errorf("live seq %d after %d", f.Seq, lastLive)
				}
				lastLive = f.Seq
				seen[f.Seq] = true
			case protocol.TypeGap:
				var g protocol.Gap
				_ = json.Unmarshal(f.Raw, &g)
				fillTo = max(fillTo, g.To)
				_ = c.Send(ctx, map[string]any{"type": "history", "room": g.Room, "after": g.From - 1, "limit": 100})
			case protocol.TypeHistory:
				last := int64(0)
				for _, m := range f.Messages {
					seen[m.Seq] = true
					last = m.Seq
				}
				if last > 0 && last < fillTo {
					_ = c.Send(ctx, map[string]any{"type": "history", "room": f.Room, "after": last, "limit": 100})
				}
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(cancel)
	return func(n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			missing := int64(0)
			for seq := int64(1); seq <= int64(n); seq++ {
				if !seen[seq] {
					missing = seq
					break
				}
			}
			err := failure
			mu.Unlock()
			if err != nil {
				t.Fatalf("fast client: %v", err)
			}
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("fast client never got seq %d of %d", missing, n)
			}
			time.Sleep(10 * time.Millisecond) // polling the reader's progress
		}
	}
}

func TestSlowClientGetsAGapInsteadOfItsBacklog(t *testing.T) {
	g := newGateway(t, gateway.Options{SendQueueBytes: 64 << 10, SendRate: 1e6, SendBurst: 1e6})
	slow := dial(t, g.URL, "slow") // stops reading after joining, for a while
	join(t, slow, "general")
	fast := dial(t, g.URL, "fast")
	join(t, fast, "general")
	wait := readAll(t, fast)
	sender := dial(t, g.URL, "sender")
	join(t, sender, "general")

	sent := flood(t, sender, func() bool { return metric(t, g.URL, `parley_backpressure_total{tier="gap"}`) >= 1 })
	wait(sent)

	// The slow client reads again: its backlog became a gap frame, which
	// names what to fetch; the connection is open, and history has it all.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var gap client.Frame
	for gap.Type != protocol.TypeGap {
		f, err := slow.Next(ctx)
		if err != nil {
			t.Fatalf("slow client before its gap frame: %v", err)
		}
		gap = f
	}
	var span protocol.Gap
	if err := json.Unmarshal(gap.Raw, &span); err != nil || span.Room != "general" || span.From < 1 || span.To < span.From || span.To > int64(sent) {
		t.Fatalf("gap %s after %d messages", gap.Raw, sent)
	}
	send(t, slow, map[string]any{"type": "history", "room": "general", "after": span.From - 1, "limit": 10})
	if h := next(t, slow, protocol.TypeHistory); len(h.Messages) == 0 || h.Messages[0].Seq != span.From {
		t.Fatalf("history after the gap: %s", h.Raw)
	}
	if got := metric(t, g.URL, `parley_backpressure_total{tier="disconnect"}`); got != 0 {
		t.Fatalf("%v disconnects; the slow client read again in time", got)
	}
}

func TestClientThatNeverReadsIsClosedAndOthersKeepUp(t *testing.T) {
	g := newGateway(t, gateway.Options{SendQueueBytes: 64 << 10, SendRate: 1e6, SendBurst: 1e6})
	dead := dial(t, g.URL, "dead") // never reads again
	join(t, dead, "general")
	fast := dial(t, g.URL, "fast")
	join(t, fast, "general")
	wait := readAll(t, fast)
	sender := dial(t, g.URL, "sender")
	join(t, sender, "general")

	sent := flood(t, sender, func() bool { return metric(t, g.URL, `parley_backpressure_total{tier="disconnect"}`) >= 1 })
	wait(sent)
	if got := metric(t, g.URL, `parley_backpressure_total{tier="gap"}`); got < 1 {
		t.Fatal("closed without first trying a gap")
	}
	deadline := time.Now().Add(15 * time.Second)
	for g.Connections() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections: the client that never reads was not closed", g.Connections())
		}
		time.Sleep(10 * time.Millisecond) // polling the gateway's count
	}
	// Whatever the dead client reads now ends in 1013, or in a reset when
	// the close frame could not get past its full buffers.
	expectEnd(t, dead, websocket.StatusTryAgainLater)
}

// expectEnd reads until the connection ends and accepts the close code or
// an abrupt end.
func expectEnd(t *testing.T, c *client.Conn, code websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, err := c.Next(ctx)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != code && got != -1 {
			t.Fatalf("connection ended with %v", err)
		}
		if ctx.Err() != nil {
			t.Fatal("the connection did not end")
		}
		return
	}
}

func TestTypingIsRelayedNotStoredAndThrottled(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	alice, bob := dial(t, g.URL, "alice"), dial(t, g.URL, "bob")
	join(t, alice, "general")
	join(t, bob, "general")
	for range 3 { // a burst: one notice gets through
		send(t, alice, map[string]any{"type": "typing", "room": "general"})
	}
	sendText(t, alice, "general", "done typing", "a-1")
	f := next(t, bob, protocol.TypeTyping, protocol.TypeMessage)
	if f.Type != protocol.TypeTyping || f.Room != "general" || f.User.Name != "alice" {
		t.Fatalf("bob got %s, want alice typing", f.Raw)
	}
	if m := next(t, bob, protocol.TypeTyping, protocol.TypeMessage); m.Type != protocol.TypeMessage || m.Seq != 1 {
		t.Fatalf("bob got %s after one typing notice, want the message", m.Raw)
	}
	page, err := g.Store.Recent(context.Background(), "general", 10)
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("history holds %d messages, %v: typing must not be stored", len(page.Messages), err)
	}
	send(t, bob, map[string]any{"type": "typing", "room": "elsewhere"})
	expectError(t, bob, protocol.CodeNotJoined)
}

func TestUnresponsivePeerIsReaped(t *testing.T) {
	g := newGateway(t, gateway.Options{PingInterval: time.Second, PongTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A client that never reads never answers pings.
	c, _, err := client.Dial(ctx, g.URL, client.Options{Name: "ghost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	live := dial(t, g.URL, "live")
	go func() {
		for {
			if _, err := live.Next(ctx); err != nil {
				return
			}
		}
	}()
	for g.Connections() != 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d connections; the unresponsive one was not reaped", g.Connections())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestDrainClosesClientsWith1012(t *testing.T) {
	g := newGateway(t, gateway.Options{DrainBatch: 2})
	var conns []*client.Conn
	for i := range 5 {
		c := dial(t, g.URL, fmt.Sprint("u", i))
		join(t, c, "general")
		conns = append(conns, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- g.Drain(ctx) }()
	for _, c := range conns {
		expectClose(t, c, websocket.StatusServiceRestart)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(g.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz while drained: %d", resp.StatusCode)
	}
	if _, resp, err := client.Dial(ctx, g.URL, client.Options{Name: "late"}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new connection while drained: %v, %v", resp, err)
	}
}

func TestHandshake(t *testing.T) {
	g := newGateway(t, gateway.Options{AllowedOrigins: []string{"chat.example.com"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if _, resp, err := client.Dial(ctx, g.URL, client.Options{}); err == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("guest without a name: %v", err)
	}
	foreign := http.Header{"Origin": {"https://evil.example.net"}}
	if _, resp, err := client.Dial(ctx, g.URL, client.Options{Name: "a", Header: foreign}); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign origin: %v", err)
	}
	allowed := http.Header{"Origin": {"https://chat.example.com"}}
	c, _, err := client.Dial(ctx, g.URL, client.Options{Name: "a", Header: allowed})
	if err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	c.CloseNow()

	// The same key is the same guest; no key, a new one each time.
	id := func(key string) string {
		c, _, err := client.Dial(ctx, g.URL, client.Options{Name: "Ann", Key: key})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		w, err := c.Next(ctx)
		if err != nil || !w.Guest {
			t.Fatalf("welcome %+v, %v", w, err)
		}
		return w.User.ID
	}
	if a, b := id("0123456789abcdef0123"), id("0123456789abcdef0123"); a != b {
		t.Errorf("same key, ids %s and %s", a, b)
	}
	if a, b := id(""), id(""); a == b {
		t.Errorf("no key, same id %s twice", a)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	for _, tc := range []struct {
		path   string
		status int
		header string
	}{
		{"/healthz", 200, ""},
		{"/readyz", 200, ""},
		{"/metrics", 200, ""},
		{"/", 200, "Content-Security-Policy"},
	} {
		resp, err := http.Get(g.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s", tc.path, resp.StatusCode, body)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Parley-Gateway") != "gw-test" {
			t.Errorf("%s: headers %v", tc.path, resp.Header)
		}
		if tc.header != "" && !strings.Contains(resp.Header.Get(tc.header), "script-src 'self'") {
			t.Errorf("%s: %s is %q", tc.path, tc.header, resp.Header.Get(tc.header))
		}
	}
}

func TestHistoryAPI(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	alice := dial(t, g.URL, "alice")
	join(t, alice, "general")
	join(t, alice, "random")
	for i := range 6 {
		sendText(t, alice, "general", fmt.Sprint("m", i), fmt.Sprint("g-", i))
		next(t, alice, protocol.TypeAck)
	}
	sendText(t, alice, "random", "r", "r-1")
	next(t, alice, protocol.TypeAck)

	get := func(path string, status int, v any) {
		t.Helper()
		resp, err := http.Get(g.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != status {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, body, status)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	var rooms struct {
		Rooms []struct {
			Room string
			Seq  int64
		}
	}
	get("/api/rooms", 200, &rooms)
	seqs := map[string]int64{}
	for _, r := range rooms.Rooms {
		seqs[r.Room] = r.Seq
	}
	if len(rooms.Rooms) != 2 || seqs["general"] != 6 || seqs["random"] != 1 {
		t.Fatalf("rooms %+v", rooms)
	}
	var h client.Frame
	get("/api/rooms/general/messages?before=5&limit=2", 200, &h)
	if len(h.Messages) != 2 || h.Messages[0].Seq != 3 || h.Seq != 6 || h.Epoch == "" {
		t.Fatalf("before=5: %+v", h)
	}
	h = client.Frame{}
	get("/api/rooms/general/messages?after=4", 200, &h)
	if len(h.Messages) != 2 || h.Messages[1].Text != "m5" {
		t.Fatalf("after=4: %+v", h)
	}
	h = client.Frame{}
	get("/api/rooms/nobody-here/messages", 200, &h)
	if len(h.Messages) != 0 || h.Seq != 0 {
		t.Fatalf("empty room: %+v", h)
	}
	for _, bad := range []string{"?before=0", "?after=-1", "?limit=101", "?limit=x", "?before=1&after=2", "?before="} {
		var e client.Frame
		get("/api/rooms/general/messages"+bad, 400, &e)
		if e.Code != protocol.CodeBadRequest {
			t.Errorf("%s: %+v", bad, e)
		}
	}
	var e client.Frame
	get("/api/rooms/bad%20room/messages", 400, &e)
	if e.Code != protocol.CodeBadRoom {
		t.Errorf("bad room: %+v", e)
	}
}

// failingBroker is the in-process broker with a switch that makes it refuse
// to publish, as RabbitMQ does while it is down or blocked.
type failingBroker struct {
	broker.Memory
	failing   atomic.Bool
	published sync.Map // id -> true, for ids published successfully
}

func (b *failingBroker) Publish(ctx context.Context, body []byte, id string) error {
	if b.failing.Load() {
		return errors.New("broker unavailable (test)")
	}
	b.published.Store(id, true)
	return b.Memory.Publish(ctx, body, id)
}

func (b *failingBroker) Ready() error {
	if b.failing.Load() {
		return errors.New("broker unavailable (test)")
	}
	return nil
}

func TestStoredMessagesAreAckedAndDeliveredWhileBrokerFails(t *testing.T) {
	b := &failingBroker{}
	g := newGatewayOn(t, gateway.Options{}, b, store.NewMemory(store.Retention{}, nil))
	alice, bob := dial(t, g.URL, "alice"), dial(t, g.URL, "bob")
	join(t, alice, "general")
	join(t, bob, "general")

	b.failing.Store(true)
	if f := next(t, bob, protocol.TypeStatus); !strings.Contains(string(f.Raw), `"degraded":true`) {
		t.Fatalf("status %s", f.Raw)
	}
	sendText(t, alice, "general", "through the store", "a-1")
	ack := next(t, alice, protocol.TypeAck)
	if m := next(t, bob, protocol.TypeMessage); m.Seq != ack.Seq || m.Text != "through the store" {
		t.Fatalf("bob got %s, ack %s", m.Raw, ack.Raw)
	}
	if _, ok := b.published.Load(ack.ID); ok {
		t.Fatal("published while the broker was failing")
	}

	// The broker comes back: the message is published after all, clients
	// are told, and nobody sees it twice.
	b.failing.Store(false)
	if f := next(t, bob, protocol.TypeStatus, protocol.TypeMessage); f.Type != protocol.TypeStatus || !strings.Contains(string(f.Raw), `"degraded":false`) {
		t.Fatalf("after recovery bob got %s", f.Raw)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := b.published.Load(ack.ID); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stored message was never published")
		}
		time.Sleep(10 * time.Millisecond) // polling a counter, not synchronising
	}
	sendText(t, alice, "general", "live again", "a-2")
	if m := next(t, bob, protocol.TypeMessage); m.Seq != ack.Seq+1 {
		t.Fatalf("after recovery bob got %s", m.Raw)
	}
}

func TestConnectionCaps(t *testing.T) {
	g := newGateway(t, gateway.Options{MaxConnsPerIP: 3, MaxConnsPerUser: 2,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialAs := func(key, xff string) (*http.Response, error) {
		h := http.Header{}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		c, resp, err := client.Dial(ctx, g.URL, client.Options{Name: "cap", Key: key, Header: h})
		if err == nil {
			t.Cleanup(func() { _ = c.CloseNow() })
		}
		return resp, err
	}
	// Two connections of one user; the third is refused.
	for range 2 {
		if _, err := dialAs("same-user-key-0123456789", ""); err != nil {
			t.Fatal(err)
		}
	}
	if resp, err := dialAs("same-user-key-0123456789", ""); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection of one user: %v", err)
	}
	// One more from this address fills it; then it is refused too.
	if _, err := dialAs("", ""); err != nil {
		t.Fatal(err)
	}
	if resp, err := dialAs("", ""); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth connection from one address: %v", err)
	}
	// Clients behind the trusted proxy count by their own address.
	for i := range 3 {
		if _, err := dialAs("", fmt.Sprintf("198.51.100.%d", i)); err != nil {
			t.Fatalf("client %d behind the proxy: %v", i, err)
		}
	}
}

func TestConnectionThatNeverJoinsIsClosed(t *testing.T) {
	g := newGateway(t, gateway.Options{HandshakeTimeout: 200 * time.Millisecond})
	idle := dial(t, g.URL, "idle")
	expectClose(t, idle, websocket.StatusPolicyViolation)

	joined := dial(t, g.URL, "joined")
	join(t, joined, "general")
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	for {
		_, err := joined.Next(ctx) // presence frames may come; a close must not
		if err == nil {
			continue
		}
		if websocket.CloseStatus(err) != -1 || ctx.Err() == nil {
			t.Fatalf("a connection that joined was closed: %v", err)
		}
		break
	}
}

func TestFloodingClientIsClosedWith1008(t *testing.T) {
	g := newGateway(t, gateway.Options{SendRate: 10, SendBurst: 20})
	bystander := dial(t, g.URL, "bystander")
	join(t, bystander, "general")

	for _, flood := range []func(c *client.Conn, i int) error{
		func(c *client.Conn, i int) error {
			return c.SendRaw(context.Background(), []byte(`{"type":"nope"}`))
		},
		func(c *client.Conn, i int) error {
			return c.Send(context.Background(), map[string]any{"type": "send", "room": "general", "text": "spam", "client_msg_id": fmt.Sprint("f-", i)})
		},
	} {
		c := dial(t, g.URL, "flooder")
		join(t, c, "general")
		for i := 0; i < 1000; i++ {
			if err := flood(c, i); err != nil {
				break // closed under us: that is the point
			}
		}
		expectClose(t, c, websocket.StatusPolicyViolation)
	}
	// The bystander was never disturbed and still chats.
	sendText(t, bystander, "general", "still fine", "b-1")
	for {
		if m := next(t, bystander, protocol.TypeMessage); m.Text == "still fine" {
			break
		}
	}
}

func TestServerAPIPostsThroughTheSamePath(t *testing.T) {
	const key = "0123456789abcdef-api-key"
	g := newGateway(t, gateway.Options{APIKey: key})
	alice := dial(t, g.URL, "alice")
	join(t, alice, "general")

	post := func(auth, body string) (*http.Response, client.Frame) {
		req, _ := http.NewRequest("POST", g.URL+"/api/rooms/general/messages", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var f client.Frame
		_ = json.NewDecoder(resp.Body).Decode(&f)
		return resp, f
	}
	if resp, _ := post("", `{"text":"x"}`); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no key: %d", resp.StatusCode)
	}
	if resp, _ := post("wrong-key-wrong-key", `{"text":"x"}`); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong key: %d", resp.StatusCode)
	}
	for _, bad := range []string{`{`, `{"text":""}`, `{"text":"x","user":{"id":"a b","name":"n"}}`, `{"text":"x","client_msg_id":"a b"}`} {
		if resp, f := post(key, bad); resp.StatusCode != http.StatusBadRequest || f.Code == "" {
			t.Errorf("%s: %d %+v", bad, resp.StatusCode, f)
		}
	}
	resp, ack := post(key, `{"text":"deploy finished","user":{"id":"deploybot","name":"Deploy Bot"},"client_msg_id":"d-1"}`)
	if resp.StatusCode != http.StatusCreated || ack.Seq != 1 || ack.ID == "" {
		t.Fatalf("post: %d %+v", resp.StatusCode, ack)
	}
	m := next(t, alice, protocol.TypeMessage)
	if m.ID != ack.ID || m.User.ID != "b_deploybot" || m.User.Name != "Deploy Bot" || m.Text != "deploy finished" {
		t.Fatalf("alice got %s", m.Raw)
	}
	// A retry with the same client_msg_id is the same message.
	if _, again := post(key, `{"text":"deploy finished","user":{"id":"deploybot","name":"Deploy Bot"},"client_msg_id":"d-1"}`); again.Seq != 1 || again.ID != ack.ID {
		t.Fatalf("retry: %+v", again)
	}

	off := newGateway(t, gateway.Options{})
	req, _ := http.NewRequest("POST", off.URL+"/api/rooms/general/messages", strings.NewReader(`{"text":"x"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotFound {
		t.Fatalf("API without a key configured: %d", resp2.StatusCode)
	}
}

const testSecret = "a-test-secret-of-at-least-32-bytes!!"

// newTokenGateway runs a gateway that takes HS256 tokens (and no guests).
func newTokenGateway(t *testing.T, opts gateway.Options) *testGateway {
	t.Helper()
	authn, err := auth.New(auth.Config{JWT: auth.JWTConfig{Secret: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	return newGatewayWith(t, opts, &broker.Memory{}, store.NewMemory(store.Retention{}, nil), authn)
}

func mint(t *testing.T, c auth.Claims, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint([]byte(testSecret), c, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dialToken(t *testing.T, url, token string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := client.Dial(ctx, url, client.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	if w, err := c.Next(ctx); err != nil || w.Type != protocol.TypeWelcome || w.Guest {
		t.Fatalf("welcome %+v, %v", w, err)
	}
	return c
}

func TestTokenHandshake(t *testing.T) {
	g := newTokenGateway(t, gateway.Options{})
	c := dialToken(t, g.URL, mint(t, auth.Claims{Subject: "alice", Name: "Alice"}, time.Hour))
	join(t, c, "general")

	// Mint refuses to make an expired token; build one by hand.
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix(),
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		opts client.Options
	}{
		{"no token, guests off", client.Options{Name: "mallory"}},
		{"forged", client.Options{Token: mint(t, auth.Claims{Subject: "alice"}, time.Hour) + "x"}},
		{"expired", client.Options{Token: expired}},
		{"many dots", client.Options{Token: strings.Repeat(".", 5000)}},
	} {
		if _, resp, err := client.Dial(ctx, g.URL, tc.opts); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v, %v; want 401", tc.name, resp, err)
		}
	}
}

func TestRoomsClaimForbidsOtherRooms(t *testing.T) {
	g := newTokenGateway(t, gateway.Options{})
	limited := dialToken(t, g.URL, mint(t, auth.Claims{Subject: "intern", Rooms: []string{"team-*"}}, time.Hour))
	boss := dialToken(t, g.URL, mint(t, auth.Claims{Subject: "boss"}, time.Hour))
	join(t, boss, "board")
	join(t, limited, "team-a")

	send(t, limited, map[string]any{"type": "join", "room": "board"})
	if f := expectError(t, limited, protocol.CodeForbidden); f.Room != "board" {
		t.Fatalf("forbidden error %s", f.Raw)
	}
	sendText(t, boss, "board", "secret plans", "b-1")
	next(t, boss, protocol.TypeAck)
	// The intern never receives it; their own room still works.
	join(t, boss, "team-a")
	sendText(t, boss, "team-a", "hello team", "b-2")
	if m := next(t, limited, protocol.TypeMessage); m.Room != "team-a" || m.Text != "hello team" {
		t.Fatalf("intern got %s", m.Raw)
	}
}

func TestTokenExpiryAndRefresh(t *testing.T) {
	const grace = 300 * time.Millisecond
	g := newTokenGateway(t, gateway.Options{TokenGrace: grace})

	// Refreshed in time: the session goes on under the new token. Tokens
	// carry whole seconds, so a token of ttl expires 0-1 s sooner than ttl;
	// 3 s leaves a loaded machine (race detector, parallel packages) 2 s for
	// the refresh.
	const ttl = 3 * time.Second
	minted := time.Now()
	c := dialToken(t, g.URL, mint(t, auth.Claims{Subject: "alice", Name: "Alice"}, ttl))
	join(t, c, "general")
	send(t, c, map[string]any{"type": "refresh", "token": mint(t, auth.Claims{Subject: "bob"}, time.Hour)})
	expectError(t, c, protocol.CodeUnauthorized) // another user's token
	send(t, c, map[string]any{"type": "refresh", "token": mint(t, auth.Claims{Subject: "alice", Name: "Alice B."}, time.Hour)})
	if f := next(t, c, protocol.TypeRefreshed); f.User.Name != "Alice B." {
		t.Fatalf("refreshed %s", f.Raw)
	}
	// Past the old token's expiry and grace, nothing may have come.
	ctx, cancel := context.WithDeadline(context.Background(), minted.Add(ttl+grace+500*time.Millisecond))
	defer cancel()
	if f, err := c.NextOf(ctx, protocol.TypeError); err == nil {
		t.Fatalf("a refreshed session got %s", f.Raw)
	}

	// Not refreshed: told, then closed with 1008 after the grace.
	d := dialToken(t, g.URL, mint(t, auth.Claims{Subject: "carol"}, time.Second))
	join(t, d, "general")
	if f := next(t, d, protocol.TypeError); f.Code != protocol.CodeTokenExpired {
		t.Fatalf("expiry notice %s", f.Raw)
	}
	expectClose(t, d, websocket.StatusPolicyViolation)

	// Guests have nothing to refresh.
	guest := dial(t, newGateway(t, gateway.Options{}).URL, "guest")
	send(t, guest, map[string]any{"type": "refresh", "token": "a.b.c"})
	expectError(t, guest, protocol.CodeBadRequest)
}

// presenceOf reads presence frames of room until one satisfies ok, and
// returns it.
func presenceOf(t *testing.T, c *client.Conn, room string, ok func(p protocol.Presence) bool) protocol.Presence {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var last string
	for {
		f, err := c.NextOf(ctx, protocol.TypePresence)
		if err != nil {
			t.Fatalf("waiting for presence of %s (last %s): %v", room, last, err)
		}
		var p protocol.Presence
		if err := json.Unmarshal(f.Raw, &p); err != nil {
			t.Fatal(err)
		}
		last = string(f.Raw)
		if p.Room == room && ok(p) {
			return p
		}
	}
}

func names(users []protocol.User) string {
	var n []string
	for _, u := range users {
		n = append(n, u.Name)
	}
	return strings.Join(n, ",")
}

func TestPresence(t *testing.T) {
	g := newGateway(t, gateway.Options{PresenceInterval: 20 * time.Millisecond, PresenceGrace: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialKey := func(name, key string) *client.Conn {
		c, _, err := client.Dial(ctx, g.URL, client.Options{Name: name, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.CloseNow() })
		join(t, c, "general")
		return c
	}
	alice := dialKey("alice", "alice-key-0123456789")
	// The frame after a join lists who is there, without joins or leaves.
	if p := presenceOf(t, alice, "general", func(protocol.Presence) bool { return true }); p.Count != 1 || names(p.Members) != "alice" || p.Joined != nil {
		t.Fatalf("first presence %+v", p)
	}
	bob := dialKey("bob", "bob-key-0123456789ab")
	p := presenceOf(t, alice, "general", func(p protocol.Presence) bool { return p.Count == 2 })
	if names(p.Members) != "alice,bob" || names(p.Joined) != "bob" {
		t.Fatalf("after bob joined %+v", p)
	}
	presenceOf(t, bob, "general", func(p protocol.Presence) bool { return names(p.Members) == "alice,bob" })

	// A second tab of bob's is still one bob.
	bob2 := dialKey("bob", "bob-key-0123456789ab")
	// Bob's first tab drops and comes back within the grace: no leave.
	_ = bob.CloseNow()
	bob3 := dialKey("bob", "bob-key-0123456789ab")
	_ = bob3
	// Bob leaves on purpose in his second tab, and his third closes:
	// after the grace of the dropped one, bob is gone, and alice was told
	// exactly once.
	send(t, bob2, map[string]any{"type": "leave", "room": "general"})
	_ = bob3.CloseNow()
	p = presenceOf(t, alice, "general", func(p protocol.Presence) bool { return len(p.Left) > 0 || p.Count != 2 })
	if p.Count != 1 || names(p.Left) != "bob" {
		t.Fatalf("after bob left %+v", p)
	}

	var api protocol.Presence
	resp, err := http.Get(g.URL + "/api/rooms/general/presence")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&api); err != nil || api.Count != 1 || names(api.Members) != "alice" {
		t.Fatalf("GET presence: %+v, %v", api, err)
	}
}

func TestPresenceOfBigRoomsIsACount(t *testing.T) {
	g := newGateway(t, gateway.Options{PresenceInterval: 20 * time.Millisecond, PresenceListMax: 1})
	a := dial(t, g.URL, "a")
	join(t, a, "big")
	b := dial(t, g.URL, "b")
	join(t, b, "big")
	p := presenceOf(t, a, "big", func(p protocol.Presence) bool { return p.Count == 2 })
	if p.Members != nil || p.Joined != nil {
		t.Fatalf("big room presence %+v", p)
	}
}

func TestPresenceFramesAreBatched(t *testing.T) {
	g := newGateway(t, gateway.Options{PresenceInterval: 500 * time.Millisecond, MaxConnsPerIP: 100})
	watcher := dial(t, g.URL, "watcher")
	join(t, watcher, "general")
	presenceOf(t, watcher, "general", func(protocol.Presence) bool { return true })
	// 30 people join as fast as they can: the watcher hears of them in a
	// few batched frames, not 30.
	for i := range 30 {
		join(t, dial(t, g.URL, fmt.Sprint("p", i)), "general")
	}
	frames := 0
	presenceOf(t, watcher, "general", func(p protocol.Presence) bool { frames++; return p.Count == 31 })
	if frames > 3 {
		t.Fatalf("%d presence frames for 30 joins", frames)
	}
	t.Logf("30 joins reached the watcher in %d presence frames", frames)
}

// heldBroker is the in-process broker whose publishes wait for a release,
// so a test can have a send in flight at a chosen moment.
type heldBroker struct {
	broker.Memory
	entered chan struct{}
	release chan struct{}
}

func (b *heldBroker) Publish(ctx context.Context, body []byte, id string) error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Memory.Publish(ctx, body, id)
}

func TestDrainAcksTheSendInFlightBeforeClosing(t *testing.T) {
	b := &heldBroker{entered: make(chan struct{}, 1), release: make(chan struct{})}
	g := newGatewayOn(t, gateway.Options{PublishTimeout: 10 * time.Second}, b, store.NewMemory(store.Retention{}, nil))
	c := dial(t, g.URL, "alice")
	join(t, c, "general")
	sendText(t, c, "general", "in flight", "a-1")
	<-b.entered // stored; the publish waits

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- g.Drain(ctx) }()
	// The drain waits for the send; release it once the drain has begun.
	for {
		resp, err := http.Get(g.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatal("readiness never turned off")
		}
		time.Sleep(5 * time.Millisecond) // polling readiness
	}
	close(b.release)

	sawAck := false
	for {
		f, err := c.Next(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != websocket.StatusServiceRestart {
				t.Fatalf("connection ended with %v", err)
			}
			break
		}
		if f.Type == protocol.TypeAck && f.ClientMsgID == "a-1" {
			sawAck = true
		}
	}
	if !sawAck {
		t.Fatal("closed with 1012 before the send in flight was acknowledged")
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

func TestStuckWriteIsCutOffAfterTheWriteTimeout(t *testing.T) {
	// A queue far larger than the flood: only the write watchdog can end
	// this client, once the kernel's buffers are full and a write blocks.
	g := newGateway(t, gateway.Options{WriteTimeout: 300 * time.Millisecond, PingInterval: time.Second,
		SendQueueBytes: 256 << 20, SendRate: 1e6, SendBurst: 1e6})
	stuck := dial(t, g.URL, "stuck") // never reads again
	join(t, stuck, "general")
	sender := dial(t, g.URL, "sender")
	join(t, sender, "general")
	flood(t, sender, func() bool { return metric(t, g.URL, "parley_dead_clients_closed_total") >= 1 })
	if got := metric(t, g.URL, `parley_backpressure_total{tier="disconnect"}`); got != 0 {
		t.Fatalf("closed by the queue bound (%v), not the write timeout", got)
	}
}

func TestOperatorMetrics(t *testing.T) {
	b := &failingBroker{}
	g := newGatewayOn(t, gateway.Options{}, b, store.NewMemory(store.Retention{}, nil))
	a, c := dial(t, g.URL, "a"), dial(t, g.URL, "c")
	join(t, a, "general")
	join(t, c, "general")
	sendText(t, a, "general", "hi", "a-1")
	next(t, c, protocol.TypeMessage)
	if got := metric(t, g.URL, "parley_fanout_messages_total"); got != 1 {
		t.Errorf("fan-out messages %v, want 1", got)
	}
	if got := metric(t, g.URL, "parley_fanout_pushes_total"); got != 2 {
		t.Errorf("fan-out pushes %v, want 2", got)
	}
	for _, series := range []string{"parley_send_queue_bytes", "parley_send_queue_max_bytes", "parley_broker_degraded"} {
		if got := metric(t, g.URL, series); got != 0 {
			t.Errorf("%s = %v, want 0", series, got)
		}
	}
	b.failing.Store(true)
	next(t, c, protocol.TypeStatus)
	if got := metric(t, g.URL, "parley_broker_degraded"); got != 1 {
		t.Errorf("broker degraded gauge %v while failing", got)
	}
	b.failing.Store(false)
	next(t, c, protocol.TypeStatus)
	if got := metric(t, g.URL, "parley_broker_recoveries_total"); got != 1 {
		t.Errorf("broker recoveries %v, want 1", got)
	}
}

// goroutines counts the goroutines running fn (a function name as stack
// traces show it, such as "gateway.(*conn).writeLoop").
func goroutines(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), fn+"(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitGoroutines waits until no goroutine runs fn, failing the test after a
// few seconds.
func waitGoroutines(t *testing.T, fn string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n := goroutines(fn); n != 0; n = goroutines(fn) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still in %s", n, fn)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not ordering events
	}
}

const (
	readers = "gateway.(*conn).readLoop"
	writers = "gateway.(*conn).writeLoop"
)

func TestIdleConnectionsKeepNoGoroutine(t *testing.T) {
	// One ping bucket: the gateway looks at its writers every second.
	g := newGateway(t, gateway.Options{PingInterval: time.Second})
	alice := dial(t, g.URL, "alice")
	join(t, alice, "general")
	bob := dial(t, g.URL, "bob")
	join(t, bob, "general")
	waitGoroutines(t, readers)
	waitGoroutines(t, writers)

	// Parked and without a writer, both still send and receive.
	for i, from := range []*client.Conn{alice, bob} {
		text := fmt.Sprintf("message %d", i)
		sendText(t, from, "general", text, fmt.Sprint(i))
		for _, to := range []*client.Conn{alice, bob} {
			if f := next(t, to, protocol.TypeMessage); f.Text != text {
				t.Fatalf("got %s, want %q", f.Raw, text)
			}
		}
		next(t, from, protocol.TypeAck)
		waitGoroutines(t, readers)
	}
}

// readOn reads c's frames on a goroutine until the test ends (a
// coder/websocket client answers pings only while something reads).
func readOn(t *testing.T, c *client.Conn) <-chan client.Frame {
	t.Helper()
	frames := make(chan client.Frame, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := c.Next(ctx)
			if err != nil {
				return
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); _ = c.CloseNow(); <-done })
	return frames
}

func TestParkedConnectionAnswersPingsWithoutAGoroutine(t *testing.T) {
	g := newGateway(t, gateway.Options{PingInterval: time.Second, PongTimeout: 500 * time.Millisecond})
	c := dial(t, g.URL, "alice")
	join(t, c, "general")
	readOn(t, c)
	deadline := time.Now().Add(8 * time.Second)
	for metric(t, g.URL, "parley_ping_rtt_seconds_count") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%v pongs seen; want 3", metric(t, g.URL, "parley_ping_rtt_seconds_count"))
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, not ordering events
	}
	if n := goroutines(readers); n != 0 {
		t.Fatalf("%d reading goroutines after the pongs; want the pongs read while parked", n)
	}
	if n, dead := g.Connections(), metric(t, g.URL, "parley_dead_clients_closed_total"); n != 1 || dead != 0 {
		t.Fatalf("%d connections, %v closed as dead; want the client kept", n, dead)
	}
}

func TestParkedUnresponsivePeerIsReaped(t *testing.T) {
	g := newGateway(t, gateway.Options{PingInterval: time.Second, PongTimeout: 200 * time.Millisecond})
	ghost := dial(t, g.URL, "ghost")
	join(t, ghost, "general") // then never reads again, so never answers a ping
	live := dial(t, g.URL, "live")
	join(t, live, "general")
	readOn(t, live)
	deadline := time.Now().Add(8 * time.Second)
	for g.Connections() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections; the unresponsive one was not reaped", g.Connections())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not ordering events
	}
	if dead := metric(t, g.URL, "parley_dead_clients_closed_total"); dead != 1 {
		t.Fatalf("%v closed as dead, want 1", dead)
	}
}

func TestClientPingWakesAParkedConnection(t *testing.T) {
	g := newGateway(t, gateway.Options{})
	c := dial(t, g.URL, "alice")
	join(t, c, "general")
	waitGoroutines(t, readers)
	frames := readOn(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WS().Ping(ctx); err != nil {
		t.Fatalf("ping of a parked connection: %v", err)
	}
	// The goroutine that answered the ping reads the next frame too.
	sendText(t, c, "general", "after a ping", "p1")
	for f := range frames {
		if f.Type == protocol.TypeAck {
			break
		}
	}
}

func TestWriteDelayPutsAClientsMessagesInOneWrite(t *testing.T) {
	g := newGateway(t, gateway.Options{WriteDelay: 300 * time.Millisecond})
	reader := dial(t, g.URL, "reader")
	join(t, reader, "general")
	sender := dial(t, g.URL, "sender")
	join(t, sender, "general")
	waitGoroutines(t, readers) // the reader is parked: its flusher writes to it

	const n = 5
	for i := range n {
		sendText(t, sender, "general", fmt.Sprint("m", i), fmt.Sprint(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Read the WebSocket messages themselves, not the frames in them.
	var got []string
	for len(got) < n {
		_, data, err := reader.WS().Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, `"type":"message"`) {
				lines = append(lines, line)
			}
		}
		if len(lines) > 0 && len(lines) < n && len(got) == 0 {
			t.Fatalf("first write carried %d of the %d messages sent at once: %s", len(lines), n, data)
		}
		got = append(got, lines...)
	}
}

// TestFlushersWriteParkedClientsInBatches sends to parked clients with and
// without batched writes: every client gets every message in order either
// way, and only the default makes its writes through io_uring, which the
// machines this suite runs on allow.
func TestFlushersWriteParkedClientsInBatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    gateway.Options
		batched bool
	}{
		{"batched", gateway.Options{}, true},
		{"socket by socket", gateway.Options{NoBatchWrites: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, tc.opts)
			var members []*client.Conn
			for i := range 40 { // more than one batch
				c := dial(t, g.URL, fmt.Sprint("member", i))
				join(t, c, "general")
				members = append(members, c)
			}
			sender := dial(t, g.URL, "sender")
			join(t, sender, "general")
			waitGoroutines(t, readers) // parked: the flushers write to them

			const n = 3
			for i := range n {
				sendText(t, sender, "general", fmt.Sprint("m", i), fmt.Sprint(i))
			}
			for _, c := range members {
				for i := range n {
					if f := next(t, c, protocol.TypeMessage); f.Text != fmt.Sprint("m", i) {
						t.Fatalf("got %s, want m%d", f.Raw, i)
					}
				}
			}
			got := metric(t, g.URL, "parley_batched_writes_total")
			if tc.batched && got < float64(len(members)) {
				t.Fatalf("parley_batched_writes_total %v, want at least one write to each of the %d members", got, len(members))
			}
			if !tc.batched && got != 0 {
				t.Fatalf("parley_batched_writes_total %v with NoBatchWrites, want 0", got)
			}
		})
	}
}
