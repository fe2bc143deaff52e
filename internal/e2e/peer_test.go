//go:build integration

package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/cluster"
	"github.com/parleychat/parley/internal/protocol"
)

// fastSends lifts the gateways' send rate limit: the tests that use it are
// about order and recovery, and send far faster than a person would.
var fastSends = map[string]string{"PARLEY_SEND_RATE": "100000", "PARLEY_SEND_BURST": "100000"}

// launchCluster starts a cluster for the test, built with the race
// detector, and closes it when the test ends. Unlike startCluster it takes
// every option (a private Redis, say).
func launchCluster(t *testing.T, opts cluster.Options) *cluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts.Race = true
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// guestKey returns a fresh guest key: a client that dials with it again is
// the same user, on any gateway.
func guestKey(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("guest key: %v", err)
	}
	return hex.EncodeToString(b[:])
}

// peer is a protocol client whose frames are read by a goroutine of its own
// and kept in the order they came, so that a test can wait for one frame
// while others keep arriving, and check the whole stream afterwards.
type peer struct {
	name, key string
	conn      *client.Conn
	welcome   client.Frame

	mu      sync.Mutex
	frames  []client.Frame
	counts  map[string]int // messages per room, received or announced by a gap
	gaps    int            // gap frames received
	wake    chan struct{}  // closed and replaced when frames grows or the reader ends
	readErr error          // why the reader ended; valid once done is closed

	cancel context.CancelFunc
	done   chan struct{}
}

// connectPeer dials base (a gateway's or nginx's URL) as the guest name with
// key, reads the welcome frame and starts the reader. The connection is
// dropped when the test ends.
func connectPeer(ctx context.Context, t testing.TB, base, name, key string) *peer {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, _, err := client.Dial(dctx, base, client.Options{Name: name, Key: key})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	w, err := conn.Next(dctx)
	if err != nil || w.Type != protocol.TypeWelcome {
		_ = conn.CloseNow()
		t.Fatalf("%s: want welcome, got %s, %v", name, w.Raw, err)
	}
	rctx, stop := context.WithCancel(context.Background())
	p := &peer{
		name: name, key: key, conn: conn, welcome: w,
		counts: map[string]int{}, wake: make(chan struct{}),
		cancel: stop, done: make(chan struct{}),
	}
	go p.read(rctx)
	t.Cleanup(p.drop)
	return p
}

// read keeps every frame until the connection ends.
func (p *peer) read(ctx context.Context) {
	defer close(p.done)
	for {
		f, err := p.conn.Next(ctx)
		p.mu.Lock()
		if err != nil {
			p.readErr = err
			close(p.wake)
			p.mu.Unlock()
			return
		}
		p.frames = append(p.frames, f)
		switch f.Type {
		case protocol.TypeMessage:
			p.counts[f.Room]++
		case typeGap:
			// The messages it stands for are as good as received: the
			// client fetches them from history (see view).
			if g, err := decodeGap(f); err == nil {
				p.counts[f.Room] += int(g.To - g.From + 1)
				p.gaps++
			}
		}
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
	}
}

// drop ends the connection abruptly (no close handshake, as a crashed
// client or a lost network would) and waits for the reader to stop.
func (p *peer) drop() {
	_ = p.conn.CloseNow()
	p.cancel()
	<-p.done
}

// user returns the user id the gateway gave this connection.
func (p *peer) user() string { return p.welcome.User.ID }

// cursor returns how many frames have arrived so far; a reply to a frame
// sent after this call comes at this index or later.
func (p *peer) cursor() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.frames)
}

// waitUntil waits until cond, called with the lock held on every new frame,
// holds, the connection ends, or ctx ends.
func (p *peer) waitUntil(ctx context.Context, what string, cond func() bool) error {
	for {
		p.mu.Lock()
		ok, wake, ended := cond(), p.wake, p.readErr
		p.mu.Unlock()
		switch {
		case ok:
			return nil
		case ended != nil:
			return fmt.Errorf("%s: connection ended waiting for %s: %w", p.name, what, ended)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %s: %w", p.name, what, ctx.Err())
		}
	}
}

// next returns the first frame at index from or later that match accepts,
// and its index, waiting for it if need be.
func (p *peer) next(ctx context.Context, from int, what string, match func(client.Frame) bool) (client.Frame, int, error) {
	var found client.Frame
	at := -1
	err := p.waitUntil(ctx, what, func() bool {
		for i := max(from, 0); i < len(p.frames); i++ {
			if match(p.frames[i]) {
				found, at = p.frames[i], i
				return true
			}
		}
		from = len(p.frames)
		return false
	})
	return found, at, err
}

// request sends v and returns the first later frame that match accepts.
func (p *peer) request(ctx context.Context, v any, what string, match func(client.Frame) bool) (client.Frame, error) {
	from := p.cursor()
	if err := p.conn.Send(ctx, v); err != nil {
		return client.Frame{}, fmt.Errorf("%s: %w", p.name, err)
	}
	f, _, err := p.next(ctx, from, what, match)
	return f, err
}

// isAnswer reports whether f answers a request: every join, leave, send and
// history frame is answered by exactly one joined, left, ack, history or
// error frame, in the order the requests were sent. Messages, presence,
// typing, status and gap frames come in between.
func isAnswer(f client.Frame) bool {
	switch f.Type {
	case protocol.TypeJoined, protocol.TypeLeft, protocol.TypeAck, protocol.TypeHistory, protocol.TypeError:
		return true
	}
	return false
}

// reply returns the answer to a request frame (see isAnswer).
func (p *peer) reply(ctx context.Context, v any) (client.Frame, error) {
	return p.request(ctx, v, fmt.Sprintf("the answer to %v", v), isAnswer)
}

// join joins room and returns the joined frame. since >= 0 asks to resume
// after it in epoch. An error frame for the room is returned as an error.
func (p *peer) join(ctx context.Context, room string, since int64, epoch string) (client.Frame, error) {
	req := map[string]any{"type": protocol.TypeJoin, "room": room}
	if since >= 0 {
		req["since"], req["epoch"] = since, epoch
	}
	f, err := p.request(ctx, req, "joined "+room, func(f client.Frame) bool {
		return (f.Type == protocol.TypeJoined || f.Type == protocol.TypeError) && f.Room == room
	})
	if err == nil && f.Type == protocol.TypeError {
		err = fmt.Errorf("%s: join %s: %s", p.name, room, f.Raw)
	}
	return f, err
}

// mustJoin joins room afresh (no resume) and fails the test on an error.
func (p *peer) mustJoin(ctx context.Context, t testing.TB, room string) client.Frame {
	t.Helper()
	f, err := p.join(ctx, room, -1, "")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sendFrame returns a send frame.
func sendFrame(room, text, cmid string) map[string]any {
	return map[string]any{"type": protocol.TypeSend, "room": room, "text": text, "client_msg_id": cmid}
}

// isAnswerTo reports whether f answers the send of cmid (its ack or error).
func isAnswerTo(cmid string) func(client.Frame) bool {
	return func(f client.Frame) bool {
		return f.Type == protocol.TypeAck && f.ClientMsgID == cmid || f.Type == protocol.TypeError && f.Ref == cmid
	}
}

// send sends a message and returns its answer: an ack, or an error frame
// whose ref is cmid.
func (p *peer) send(ctx context.Context, room, text, cmid string) (client.Frame, error) {
	return p.request(ctx, sendFrame(room, text, cmid), "the answer to "+cmid, isAnswerTo(cmid))
}

// mustSend sends a message and fails the test unless it is acked.
func (p *peer) mustSend(ctx context.Context, t testing.TB, room, text, cmid string) client.Frame {
	t.Helper()
	f, err := p.send(ctx, room, text, cmid)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != protocol.TypeAck {
		t.Fatalf("%s: send %s: %s", p.name, cmid, f.Raw)
	}
	return f
}

// typeGap is the frame a gateway sends in place of queued messages of a
// client that fell behind (docs/protocol.md, Backpressure).
const typeGap = "gap"

// gap is the body of a gap frame.
type gap struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

func decodeGap(f client.Frame) (gap, error) {
	var g gap
	if err := json.Unmarshal(f.Raw, &g); err != nil {
		return gap{}, fmt.Errorf("decode gap frame %s: %w", f.Raw, err)
	}
	if g.From < 1 || g.To < g.From {
		return gap{}, fmt.Errorf("gap frame %s: bad range", f.Raw)
	}
	return g, nil
}

// view returns room as a client shows it: the message frames received from
// index from on, in order, with the messages of each gap frame fetched from
// history where the gap was, as the protocol tells a client to. It also
// returns how many gaps it filled.
func (p *peer) view(ctx context.Context, from int, room string) ([]entry, int, error) {
	frames := p.framesSince(from)
	var out []entry
	filled := 0
	for _, f := range frames {
		switch {
		case f.Room != room:
		case f.Type == protocol.TypeMessage:
			out = append(out, entryOf(f.Message))
		case f.Type == typeGap:
			g, err := decodeGap(f)
			if err != nil {
				return nil, filled, err
			}
			for after := g.From - 1; after < g.To; {
				h, err := p.reply(ctx, map[string]any{"type": protocol.TypeHistory, "room": room, "after": after, "limit": min(100, g.To-after)})
				if err != nil || h.Type != protocol.TypeHistory || len(h.Messages) == 0 {
					return nil, filled, fmt.Errorf("%s: fill %s: %s, %v", p.name, f.Raw, h.Raw, err)
				}
				for _, m := range h.Messages {
					if m.Seq <= g.To {
						out = append(out, entryOf(m))
					}
				}
				after = h.Messages[len(h.Messages)-1].Seq
			}
			filled++
		}
	}
	return out, filled, nil
}

// waitMessages waits until n messages of room have arrived (or been
// announced by gap frames).
func (p *peer) waitMessages(ctx context.Context, room string, n int) error {
	return p.waitUntil(ctx, fmt.Sprintf("%d messages in %s", n, room), func() bool { return p.counts[room] >= n })
}

// messagesSince returns the message frames of room at index from or later.
func (p *peer) messagesSince(from int, room string) []client.Frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []client.Frame
	for _, f := range p.frames[min(from, len(p.frames)):] {
		if f.Type == protocol.TypeMessage && f.Room == room {
			out = append(out, f)
		}
	}
	return out
}

// framesSince returns the frames at index from or later.
func (p *peer) framesSince(from int) []client.Frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.frames[min(from, len(p.frames)):])
}

// framesOf returns the frames of type typ received so far.
func (p *peer) framesOf(typ string) []client.Frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []client.Frame
	for _, f := range p.frames {
		if f.Type == typ {
			out = append(out, f)
		}
	}
	return out
}

// history pages through the whole retained history of room with history
// "after" requests of up to 100 messages, and returns it with the room's
// epoch and latest seq. The room must be joined.
func (p *peer) history(ctx context.Context, room string) ([]protocol.Message, string, int64, error) {
	var all []protocol.Message
	after := int64(0)
	for {
		f, err := p.reply(ctx, map[string]any{"type": protocol.TypeHistory, "room": room, "after": after, "limit": 100})
		if err != nil {
			return nil, "", 0, err
		}
		if f.Type != protocol.TypeHistory {
			return nil, "", 0, fmt.Errorf("%s: history of %s after %d: %s", p.name, room, after, f.Raw)
		}
		all = append(all, f.Messages...)
		if len(f.Messages) == 0 || f.Messages[len(f.Messages)-1].Seq >= f.Seq {
			return all, f.Epoch, f.Seq, nil
		}
		after = f.Messages[len(f.Messages)-1].Seq
	}
}

// entry is what every client must agree on about one message.
type entry struct {
	Seq                      int64
	ID, Epoch, User, CMID, T string
}

func entryOf(m protocol.Message) entry {
	return entry{Seq: m.Seq, ID: m.ID, Epoch: m.Epoch, User: m.User.ID, CMID: m.ClientMsgID, T: m.Text}
}

func entriesOf(frames []client.Frame) []entry {
	out := make([]entry, len(frames))
	for i, f := range frames {
		out[i] = entryOf(f.Message)
	}
	return out
}

func entriesOfMessages(msgs []protocol.Message) []entry {
	out := make([]entry, len(msgs))
	for i, m := range msgs {
		out[i] = entryOf(m)
	}
	return out
}

// checkContiguous reports how es departs from the seq range first..first+n-1
// in order, each once, in one epoch; nil when it does not.
func checkContiguous(es []entry, first int64, n int) error {
	var errs []error
	if len(es) != n {
		errs = append(errs, fmt.Errorf("%d messages, want %d", len(es), n))
	}
	seen := map[int64]bool{}
	for i, e := range es {
		want := first + int64(i)
		switch {
		case seen[e.Seq]:
			errs = append(errs, fmt.Errorf("seq %d again at position %d", e.Seq, i))
		case e.Seq != want:
			errs = append(errs, fmt.Errorf("seq %d at position %d, want %d", e.Seq, i, want))
		}
		seen[e.Seq] = true
		if e.Epoch != es[0].Epoch {
			errs = append(errs, fmt.Errorf("seq %d in epoch %q, seq %d in %q", e.Seq, e.Epoch, es[0].Seq, es[0].Epoch))
		}
		if len(errs) > 10 {
			errs = append(errs, errors.New("..."))
			break
		}
	}
	return errors.Join(errs...)
}

// diffEntries reports the first positions where got and want differ.
func diffEntries(got, want []entry) error {
	if slices.Equal(got, want) {
		return nil
	}
	var errs []error
	if len(got) != len(want) {
		errs = append(errs, fmt.Errorf("%d messages, want %d", len(got), len(want)))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			errs = append(errs, fmt.Errorf("at %d: got %+v, want %+v", i, got[i], want[i]))
			if len(errs) > 5 {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// percentiles returns the minimum, median and maximum of ds.
func percentiles(ds []time.Duration) (lo, mid, hi time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}
