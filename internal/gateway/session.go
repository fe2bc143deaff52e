package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/parleychat/parley/internal/auth"
	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

// loggedBadFrames is how many bad frames of one connection are logged one by
// one; the rest are counted and summed up when it closes, so a client
// flooding garbage cannot flood the log.
const loggedBadFrames = 3

// resumePage is the most messages a resuming join carries in one frame; the
// client fetches the rest with history "after".
const resumePage = 500

// serveWS upgrades the request and serves the connection until it ends.
func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "gateway is shutting down; reconnect", http.StatusServiceUnavailable)
		return
	}
	who, err := g.auth.Authenticate(r)
	if err != nil {
		status := http.StatusUnauthorized
		var ae *auth.Error
		if errors.As(err, &ae) {
			status = ae.Status
		}
		g.log.Info("handshake refused", "status", status, "err", err, "cause", errors.Unwrap(err), "remote", r.RemoteAddr)
		http.Error(w, err.Error(), status)
		return
	}
	ip := g.clientIP(r)
	if ok, why := g.admit(ip, who.User.ID); !ok {
		status := http.StatusTooManyRequests
		if g.draining.Load() {
			status = http.StatusServiceUnavailable
		}
		g.log.Info("handshake refused", "status", status, "reason", why, "ip", ip, "user", who.User.ID)
		http.Error(w, why, status)
		return
	}
	hj := &smallBuffers{ResponseWriter: w, pool: &g.batchBufs}
	var c *conn
	ws, err := websocket.Accept(hj, r, &websocket.AcceptOptions{
		OriginPatterns: g.opts.AllowedOrigins,
		// A pong the library reads answers a ping written while the
		// connection was parked (see conn.ping).
		OnPongReceived: func(context.Context, []byte) { c.ponged() },
	})
	if err != nil {
		// Accept has answered already (403 for a foreign Origin, 400 for a
		// request that is no WebSocket handshake).
		g.release(ip, who.User.ID)
		g.log.Info("websocket upgrade refused", "err", err, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		return
	}
	ws.SetReadLimit(g.opts.MaxFrameBytes)

	c = &conn{
		out:     outQueue{limit: g.opts.SendQueueBytes},
		g:       g,
		ws:      ws,
		flusher: g.flushers[g.nextFlusher.Add(1)%uint64(len(g.flushers))],
		netConn: hj.conn,
		br:      hj.br,
		sw:      hj.sw,
		ip:      ip,
		who:     who,
		userID:  who.User.ID,
		ctx:     g.ctx,
		wake:    make(chan struct{}, 1),
		sends:   rate.NewLimiter(rate.Limit(g.opts.SendRate), g.opts.SendBurst),
		// A strike a second may be forgiven; a burst of them is abuse.
		strikes: rate.NewLimiter(rate.Every(time.Second), abuseStrikes),
		subs:    make(map[string]*hub.Subscription),
	}
	if g.presence != nil {
		c.presenceID = g.presence.connID()
	}
	if !g.register(c) {
		g.release(ip, who.User.ID)
		_ = ws.Close(websocket.StatusServiceRestart, "gateway is shutting down")
		return
	}
	// The connection is served on a goroutine of its own so that this
	// handler returns: the request, its headers and the stack net/http grew
	// to handle it are freed, and the goroutine itself ends once the
	// connection parks.
	go g.serveConn(c)
}

// serveConn starts serving a registered connection.
func (g *Gateway) serveConn(c *conn) {
	who := c.who
	// A connection must join a room soon: one that never does only holds
	// a slot (and its memory) on the gateway.
	c.joinDeadline = time.AfterFunc(g.opts.HandshakeTimeout, func() {
		g.log.Info("closing client that joined no room in time", "user", who.User.ID, "ip", c.ip)
		c.close(websocket.StatusPolicyViolation, "no room joined in time")
	})
	c.armExpiry(who.Expires)

	c.send(protocol.Encode(protocol.TypeWelcome, protocol.Welcome{User: who.User, Gateway: g.opts.ID, Guest: who.Guest}))
	if g.degraded.Load() {
		c.send(g.statusFrame())
	}
	c.serve()
}

// serve reads and handles the client's frames until the connection parks
// (the poller starts serve again when the client sends more) or ends.
func (c *conn) serve() {
	parked, err := c.readLoop()
	if !parked {
		c.end(err)
	}
}

// end releases what the connection holds once its last frame is read.
func (c *conn) end(err error) {
	g := c.g
	if g.presence != nil {
		g.presence.dropped(c, slices.Collect(maps.Keys(c.subs)))
	}
	for _, s := range c.subs {
		s.Close()
	}
	c.logEnd(err)
	c.close(websocket.StatusNormalClosure, "")
	c.done.Wait()
	if c.sock != nil {
		c.sock.Release()
	}
	c.stopExpiry()
	c.joinDeadline.Stop()
	g.unregister(c)
	g.release(c.ip, c.userID)
}

// readLoop reads and handles the client's frames until the connection ends
// or, having read at least one frame, parks (see park).
func (c *conn) readLoop() (parked bool, err error) {
	// sent is true after a send: a client that just sent a message is
	// likely to send another soon, one that joined or fetched history to
	// read for a while.
	sent := false
	for read := false; ; read = true {
		if read && c.park(sent) {
			return true, nil
		}
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			return false, err
		}
		c.g.metrics.framesIn.Inc()
		if typ != websocket.MessageText {
			c.reject(protocol.Errorf(protocol.CodeBinaryUnsupported, "send JSON as text frames"), "")
			continue
		}
		// The library does not check text frames for UTF-8; the protocol
		// requires it (RFC 6455 section 8.1).
		if !utf8.Valid(data) {
			c.g.log.Info("closing client that sent invalid UTF-8", "user", c.who.User.ID)
			c.close(websocket.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
			return false, nil
		}
		req, err := protocol.DecodeRequest(data, c.g.opts.Limits)
		if err != nil {
			c.reject(err.(*protocol.Error), "")
			continue
		}
		if !c.beginFrame() {
			return false, nil
		}
		switch req.Type {
		case protocol.TypeJoin:
			c.join(req)
		case protocol.TypeLeave:
			c.leave(req)
		case protocol.TypeSend:
			c.publish(req)
			sent = true
		case protocol.TypeHistory:
			c.history(req)
		case protocol.TypeTyping:
			c.typing(req)
		case protocol.TypeLatency:
			c.latency(req)
		case protocol.TypeRefresh:
			c.refresh(req)
		}
		c.endFrame()
	}
}

// abuseStrikes is how many rejected frames (malformed, rate limited, ...)
// a connection may send in a burst before it is closed with 1008; one strike
// a second is forgiven. Honest clients make a mistake now and then; a client
// that keeps going is flooding.
const abuseStrikes = 30

// reject answers a bad frame with an error frame; the connection stays open
// unless the client keeps sending bad frames.
func (c *conn) reject(e *protocol.Error, room string) {
	c.badFrames++
	c.g.metrics.errors.WithLabelValues(e.Code).Inc()
	if c.badFrames <= loggedBadFrames {
		c.g.log.Info("bad frame", "user", c.who.User.ID, "code", e.Code, "err", e.Message)
	}
	c.send(protocol.EncodeError(e, room))
	if !c.strikes.Allow() {
		c.g.log.Info("closing client that keeps sending bad or rate-limited frames", "user", c.who.User.ID, "bad_frames", c.badFrames)
		c.g.metrics.abuseClosed.Inc()
		c.close(websocket.StatusPolicyViolation, "too many bad or rate-limited frames")
	}
}

// fail answers a frame the gateway could not serve (not the client's fault).
func (c *conn) fail(code, message, ref, room string) {
	c.g.metrics.errors.WithLabelValues(code).Inc()
	c.send(protocol.EncodeError(&protocol.Error{Code: code, Message: message, Ref: ref}, room))
}

func (c *conn) logEnd(err error) {
	status := websocket.CloseStatus(err)
	switch {
	case err == nil, status == websocket.StatusNormalClosure, status == websocket.StatusGoingAway,
		errors.Is(err, context.Canceled):
		c.g.log.Debug("connection closed", "user", c.who.User.ID, "status", status)
	case status == websocket.StatusMessageTooBig || errors.Is(err, websocket.ErrMessageTooBig):
		c.g.log.Info("closed client that sent an oversized frame", "user", c.who.User.ID)
	default:
		c.g.log.Debug("connection ended", "user", c.who.User.ID, "err", err)
	}
	if c.badFrames > loggedBadFrames {
		c.g.log.Info("client sent bad frames", "user", c.who.User.ID, "count", c.badFrames)
	}
}

func (c *conn) join(req protocol.Request) {
	// The deadline is for connections that never try to join; one whose
	// join fails (store unavailable, say) is told so and may try again.
	c.joinDeadline.Stop()
	if old := c.subs[req.Room]; old != nil {
		// A repeated join resynchronises: start over with fresh history.
		old.Close()
		delete(c.subs, req.Room)
	}
	if !c.who.MayJoin(req.Room) {
		c.reject(protocol.Errorf(protocol.CodeForbidden, "your token does not allow this room"), req.Room)
		return
	}
	if len(c.subs) >= c.g.opts.MaxRoomsPerConn {
		c.reject(protocol.Errorf(protocol.CodeTooManyRooms, "a connection may join at most %d rooms", c.g.opts.MaxRoomsPerConn), req.Room)
		return
	}
	// Subscribe before reading history, so that nothing published between the
	// read and the subscription is missed (see hub.Subscription.Start).
	sub := c.g.hub.Subscribe(req.Room, c)
	joined, err := c.g.loadJoin(c.ctx, req)
	if err != nil {
		sub.Close()
		c.g.storeFailed("read", err)
		c.g.log.Warn("join: history read failed", "room", req.Room, "err", err)
		c.fail(protocol.CodeUnavailable, "room history is unavailable; join again", "", req.Room)
		return
	}
	c.subs[req.Room] = sub
	c.g.metrics.joins.Inc()
	sub.Start(protocol.Encode(protocol.TypeJoined, joined), joined.Epoch, joined.Seq)
	if c.g.presence != nil {
		ctx, cancel := context.WithTimeout(c.ctx, c.g.opts.StoreTimeout)
		defer cancel()
		c.g.presence.join(ctx, c, req.Room)
	}
}

// loadJoin reads what a join answers with: the newest messages, or for a
// resume everything after "since" that fits in one frame.
func (g *Gateway) loadJoin(ctx context.Context, req protocol.Request) (_ protocol.Joined, err error) {
	ctx, done, err := g.storeHealth.work(ctx, g.opts.StoreTimeout)
	if err != nil {
		return protocol.Joined{}, err
	}
	defer func() { err = done(err) }()
	if req.HasSince {
		page, err := g.store.After(ctx, req.Room, req.Since, resumePage)
		if err != nil {
			return protocol.Joined{}, err
		}
		if resumable(req, page) {
			var trimmed bool
			page.Messages, trimmed = fitOldest(page.Messages, g.replyBudget())
			more := trimmed || len(page.Messages) > 0 && page.Messages[len(page.Messages)-1].Seq < page.Seq
			return joinedFrom(req.Room, page, true, more), nil
		}
		page, err = g.store.Recent(ctx, req.Room, g.opts.JoinHistory)
		if err != nil {
			return protocol.Joined{}, err
		}
		page.Messages, _ = fitNewest(page.Messages, g.replyBudget())
		return joinedFrom(req.Room, page, false, false), nil
	}
	page, err := g.store.Recent(ctx, req.Room, g.opts.JoinHistory)
	if err != nil {
		return protocol.Joined{}, err
	}
	page.Messages, _ = fitNewest(page.Messages, g.replyBudget())
	return protocol.Joined{Room: req.Room, Epoch: page.Epoch, Seq: page.Seq, Messages: page.Messages}, nil
}

// replyBudget is the most message bytes one joined or history frame
// carries: half the send queue, so a reply always fits beside what else is
// queued however long the messages are. A resume that does not fit says
// more, and history pages come shorter; clients ask on from where they got.
func (g *Gateway) replyBudget() int { return g.opts.SendQueueBytes / 2 }

// fitOldest keeps the oldest of msgs that fit in budget bytes (at least one),
// for replies the client continues after their last message.
func fitOldest(msgs []protocol.Message, budget int) ([]protocol.Message, bool) {
	n, size := 0, 0
	for n < len(msgs) && (n == 0 || size+encodedSize(msgs[n]) <= budget) {
		size += encodedSize(msgs[n])
		n++
	}
	return msgs[:n], n < len(msgs)
}

// fitNewest keeps the newest of msgs that fit in budget bytes (at least
// one), for replies the client pages back from, before their first message.
func fitNewest(msgs []protocol.Message, budget int) ([]protocol.Message, bool) {
	i, size := len(msgs), 0
	for i > 0 && (i == len(msgs) || size+encodedSize(msgs[i-1]) <= budget) {
		size += encodedSize(msgs[i-1])
		i--
	}
	return msgs[i:], i > 0
}

// encodedSize estimates a message's size in a frame: its strings and about
// 150 bytes of field names, seq and timestamp. JSON escaping may add more;
// the budget's headroom (half the queue) covers it.
func encodedSize(m protocol.Message) int {
	return len(m.Text) + len(m.User.ID) + len(m.User.Name) + len(m.ID) + len(m.Room) + len(m.Epoch) + len(m.ClientMsgID) + 150
}

// resumable reports whether page, read after req.Since, holds everything the
// client missed: the same epoch, a since the room has reached, and no
// messages lost to retention in between.
func resumable(req protocol.Request, page store.Page) bool {
	switch {
	case req.Epoch != page.Epoch:
		return false
	case req.Since > page.Seq:
		return false // the client claims seqs this epoch never had
	case len(page.Messages) == 0:
		return req.Since == page.Seq
	default:
		return page.Messages[0].Seq == req.Since+1
	}
}

func joinedFrom(room string, page store.Page, recovered, more bool) protocol.Joined {
	return protocol.Joined{Room: room, Epoch: page.Epoch, Seq: page.Seq, Messages: page.Messages, Recovered: &recovered, More: more}
}

func (c *conn) leave(req protocol.Request) {
	if s := c.subs[req.Room]; s != nil {
		s.Close()
		delete(c.subs, req.Room)
		delete(c.lastTyping, req.Room)
		c.leftRoom(req.Room)
	}
	c.send(protocol.Encode(protocol.TypeLeft, protocol.Left{Room: req.Room}))
}

// publish is the send path: store (which numbers the message), publish (the
// broker confirms), then ack. The message itself reaches the sender like
// everyone else, through the broker and the hub.
func (c *conn) publish(req protocol.Request) {
	if c.subs[req.Room] == nil {
		c.reject(&protocol.Error{Code: protocol.CodeNotJoined, Message: "join the room before sending to it", Ref: req.ClientMsgID}, req.Room)
		return
	}
	if !c.sends.Allow() {
		c.reject(&protocol.Error{Code: protocol.CodeRateLimited, Message: "slow down: too many messages", Ref: req.ClientMsgID}, req.Room)
		return
	}
	c.g.metrics.sends.Inc()
	start := time.Now()
	ack, err := c.g.post(c.ctx, protocol.Message{Room: req.Room, User: c.who.User, Text: req.Text, ClientMsgID: req.ClientMsgID})
	if err != nil {
		c.g.log.Warn("send failed", "room", req.Room, "user", c.who.User.ID, "err", err)
		c.fail(protocol.CodeUnavailable, "the message could not be stored; retry with the same client_msg_id", req.ClientMsgID, req.Room)
		return
	}
	c.g.metrics.sendSeconds.Observe(time.Since(start).Seconds())
	if c.g.stats != nil {
		c.g.stats.Sent(req.Room)
	}
	c.send(protocol.Encode(protocol.TypeAck, ack))
}

// leftRoom takes the connection out of the room's presence.
func (c *conn) leftRoom(room string) {
	if c.g.presence == nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.g.opts.StoreTimeout)
	defer cancel()
	c.g.presence.leave(ctx, c, room)
}

// typingInterval is the least time between two typing notices of one
// connection in one room; more are dropped. Clients send one every few
// seconds while someone types and expire it on their own.
const typingInterval = 2 * time.Second

// typing relays that the user is typing to every member of the room, through
// the broker like a message, but never stored: it is worthless a few seconds
// later, so a lost one is not retried either.
func (c *conn) typing(req protocol.Request) {
	if c.subs[req.Room] == nil {
		c.reject(protocol.Errorf(protocol.CodeNotJoined, "join the room before typing in it"), req.Room)
		return
	}
	now := time.Now()
	if now.Sub(c.lastTyping[req.Room]) < typingInterval {
		return
	}
	if c.lastTyping == nil {
		c.lastTyping = make(map[string]time.Time)
	}
	c.lastTyping[req.Room] = now
	body := protocol.Encode(protocol.TypeTyping, protocol.Typing{Room: req.Room, User: c.who.User})
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	if err := c.g.broker.Publish(ctx, body, ""); err != nil {
		c.g.log.Debug("typing notice not published", "room", req.Room, "err", err)
	}
}

// armExpiry schedules the end of the session at the token's expiry; a zero
// time (guests) never expires.
func (c *conn) armExpiry(expires time.Time) {
	if expires.IsZero() {
		return
	}
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.expiry = time.AfterFunc(time.Until(expires), c.expired)
}

// expired tells the client its token expired and gives it TokenGrace to
// send a new one.
func (c *conn) expired() {
	c.send(protocol.EncodeError(&protocol.Error{Code: protocol.CodeTokenExpired,
		Message: fmt.Sprintf("your token expired: send refresh with a new one within %s", c.g.opts.TokenGrace)}, ""))
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	c.expiry = time.AfterFunc(c.g.opts.TokenGrace, func() {
		c.g.log.Info("closing session whose token expired", "user", c.userID)
		c.close(websocket.StatusPolicyViolation, "token expired")
	})
}

func (c *conn) stopExpiry() {
	c.expiryMu.Lock()
	defer c.expiryMu.Unlock()
	if c.expiry != nil {
		c.expiry.Stop()
	}
}

// refresh replaces the session's token with a new one for the same user:
// the session then lasts until the new expiry, under the new token's name
// and rooms (joined rooms it no longer allows are left).
func (c *conn) refresh(req protocol.Request) {
	r, ok := c.g.auth.(Refresher)
	if !ok || c.who.Guest {
		c.reject(protocol.Errorf(protocol.CodeBadRequest, "this session has no token to refresh"), "")
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	who, err := r.Refresh(ctx, c.who, req.Token)
	if err != nil {
		c.g.log.Info("refresh refused", "user", c.userID, "err", err, "cause", errors.Unwrap(err))
		c.reject(protocol.Errorf(protocol.CodeUnauthorized, "%s", err.Error()), "")
		return
	}
	c.who = who
	for room, s := range c.subs {
		if !who.MayJoin(room) {
			s.Close()
			delete(c.subs, room)
			c.leftRoom(room)
			c.send(protocol.EncodeError(protocol.Errorf(protocol.CodeForbidden, "your new token does not allow this room"), room))
		}
	}
	c.armExpiry(who.Expires)
	c.send(protocol.Encode(protocol.TypeRefreshed, protocol.Refreshed{User: who.User, Expires: who.Expires}))
}

// latencyInterval is the least time between two latency reports of one
// connection that are counted; clients report every few seconds.
const latencyInterval = 2 * time.Second

// latency takes the client's measurements into the gateway's histograms (and
// the cluster statistics), so operators see the latency people actually get,
// not only what the server measures of itself.
func (c *conn) latency(req protocol.Request) {
	now := time.Now()
	if now.Sub(c.lastLatency) < latencyInterval {
		return
	}
	c.lastLatency = now
	for _, ms := range req.RTT {
		c.g.metrics.clientRTT.Observe(ms / 1000)
	}
	for _, ms := range req.Delivery {
		c.g.metrics.clientDelivery.Observe(ms / 1000)
	}
	if c.g.stats != nil {
		c.g.stats.Latency(req.RTT, req.Delivery)
	}
}

func (c *conn) history(req protocol.Request) {
	if c.subs[req.Room] == nil {
		c.reject(protocol.Errorf(protocol.CodeNotJoined, "join the room before asking for its history"), req.Room)
		return
	}
	ctx, done, err := c.g.storeHealth.work(c.ctx, c.g.opts.StoreTimeout)
	if err != nil {
		c.fail(protocol.CodeUnavailable, "room history is unavailable; try again", "", req.Room)
		return
	}
	var page store.Page
	budget := c.g.replyBudget()
	switch {
	case req.HasBefore:
		page, err = c.g.store.Before(ctx, req.Room, req.Before, req.Limit)
		page.Messages, _ = fitNewest(page.Messages, budget)
	case req.HasAfter:
		page, err = c.g.store.After(ctx, req.Room, req.After, req.Limit)
		page.Messages, _ = fitOldest(page.Messages, budget)
	default:
		page, err = c.g.store.Recent(ctx, req.Room, req.Limit)
		page.Messages, _ = fitNewest(page.Messages, budget)
	}
	if err = done(err); err != nil {
		c.g.storeFailed("read", err)
		c.g.log.Warn("history read failed", "room", req.Room, "err", err)
		c.fail(protocol.CodeUnavailable, "room history is unavailable; try again", "", req.Room)
		return
	}
	h := protocol.History{Room: req.Room, Epoch: page.Epoch, Seq: page.Seq, Messages: page.Messages}
	if req.HasBefore {
		h.Before = &req.Before
	}
	if req.HasAfter {
		h.After = &req.After
	}
	c.send(protocol.Encode(protocol.TypeHistory, h))
}
