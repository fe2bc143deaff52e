// Package hub delivers a gateway's share of the message stream: it knows which
// local connections are members of which rooms, and hands each room's
// messages to them in seq order, each once.
//
// The broker delivers every message to every gateway, but not necessarily in
// seq order (two gateways append seqs 5 and 6 and publish 6 first), and not
// necessarily at all (a queue lost while the broker link was down, a
// drop-head overflow). So each room here is a small sequencer: it emits seq
// n+1 right after n, holds messages that arrive early, and fills a hole that
// does not close by itself from the store. The same repair runs for every
// local room when the broker link comes back, and repeatedly while it is down,
// so that chat keeps flowing from the store alone.
//
// A message is encoded once per gateway, and the same bytes are pushed to
// every member; pushing never blocks (see Member).
package hub

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

// Member is a local connection's end of the hub.
type Member interface {
	// Push queues f for writing to the connection. It must not block and
	// must not modify f.Data, which is shared by every member of the room: a
	// member that cannot keep up drops itself, it never holds up the others.
	Push(f Frame)
}

// Frame is one encoded server frame on its way to a member.
type Frame struct {
	// Data is the encoded frame, shared between members.
	Data []byte
	// Kind tells a member falling behind what it may drop or replace.
	Kind Kind
	// Room and Seq say which message Data is, when it is one (Seq > 0).
	Room string
	Seq  int64
}

// Kind classifies frames by what a member may do with them when it cannot
// keep up.
type Kind uint8

const (
	// KindControl frames (joined, acks, errors, ...) are always delivered.
	KindControl Kind = iota
	// KindMessage frames are room messages: a member falling behind may
	// replace a run of them by a gap the client fills from history.
	KindMessage
	// KindEphemeral frames (typing, presence) may be dropped: the next one
	// supersedes them.
	KindEphemeral
)

// History is the part of the store the hub reads to repair holes.
type History interface {
	After(ctx context.Context, room string, after int64, limit int) (store.Page, error)
}

// Config tunes a Hub. The zero value of a field means its default.
type Config struct {
	// RepairDelay is how long a hole in a room's seqs may stay open before
	// the hub reads the missing messages from the store. Messages published
	// at nearly the same time by different gateways usually arrive within a
	// few milliseconds of each other, so the wait is short, but long enough
	// that ordinary reordering costs no store reads. Zero means 200ms.
	RepairDelay time.Duration
	// PollInterval is how often each local room is read from the store while
	// the broker is down or cannot publish. Zero means 500ms.
	PollInterval time.Duration
	// RepairBatch is how many messages one repair read fetches. Zero means
	// 500.
	RepairBatch int
	// MaxHeld bounds the early messages a room holds while waiting for a
	// hole to close; past it the hole is repaired at once. Zero means 1000.
	MaxHeld int
	// TailCheck is how often every local room is read from the store even
	// while the broker is fine. It catches a message that was stored but
	// never published and that no later message reveals (an append Redis
	// ran after its sender had given up on it). Zero means 5s.
	TailCheck time.Duration
	// OnBody receives broker bodies of types the hub does not handle itself
	// (neither "message" nor "typing"), such as cluster statistics. It is
	// called from the broker's goroutine and must not block. Nil drops them.
	OnBody func(typ string, body []byte)
	// BrokerReady reports whether the broker can publish and consume
	// (broker.Broker.Ready). While it cannot, the hub polls the store, as it
	// does while the consume link is down. Nil means the link state alone
	// decides.
	BrokerReady func() error
}

func (c Config) withDefaults() Config {
	if c.RepairDelay <= 0 {
		c.RepairDelay = 200 * time.Millisecond
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.RepairBatch <= 0 {
		c.RepairBatch = 500
	}
	if c.MaxHeld <= 0 {
		c.MaxHeld = 1000
	}
	if c.TailCheck <= 0 {
		c.TailCheck = 5 * time.Second
	}
	return c
}

// Hub holds the local rooms. Create it with New, start its background work
// with Run, and hand it to the broker's Consume as the Handler. All methods
// are safe for concurrent use.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	history History

	mu    sync.RWMutex
	rooms map[string]*room

	// emitted counts messages handed to local members and fannedOut the
	// pushes that took (one per member): their ratio is the fan-out.
	emitted, fannedOut atomic.Uint64

	// link carries the broker link's latest state to Run.
	link chan bool

	// due holds the rooms whose holes are due for repair, and kick tells
	// Run there are some. A set, not a queue: a flood of holes costs one
	// repair per room, never a flood of goroutines or store reads.
	dueMu sync.Mutex
	due   map[*room]struct{}
	kick  chan struct{}
}

// New returns a Hub that repairs from history.
func New(cfg Config, history History, log *slog.Logger) *Hub {
	return &Hub{
		cfg:     cfg.withDefaults(),
		log:     log,
		history: history,
		rooms:   make(map[string]*room),
		link:    make(chan bool, 1),
		due:     make(map[*room]struct{}),
		kick:    make(chan struct{}, 1),
	}
}

// Run does the hub's background work until ctx ends: repairing holes, and
// reading every local room from the store while the broker cannot be relied
// on. It returns when all of that work has stopped.
func (h *Hub) Run(ctx context.Context) {
	poll := time.NewTicker(h.cfg.PollInterval)
	defer poll.Stop()
	tail := time.NewTicker(h.cfg.TailCheck)
	defer tail.Stop()
	linkUp := false
	for {
		select {
		case <-ctx.Done():
			return
		case linkUp = <-h.link:
			if linkUp {
				// Whatever was published while the queue was gone is only in
				// the store now.
				h.repairAll(ctx)
			}
		case <-poll.C:
			if !linkUp || !h.brokerReady() {
				h.repairAll(ctx)
			}
		case <-tail.C:
			h.repairAll(ctx)
		case <-h.kick:
			h.dueMu.Lock()
			due := h.due
			h.due = make(map[*room]struct{})
			h.dueMu.Unlock()
			for r := range due {
				h.repair(ctx, r)
			}
		}
	}
}

// brokerReady reports whether the broker says it can carry messages. When it
// cannot publish (down, or blocked by a resource alarm), gateways store
// messages without announcing them, so every gateway reads its rooms from the
// store instead.
func (h *Hub) brokerReady() bool {
	return h.cfg.BrokerReady == nil || h.cfg.BrokerReady() == nil
}

// Broadcast pushes an ephemeral frame (presence, say) to the room's local
// members, if it has any.
func (h *Hub) Broadcast(room string, data []byte) {
	if r := h.lookup(room); r != nil {
		r.broadcast(data)
	}
}

// Nudge asks for the room to be read from the store now: the caller stored a
// message it could not publish, and its local members should not wait for the
// next poll.
func (h *Hub) Nudge(room string) {
	if r := h.lookup(room); r != nil {
		h.requestRepair(r)
	}
}

// Deliver implements broker.Handler: it takes one broker body. Bodies that
// are not valid message frames are logged and dropped; they may come from
// any service that can publish to the exchange.
func (h *Hub) Deliver(body []byte) {
	var r *room
	if name, ok := protocol.PeekRoom(body); ok {
		if r = h.lookup(name); r == nil {
			return // nobody here is in the room: not worth decoding
		}
	}
	typ, m, err := protocol.DecodeBody(body)
	if err != nil {
		h.log.Warn("dropping invalid broker body", "type", typ, "err", err, "bytes", len(body))
		return
	}
	switch typ {
	case protocol.TypeMessage, protocol.TypeTyping:
	default:
		if h.cfg.OnBody != nil {
			h.cfg.OnBody(typ, body)
		}
		return
	}
	// The peeked room is the first "room" in the body, the decoded one the
	// last: they differ only in a body built to mislead, so look again.
	if r == nil || r.name != m.Room {
		if r = h.lookup(m.Room); r == nil {
			return // nobody here is in the room
		}
	}
	// Re-encode rather than forward the body: members get exactly the fields
	// of the protocol, whatever else a foreign publisher put in.
	if typ == protocol.TypeTyping {
		r.broadcast(protocol.Encode(protocol.TypeTyping, protocol.Typing{Room: m.Room, User: m.User}))
		return
	}
	r.offer(h, m.Seq, m.Epoch, protocol.EncodeMessage(m))
}

// LinkUp implements broker.Handler.
func (h *Hub) LinkUp() { h.setLink(true) }

// LinkDown implements broker.Handler. Until LinkUp, and before the first
// one, the hub serves its rooms from the store.
func (h *Hub) LinkDown(err error) {
	h.log.Warn("broker link down; serving rooms from the store", "err", err)
	h.setLink(false)
}

func (h *Hub) setLink(up bool) {
	// Only the latest state matters: replace an unread one.
	select {
	case <-h.link:
	default:
	}
	h.link <- up
}

// Subscribe makes m a member of the room. Frames for m are held until the
// subscription is started: the caller reads the room's history first, then
// calls Start with what it read, so that m gets the history and then exactly
// the live messages after it.
func (h *Hub) Subscribe(name string, m Member) *Subscription {
	h.mu.Lock()
	r := h.rooms[name]
	if r == nil {
		r = &room{name: name, subs: make(map[*Subscription]struct{})}
		h.rooms[name] = r
	}
	s := &Subscription{hub: h, room: r, member: m}
	r.mu.Lock()
	r.subs[s] = struct{}{}
	r.mu.Unlock()
	h.mu.Unlock()
	return s
}

// FanOut reports how many messages the hub has emitted to local members, and
// how many pushes to members that took, since it started.
func (h *Hub) FanOut() (messages, pushes uint64) {
	return h.emitted.Load(), h.fannedOut.Load()
}

// lookup returns the local room of that name, or nil when nobody here is in
// it.
func (h *Hub) lookup(name string) *room {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.rooms[name]
}

// Rooms reports how many rooms have local members.
func (h *Hub) Rooms() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.rooms)
}

func (h *Hub) unsubscribe(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := s.room
	r.mu.Lock()
	delete(r.subs, s)
	empty := len(r.subs) == 0
	r.mu.Unlock()
	if empty && h.rooms[r.name] == r {
		delete(h.rooms, r.name)
		r.mu.Lock()
		r.gone = true
		r.stopTimerLocked()
		r.mu.Unlock()
	}
}

// requestRepair marks r's hole as due for repair. It never blocks, so rooms
// call it with their lock held.
func (h *Hub) requestRepair(r *room) {
	h.dueMu.Lock()
	h.due[r] = struct{}{}
	h.dueMu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default: // Run has been kicked already and will see r in the set.
	}
}

func (h *Hub) repairAll(ctx context.Context) {
	h.mu.RLock()
	rooms := make([]*room, 0, len(h.rooms))
	for _, r := range h.rooms {
		rooms = append(rooms, r)
	}
	h.mu.RUnlock()
	for _, r := range rooms {
		if ctx.Err() != nil {
			return
		}
		h.repair(ctx, r)
	}
}

// repair reads what follows the room's last delivered seq from the store and
// offers it, which closes any hole. It reads until it has caught up with
// the store, so a long outage is repaired completely.
func (h *Hub) repair(ctx context.Context, r *room) {
	for ctx.Err() == nil {
		r.mu.Lock()
		if r.gone || !r.based {
			r.mu.Unlock()
			return
		}
		after, heldBefore := r.last, r.firstHeldLocked()
		r.mu.Unlock()

		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		page, err := h.history.After(rctx, r.name, after, h.cfg.RepairBatch)
		cancel()
		if err != nil {
			h.log.Warn("repair read failed; retrying", "room", r.name, "after", after, "err", err)
			r.mu.Lock()
			r.armLocked(h)
			r.mu.Unlock()
			return
		}
		r.fill(h, page, heldBefore)
		if len(page.Messages) < h.cfg.RepairBatch {
			return
		}
	}
}
