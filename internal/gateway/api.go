package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
)

// maxAPIRooms bounds GET /api/rooms; the list is for people to browse.
const maxAPIRooms = 200

// roomList is the body of GET /api/rooms.
type roomList struct {
	Rooms []roomEntry `json:"rooms"`
}

type roomEntry struct {
	Room         string    `json:"room"`
	Seq          int64     `json:"seq"`
	LastActivity time.Time `json:"last_activity"`
}

// serveRooms lists rooms with history, most recently active first.
func (g *Gateway) serveRooms(w http.ResponseWriter, r *http.Request) {
	limit, ok := queryInt(w, r, "limit", 1, maxAPIRooms, 50)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.opts.StoreTimeout)
	defer cancel()
	rooms, err := g.store.Rooms(ctx, int(limit))
	if err != nil {
		g.storeFailed("read", err)
		g.log.Warn("api: list rooms failed", "err", err)
		writeAPIError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "room list is unavailable; try again")
		return
	}
	out := roomList{Rooms: make([]roomEntry, len(rooms))}
	for i, ri := range rooms {
		out.Rooms[i] = roomEntry{Room: ri.Room, Seq: ri.Seq, LastActivity: ri.LastActivity}
	}
	writeJSON(w, http.StatusOK, out)
}

// serveMessages pages through a room's history: ?before=N or ?after=N (not
// both) and ?limit= (1-100). The answer has the shape of a "history" frame.
func (g *Gateway) serveMessages(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	if !protocol.ValidRoom(room) {
		writeAPIError(w, http.StatusBadRequest, protocol.CodeBadRoom, "invalid room name")
		return
	}
	q := r.URL.Query()
	if q.Has("before") && q.Has("after") {
		writeAPIError(w, http.StatusBadRequest, protocol.CodeBadRequest, "give before or after, not both")
		return
	}
	limit, ok := queryInt(w, r, "limit", 1, 100, 50)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.opts.StoreTimeout)
	defer cancel()
	var page store.Page
	var err error
	switch {
	case q.Has("before"):
		before, ok := queryInt(w, r, "before", 1, 1<<53, 0)
		if !ok {
			return
		}
		page, err = g.store.Before(ctx, room, before, int(limit))
	case q.Has("after"):
		after, ok := queryInt(w, r, "after", 0, 1<<53, 0)
		if !ok {
			return
		}
		page, err = g.store.After(ctx, room, after, int(limit))
	default:
		page, err = g.store.Recent(ctx, room, int(limit))
	}
	if err != nil {
		g.storeFailed("read", err)
		g.log.Warn("api: history read failed", "room", room, "err", err)
		writeAPIError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "room history is unavailable; try again")
		return
	}
	writeJSON(w, http.StatusOK, protocol.History{Room: room, Epoch: page.Epoch, Seq: page.Seq, Messages: page.Messages})
}

// servePresence answers who is in a room, across the cluster: the list up
// to the gateway's list limit, the count alone above it.
func (g *Gateway) servePresence(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	if !protocol.ValidRoom(room) {
		writeAPIError(w, http.StatusBadRequest, protocol.CodeBadRoom, "invalid room name")
		return
	}
	if g.presence == nil {
		writeAPIError(w, http.StatusNotFound, protocol.CodeBadRequest, "presence is not kept by this gateway")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.opts.StoreTimeout)
	defer cancel()
	snap, err := g.presence.snapshot(ctx, room)
	if err != nil {
		g.metrics.storeErrors.WithLabelValues("presence").Inc()
		g.log.Warn("api: presence read failed", "room", room, "err", err)
		writeAPIError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "presence is unavailable; try again")
		return
	}
	writeJSON(w, http.StatusOK, protocol.Presence{Room: room, Count: snap.Count, Members: snap.Members})
}

// queryInt reads an integer query parameter in [lo, hi], or def when it is
// absent; on a bad value it answers 400 and reports false.
func queryInt(w http.ResponseWriter, r *http.Request, name string, lo, hi, def int64) (int64, bool) {
	s := r.URL.Query().Get(name)
	if s == "" && !r.URL.Query().Has(name) {
		return def, true
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		writeAPIError(w, http.StatusBadRequest, protocol.CodeBadRequest,
			name+" must be an integer from "+strconv.FormatInt(lo, 10)+" to "+strconv.FormatInt(hi, 10))
		return 0, false
	}
	return v, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeAPIError answers with the error object the WebSocket protocol uses,
// so clients handle both the same way.
func writeAPIError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, protocol.ErrorFrame{Code: code, Message: message})
}

// maxAPIBody bounds a POST to the server API.
const maxAPIBody = 64 << 10

// postRequest is the body of POST /api/rooms/{room}/messages.
type postRequest struct {
	Text string `json:"text"`
	// User names the bot or system user the message is from. Its id is
	// prefixed "b_", so a backend can never speak as a person (guests are
	// "g_", token users "u_").
	User        *protocol.User `json:"user"`
	ClientMsgID string         `json:"client_msg_id"`
}

// servePost lets a backend post to a room through the same path as a
// person's send (store, then broker): its message is numbered, kept and
// delivered like any other. It needs the API key.
func (g *Gateway) servePost(w http.ResponseWriter, r *http.Request) {
	if g.opts.APIKey == "" {
		writeAPIError(w, http.StatusNotFound, protocol.CodeForbidden, "the server API is disabled (set PARLEY_API_KEY)")
		return
	}
	if !g.apiKeyOK(r) {
		g.log.Info("server API: bad or missing API key", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
		writeAPIError(w, http.StatusUnauthorized, protocol.CodeForbidden, "missing or wrong API key")
		return
	}
	room := r.PathValue("room")
	if !protocol.ValidRoom(room) {
		writeAPIError(w, http.StatusBadRequest, protocol.CodeBadRoom, "invalid room name")
		return
	}
	var req postRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err := dec.Decode(&req); err != nil {
		writeAPIError(w, http.StatusBadRequest, protocol.CodeBadJSON, "body must be a JSON object with a text")
		return
	}
	if err := protocol.ValidText(req.Text, g.opts.Limits.MaxText()); err != nil {
		e := err.(*protocol.Error)
		writeAPIError(w, http.StatusBadRequest, e.Code, e.Message)
		return
	}
	if req.ClientMsgID != "" && !protocol.ValidClientMsgID(req.ClientMsgID) {
		writeAPIError(w, http.StatusBadRequest, protocol.CodeBadRequest, "client_msg_id must be 1-64 letters, digits or '-', '_', '.', ':'")
		return
	}
	user := protocol.User{ID: "b_api", Name: "API"}
	if req.User != nil {
		name, ok := protocol.CleanName(req.User.Name)
		if !protocol.ValidClientMsgID(req.User.ID) || !ok {
			writeAPIError(w, http.StatusBadRequest, protocol.CodeBadRequest, "user needs an id (1-64 letters, digits or '-', '_', '.', ':') and a name")
			return
		}
		user = protocol.User{ID: "b_" + req.User.ID, Name: name}
	}
	ack, err := g.post(r.Context(), protocol.Message{Room: room, User: user, Text: req.Text, ClientMsgID: req.ClientMsgID})
	if err != nil {
		g.log.Warn("server API: post failed", "room", room, "err", err)
		writeAPIError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "the message could not be stored; retry with the same client_msg_id")
		return
	}
	writeJSON(w, http.StatusCreated, ack)
}

// apiKeyOK checks the bearer key in constant time, so that response times do
// not reveal how much of a guess was right.
func (g *Gateway) apiKeyOK(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(g.opts.APIKey))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
