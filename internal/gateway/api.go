package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
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
		g.log.Warn("api: history read failed", "room", room, "err", err)
		writeAPIError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "room history is unavailable; try again")
		return
	}
	writeJSON(w, http.StatusOK, protocol.History{Room: room, Epoch: page.Epoch, Seq: page.Seq, Messages: page.Messages})
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
