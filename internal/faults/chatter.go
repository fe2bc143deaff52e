package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/protocol"
)

const (
	// dialTimeout bounds one dial, handshake and welcome included.
	dialTimeout = 5 * time.Second
	// writeTimeout bounds one frame written to the gateway.
	writeTimeout = 5 * time.Second
	// historyLimit is the page size of the history requests that fill a
	// hole (the protocol's largest).
	historyLimit = 100
	// maxProblems bounds the problems a Chatter describes one by one; the
	// rest are only counted.
	maxProblems = 20
)

// Backoff is a reconnect schedule: full-jitter exponential backoff, and a
// quick reconnect after close 1012 (the gateway restarts: reconnect now, it
// lands elsewhere).
type Backoff struct {
	// Base and Cap bound the delay before reconnect attempt n (from 0): it is
	// uniform in [0, min(Cap, Base*2^n)).
	Base, Cap time.Duration
	// StableAfter is how long a connection must have lasted for the attempt
	// count to start again from 0.
	StableAfter time.Duration
	// RestartJitter bounds the delay after close 1012, for the first
	// RestartTries attempts in a row; after that, 1012 backs off like any
	// other close.
	RestartJitter time.Duration
	RestartTries  int
}

// BrowserBackoff is the browser client's schedule (web/protocol.js), which
// docs/protocol.md prescribes to every client: random(0, min(30 s,
// 0.5 s * 2^attempt)), reset after 10 s of connection, and within 750 ms
// after 1012.
var BrowserBackoff = Backoff{
	Base:          500 * time.Millisecond,
	Cap:           30 * time.Second,
	StableAfter:   10 * time.Second,
	RestartJitter: 750 * time.Millisecond,
	RestartTries:  3,
}

// Plan returns the delay before the next reconnect and the attempt count to
// keep, after a connection that ended with code (-1 when it dropped without
// a close frame or never opened) after being joined for uptime.
func (b Backoff) Plan(code websocket.StatusCode, attempt int, uptime time.Duration) (time.Duration, int) {
	if uptime > b.StableAfter {
		attempt = 0
	}
	if code == websocket.StatusServiceRestart && attempt < b.RestartTries {
		return jitter(b.RestartJitter), attempt + 1
	}
	return jitter(b.Ceiling(attempt)), attempt + 1
}

// Ceiling returns min(Cap, Base*2^attempt) without overflowing.
func (b Backoff) Ceiling(attempt int) time.Duration {
	d := b.Base
	for range max(attempt, 0) {
		if d >= b.Cap-d {
			return b.Cap
		}
		d *= 2
	}
	return min(d, b.Cap)
}

func jitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}

// ChatterOptions say who a Chatter is and where it connects.
type ChatterOptions struct {
	// URL is the base URL of a gateway or of the load balancer.
	URL string
	// Name is the guest's display name, and the prefix of its client_msg_ids.
	Name string
	// Key is the guest key: the same key is the same user on every
	// connection, which is what lets the gateway recognise a retried send.
	Key string
	// Room is the one room the Chatter joins.
	Room string
	// Backoff is the reconnect schedule. The zero value means
	// BrowserBackoff.
	Backoff Backoff
}

// ConnRecord is one connection of a Chatter, or one failed attempt at one.
type ConnRecord struct {
	// Delay is what the Chatter waited before dialling (0 for the first).
	Delay time.Duration
	// Dialled is when the dial started; Joined when the joined frame came
	// (zero if it never did); Ended when the connection ended.
	Dialled, Joined, Ended time.Time
	// Gateway is the id the welcome frame named.
	Gateway string
	// Resumed says the join asked to resume (since and epoch).
	Resumed bool
	// Code is the close code (-1 when the connection dropped without one or
	// never opened); Err says how it ended.
	Code websocket.StatusCode
	Err  string
	// Stopped says the connection ended because the Chatter was stopped.
	Stopped bool
}

// SendResult is one send and how it was answered.
type SendResult struct {
	Room, ClientMsgID string
	// Created is when the load asked for the send; Written when it was first
	// written to a gateway; Answered when the answer came.
	Created, Written, Answered time.Time
	// Writes counts the connections it was written on (retries after a
	// reconnect).
	Writes int
	// Code is empty for an ack, else the error code that answered it.
	Code string
	// Seq and ID are the ack's.
	Seq int64
	ID  string
}

// Seen is how a Chatter came to show one message.
type Seen struct {
	Epoch string
	Seq   int64
	// ClientMsgID is the sender's id for the message.
	ClientMsgID string
	At          time.Time
	// How: "live" (a message frame), "resume" (a resuming joined frame),
	// "history" (a history reply filling a hole) or "join" (the history of
	// the first join).
	How string
}

// StatusRecord is one status frame.
type StatusRecord struct {
	At       time.Time
	Degraded bool
}

type outgoing struct {
	SendResult
	text string
	gen  int // the connection it was last written on
	done bool
}

// Chatter is one simulated user of the protocol, in one room. It behaves as
// the browser client does: it reads every frame at once, shows each room's
// messages in seq order, fills a hole with a history request, reconnects
// with full-jitter backoff, resumes with since and epoch, and writes again
// the sends a lost connection left unanswered, with the same client_msg_id.
//
// As it goes it records what a user would notice: a repeated seq, a seq that
// skips (a gap the gateway should have closed), a resume that was not
// recovered, an unexpected error. Create it with NewChatter, run it with Run,
// and end it with Stop. Its methods are safe for concurrent use.
type Chatter struct {
	opts ChatterOptions

	wake     chan struct{} // the writer has something to write
	stop     chan struct{} // closed by Stop
	stopOnce sync.Once
	done     chan struct{} // closed when Run has returned
	aux      sync.WaitGroup

	mu       sync.Mutex
	stopping bool
	conn     *client.Conn // the current connection; nil between connections
	gen      int          // counts connections; an old one's frames are ignored
	joined   bool         // the current connection got its joined frame
	cur      *ConnRecord

	based    bool   // the first join set the starting point
	base     int64  // the room's seq at the first join
	epoch    string // the epoch of the messages shown
	last     int64  // the last seq shown
	retired  []string
	held     map[int64]protocol.Message // arrived early, waiting for a hole to fill
	fetching bool                       // a history request is filling a hole

	seen    map[string]Seen // by message id
	sends   int
	pending []*outgoing // unanswered, oldest first
	results []SendResult

	conns     []*ConnRecord
	statuses  []StatusRecord
	epochs    int // epoch changes seen
	gapFrames int
	dups      int
	gaps      int
	nProblems int
	problems  []string
}

// NewChatter returns a Chatter that has not connected yet.
func NewChatter(opts ChatterOptions) *Chatter {
	if opts.Backoff == (Backoff{}) {
		opts.Backoff = BrowserBackoff
	}
	return &Chatter{
		opts: opts,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		seen: make(map[string]Seen),
	}
}

// Name returns the Chatter's name.
func (c *Chatter) Name() string { return c.opts.Name }

// Room returns the Chatter's room.
func (c *Chatter) Room() string { return c.opts.Room }

// Run connects and keeps the Chatter connected until Stop is called or ctx
// ends (which drops the connection without a close handshake). It returns
// when everything it started has ended.
func (c *Chatter) Run(ctx context.Context) {
	defer close(c.done)
	life, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-c.stop:
			cancel()
		case <-life.Done():
		}
	})
	wg.Go(func() { c.writeLoop(life) })
	defer wg.Wait()
	defer c.aux.Wait()

	attempt := 0
	var delay time.Duration
	for {
		if delay > 0 && !sleepCtx(life, delay) {
			return
		}
		code, uptime := c.session(life, ctx, delay)
		if life.Err() != nil || c.isStopping() {
			return
		}
		delay, attempt = c.opts.Backoff.Plan(code, attempt, uptime)
	}
}

// Stop closes the connection normally (close 1000) and waits until Run has
// returned.
func (c *Chatter) Stop() {
	c.mu.Lock()
	c.stopping = true
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
}

func (c *Chatter) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// Send asks for one message to be sent; it returns its client_msg_id. The
// message is written at once if the Chatter is connected and joined, and
// otherwise as soon as it is.
func (c *Chatter) Send(text string) string {
	c.mu.Lock()
	c.sends++
	id := fmt.Sprintf("%s-%d", c.opts.Name, c.sends)
	c.pending = append(c.pending, &outgoing{
		SendResult: SendResult{Room: c.opts.Room, ClientMsgID: id, Created: time.Now()},
		text:       text,
	})
	c.mu.Unlock()
	c.kick()
	return id
}

func (c *Chatter) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// session dials once and serves the connection until it ends. It returns
// the close code and how long the connection was joined.
func (c *Chatter) session(life, readCtx context.Context, delay time.Duration) (websocket.StatusCode, time.Duration) {
	rec := &ConnRecord{Delay: delay, Dialled: time.Now(), Code: -1}
	dctx, cancel := context.WithTimeout(life, dialTimeout)
	conn, _, err := client.Dial(dctx, c.opts.URL, client.Options{Name: c.opts.Name, Key: c.opts.Key})
	cancel()

	c.mu.Lock()
	c.conns = append(c.conns, rec)
	if err != nil {
		rec.Ended, rec.Err = time.Now(), err.Error()
		c.mu.Unlock()
		return -1, 0
	}
	if c.stopping {
		rec.Ended, rec.Err, rec.Stopped = time.Now(), "stopped", true
		c.mu.Unlock()
		_ = conn.Close()
		return websocket.StatusNormalClosure, 0
	}
	c.gen++
	gen := c.gen
	c.conn, c.joined, c.cur = conn, false, rec
	// A resume brings everything after last: a hole being filled on the old
	// connection is filled by it.
	c.fetching, c.held = false, nil
	join := joinFrame{Type: protocol.TypeJoin, Room: c.opts.Room}
	if c.based {
		since := c.last
		join.Since = &since
		if c.epoch != "" {
			join.Epoch = c.epoch
		}
		rec.Resumed = true
	}
	c.mu.Unlock()

	wctx, wcancel := context.WithTimeout(life, writeTimeout)
	err = conn.Send(wctx, join)
	wcancel()
	for err == nil {
		var f client.Frame
		if f, err = conn.Next(readCtx); err == nil {
			c.handle(gen, conn, f)
		}
	}

	c.mu.Lock()
	rec.Ended, rec.Code, rec.Err, rec.Stopped = time.Now(), websocket.CloseStatus(err), err.Error(), c.stopping
	if strings.Contains(rec.Err, "decode frame") {
		c.problemf("undecodable frame: %v", err)
	}
	var uptime time.Duration
	if !rec.Joined.IsZero() {
		uptime = rec.Ended.Sub(rec.Joined)
	}
	c.conn, c.joined, c.cur = nil, false, nil
	c.mu.Unlock()
	_ = conn.CloseNow()
	return rec.Code, uptime
}

type joinFrame struct {
	Type  string `json:"type"`
	Room  string `json:"room"`
	Since *int64 `json:"since,omitempty"`
	Epoch string `json:"epoch,omitempty"`
}

type sendFrame struct {
	Type        string `json:"type"`
	Room        string `json:"room"`
	Text        string `json:"text"`
	ClientMsgID string `json:"client_msg_id"`
}

type historyFrame struct {
	Type  string `json:"type"`
	Room  string `json:"room"`
	After int64  `json:"after"`
	Limit int    `json:"limit"`
}

// writeLoop writes the sends that are due whenever it is woken, until life
// ends.
func (c *Chatter) writeLoop(life context.Context) {
	for {
		select {
		case <-life.Done():
			return
		case <-c.wake:
		}
		conn, batch := c.writable()
		for _, s := range batch {
			wctx, cancel := context.WithTimeout(life, writeTimeout)
			err := conn.Send(wctx, s)
			cancel()
			if err != nil {
				// The connection is going; the reader notices, and these
				// sends are written again on the next one.
				break
			}
		}
	}
}

// writable returns the current connection and the unanswered sends not yet
// written on it, marking them written; nothing while not joined.
func (c *Chatter) writable() (*client.Conn, []sendFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || !c.joined {
		return nil, nil
	}
	c.pending = slices.DeleteFunc(c.pending, func(s *outgoing) bool { return s.done })
	var batch []sendFrame
	now := time.Now()
	for _, s := range c.pending {
		if s.gen == c.gen {
			continue
		}
		s.gen = c.gen
		s.Writes++
		if s.Written.IsZero() {
			s.Written = now
		}
		batch = append(batch, sendFrame{Type: protocol.TypeSend, Room: c.opts.Room, Text: s.text, ClientMsgID: s.ClientMsgID})
	}
	return c.conn, batch
}

// handle takes one frame of connection gen.
func (c *Chatter) handle(gen int, conn *client.Conn, f client.Frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	switch f.Type {
	case protocol.TypeWelcome:
		c.cur.Gateway = f.Gateway
	case protocol.TypeStatus:
		var s struct {
			Degraded bool `json:"degraded"`
		}
		if err := json.Unmarshal(f.Raw, &s); err != nil {
			c.problemf("bad status frame %s: %v", f.Raw, err)
			return
		}
		c.statuses = append(c.statuses, StatusRecord{At: time.Now(), Degraded: s.Degraded})
	case protocol.TypeJoined:
		if f.Room == c.opts.Room {
			c.onJoined(conn, f)
		}
	case protocol.TypeMessage:
		if f.Room == c.opts.Room {
			c.accept(conn, f.Message, "live")
		}
	case protocol.TypeHistory:
		if f.Room == c.opts.Room {
			c.onHistory(conn, f)
		}
	case protocol.TypeGap:
		c.onGap(conn, f)
	case protocol.TypeAck:
		c.answer(f.ClientMsgID, "", f.Seq, f.ID)
	case protocol.TypeError:
		c.onError(conn, f)
	}
}

func (c *Chatter) onJoined(conn *client.Conn, f client.Frame) {
	now := time.Now()
	if !c.based {
		c.based, c.base, c.epoch, c.last = true, f.Seq, f.Epoch, f.Seq
		for _, m := range f.Messages {
			c.seen[m.ID] = Seen{Epoch: m.Epoch, Seq: m.Seq, ClientMsgID: m.ClientMsgID, At: now, How: "join"}
		}
	} else {
		switch {
		case f.Recovered == nil:
			c.problemf("resume answered without recovered: %s", f.Raw)
		case !*f.Recovered:
			c.problemf("resume after seq %d of epoch %q not recovered (room now at %d of %q)", c.last, c.epoch, f.Seq, f.Epoch)
			// Start the room afresh from what the gateway sent, as the
			// browser does.
			c.retireEpoch()
			c.epoch, c.last = f.Epoch, f.Seq
			for _, m := range f.Messages {
				c.seen[m.ID] = Seen{Epoch: m.Epoch, Seq: m.Seq, ClientMsgID: m.ClientMsgID, At: now, How: "join"}
			}
		default:
			for _, m := range f.Messages {
				c.accept(conn, m, "resume")
			}
			if f.More {
				c.requestHistory(conn)
			}
		}
	}
	c.joined = true
	c.cur.Joined = now
	c.kick()
}

// accept shows one message that came in order-sensitive stream: a live
// message frame or a resume.
func (c *Chatter) accept(conn *client.Conn, m protocol.Message, how string) {
	if !c.adoptEpoch(m.Epoch) {
		return
	}
	switch {
	case m.Seq <= c.last:
		c.dups++
		c.problemf("%s seq %d again (last shown %d)", how, m.Seq, c.last)
	case m.Seq == c.last+1:
		c.show(m, how)
		c.drainHeld()
	default:
		if c.held == nil {
			c.held = make(map[int64]protocol.Message)
		}
		c.held[m.Seq] = m
		if !c.fetching {
			c.gaps++
			c.problemf("%s seq %d after %d: a gap", how, m.Seq, c.last)
			c.requestHistory(conn)
		}
	}
}

// adoptEpoch follows the room into m's epoch, as the protocol says: a new
// epoch starts the room's view afresh. It reports false for a message of an
// epoch left behind.
func (c *Chatter) adoptEpoch(epoch string) bool {
	switch {
	case epoch == c.epoch:
		return true
	case c.epoch == "":
		c.epoch = epoch
		return true
	case slices.Contains(c.retired, epoch):
		c.problemf("message of the old epoch %q after the room moved to %q", epoch, c.epoch)
		return false
	}
	c.epochs++
	c.retireEpoch()
	c.epoch, c.last, c.held, c.fetching = epoch, 0, nil, false
	return true
}

func (c *Chatter) retireEpoch() {
	if c.epoch != "" {
		c.retired = append(c.retired, c.epoch)
	}
}

func (c *Chatter) show(m protocol.Message, how string) {
	c.last = m.Seq
	if prev, ok := c.seen[m.ID]; ok {
		c.dups++
		c.problemf("message %s shown twice: seq %d (%s), then seq %d (%s)", m.ID, prev.Seq, prev.How, m.Seq, how)
	}
	c.seen[m.ID] = Seen{Epoch: m.Epoch, Seq: m.Seq, ClientMsgID: m.ClientMsgID, At: time.Now(), How: how}
}

func (c *Chatter) drainHeld() {
	for len(c.held) > 0 {
		m, ok := c.held[c.last+1]
		if !ok {
			break
		}
		delete(c.held, m.Seq)
		c.show(m, "live")
	}
	for seq := range c.held {
		if seq <= c.last {
			delete(c.held, seq)
		}
	}
}

// requestHistory asks for what follows the last seq shown, on conn.
func (c *Chatter) requestHistory(conn *client.Conn) {
	c.fetching = true
	if conn == nil {
		return // a unit test feeding frames by hand
	}
	frame := historyFrame{Type: protocol.TypeHistory, Room: c.opts.Room, After: c.last, Limit: historyLimit}
	c.aux.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		defer cancel()
		_ = conn.Send(ctx, frame) // a failed write ends the connection; the resume repairs
	})
}

func (c *Chatter) onHistory(conn *client.Conn, f client.Frame) {
	if !c.fetching {
		return
	}
	for _, m := range f.Messages {
		if !c.adoptEpoch(m.Epoch) {
			continue
		}
		switch {
		case m.Seq <= c.last:
		case m.Seq == c.last+1:
			c.show(m, "history")
			c.drainHeld()
		default:
			c.problemf("history after %d starts at %d", c.last, m.Seq)
			c.last = m.Seq - 1
			c.show(m, "history")
			c.drainHeld()
		}
	}
	if len(f.Messages) >= historyLimit {
		c.requestHistory(conn)
		return
	}
	c.fetching = false
	if len(c.held) > 0 {
		first := slices.Min(slices.Collect(maps.Keys(c.held)))
		c.problemf("seqs %d..%d are not in the store", c.last+1, first-1)
		c.last = first - 1
		c.drainHeld()
	}
}

// onGap handles the gateway's gap frame (it shed a backlog this client did
// not read in time): the messages are fetched from history, as the protocol
// says.
func (c *Chatter) onGap(conn *client.Conn, f client.Frame) {
	var g struct {
		Room     string `json:"room"`
		From, To int64
	}
	if err := json.Unmarshal(f.Raw, &g); err != nil || g.Room != c.opts.Room {
		return
	}
	c.gapFrames++
	if !c.fetching {
		c.requestHistory(conn)
	}
}

func (c *Chatter) onError(conn *client.Conn, f client.Frame) {
	if f.Ref != "" && c.answer(f.Ref, f.Code, 0, "") {
		if f.Code != protocol.CodeUnavailable {
			c.problemf("send %s answered %s: %s", f.Ref, f.Code, f.ErrorMessage)
		}
		return
	}
	c.problemf("error frame %s", f.Raw)
	if f.Code == protocol.CodeUnavailable && !c.joined && f.Room == c.opts.Room {
		// The join could not read the room's history: try again shortly,
		// on the same connection.
		gen := c.gen
		c.aux.Go(func() {
			t := time.NewTimer(500 * time.Millisecond)
			defer t.Stop()
			select {
			case <-t.C:
			case <-c.stop:
				return
			}
			c.mu.Lock()
			if c.gen != gen {
				c.mu.Unlock()
				return
			}
			join := joinFrame{Type: protocol.TypeJoin, Room: c.opts.Room}
			if c.based {
				since := c.last
				join.Since, join.Epoch = &since, c.epoch
			}
			c.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			defer cancel()
			_ = conn.Send(ctx, join)
		})
	}
}

// answer records the answer to a pending send; it reports false when no
// send with that client_msg_id awaits one.
func (c *Chatter) answer(id, code string, seq int64, msgID string) bool {
	i := slices.IndexFunc(c.pending, func(s *outgoing) bool { return s.ClientMsgID == id && !s.done })
	if i < 0 {
		c.problemf("answer %q to %s, which awaits none", code, id)
		return false
	}
	s := c.pending[i]
	s.done = true
	s.Answered, s.Code, s.Seq, s.ID = time.Now(), code, seq, msgID
	c.results = append(c.results, s.SendResult)
	return true
}

func (c *Chatter) problemf(format string, args ...any) {
	c.nProblems++
	if len(c.problems) < maxProblems {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

// State is a snapshot of what a Chatter did and saw.
type State struct {
	Name, Room string
	Conns      []ConnRecord
	Statuses   []StatusRecord
	Results    []SendResult // answered sends, in the order of their answers
	Unanswered int
	Seen       map[string]Seen
	Epoch      string
	Base, Last int64
	// Epochs counts epoch changes; GapFrames the gateway's gap frames.
	Epochs, GapFrames int
	// Dups counts messages shown twice or seqs repeated; Gaps seqs that
	// skipped ahead in a live stream or a resume.
	Dups, Gaps int
	Problems   []string
	NProblems  int
}

// StayedConnected reports whether the Chatter kept its first connection
// until it was stopped (or until now).
func (s State) StayedConnected() bool {
	if len(s.Conns) != 1 {
		return false
	}
	c := s.Conns[0]
	return !c.Joined.IsZero() && (c.Ended.IsZero() || c.Stopped)
}

// Joined reports whether the Chatter is joined right now.
func (c *Chatter) Joined() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joined
}

// Snapshot returns a copy of the Chatter's state.
func (c *Chatter) Snapshot() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := State{
		Name: c.opts.Name, Room: c.opts.Room,
		Statuses: slices.Clone(c.statuses), Results: slices.Clone(c.results),
		Epoch: c.epoch, Base: c.base, Last: c.last,
		Epochs: c.epochs, GapFrames: c.gapFrames, Dups: c.dups, Gaps: c.gaps,
		Problems: slices.Clone(c.problems), NProblems: c.nProblems,
	}
	for _, r := range c.conns {
		s.Conns = append(s.Conns, *r)
	}
	for _, p := range c.pending {
		if !p.done {
			s.Unanswered++
		}
	}
	s.Seen = maps.Clone(c.seen)
	return s
}

// hasSeen reports whether the Chatter has shown every id of ids.
func (c *Chatter) hasSeen(ids []string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if _, ok := c.seen[id]; !ok {
			return false
		}
	}
	return true
}

// unanswered returns how many sends await an answer.
func (c *Chatter) unanswered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.pending {
		if !p.done {
			n++
		}
	}
	return n
}

// acked returns the ids of the acknowledged sends.
func (c *Chatter) acked() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, r := range c.results {
		if r.Code == "" {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// sleepCtx waits for d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
