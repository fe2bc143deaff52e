package protocol

import (
	"bytes"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Frame types a client sends.
const (
	TypeJoin    = "join"
	TypeLeave   = "leave"
	TypeSend    = "send"
	TypeHistory = "history"
	// TypeTyping is also sent by the gateway, to tell members who types.
	TypeTyping = "typing"
	// TypeLatency reports the latencies the client measured.
	TypeLatency = "latency"
	// TypeRefresh replaces the session's token before it expires.
	TypeRefresh = "refresh"
)

// Frame types a gateway sends (besides "history", which answers a request of
// the same name).
const (
	TypeWelcome  = "welcome"
	TypeJoined   = "joined"
	TypeLeft     = "left"
	TypeAck      = "ack"
	TypeMessage  = "message"
	TypeError    = "error"
	TypeStatus   = "status"
	TypeGap      = "gap"
	TypePresence = "presence"
	// TypeRefreshed answers a successful refresh.
	TypeRefreshed = "refreshed"
)

// Limits bound what DecodeRequest accepts. The zero value of a field means
// its default.
type Limits struct {
	// MaxTextBytes is the longest message text in bytes. Zero means 4000.
	MaxTextBytes int
	// MaxHistory is the largest "limit" a history request may ask for. Zero
	// means 100.
	MaxHistory int
}

// MaxText returns the text limit in bytes, with the default applied.
func (l Limits) MaxText() int {
	if l.MaxTextBytes > 0 {
		return l.MaxTextBytes
	}
	return 4000
}

func (l Limits) maxHistory() int {
	if l.MaxHistory > 0 {
		return l.MaxHistory
	}
	return 100
}

// Request is one decoded, validated client frame. Which fields carry meaning
// depends on Type; the others are zero.
type Request struct {
	Type string
	Room string

	// join: resume after Since in Epoch when HasSince is set.
	Since    int64
	HasSince bool
	Epoch    string

	// send
	Text        string
	ClientMsgID string

	// history: exactly one of HasBefore and HasAfter may be set; with neither,
	// the newest Limit messages are asked for. Limit is always in range.
	Before    int64
	HasBefore bool
	After     int64
	HasAfter  bool
	Limit     int

	// latency: samples in milliseconds, each list at most MaxLatencySamples.
	RTT, Delivery []float64

	// refresh: the new token. It is a credential: never log it.
	Token string
}

// MaxTokenBytes bounds a token in a refresh frame, as at the handshake.
const MaxTokenBytes = 8192

// MaxLatencySamples bounds each list of a latency report; a client reports
// a sample of what it measured, every few seconds.
const MaxLatencySamples = 50

// decodeLatency validates a latency report: it names no room, only lists of
// sane millisecond values.
func decodeLatency(raw rawRequest, fail func(code, format string, args ...any) (Request, error)) (Request, error) {
	for _, list := range [][]float64{raw.RTT, raw.Delivery} {
		if len(list) > MaxLatencySamples {
			return fail(CodeBadRequest, "at most %d samples per list", MaxLatencySamples)
		}
		for _, v := range list {
			if !(v >= 0 && v <= 600_000) { // also false for NaN
				return fail(CodeBadRequest, "latency samples are milliseconds from 0 to 600000")
			}
		}
	}
	return Request{Type: TypeLatency, RTT: raw.RTT, Delivery: raw.Delivery}, nil
}

// rawRequest mirrors every field a client frame may carry. Pointers tell a
// missing field from a zero one.
type rawRequest struct {
	Type        string  `json:"type"`
	Room        *string `json:"room"`
	Text        *string `json:"text"`
	ClientMsgID *string `json:"client_msg_id"`
	Since       *int64  `json:"since"`
	Epoch       *string `json:"epoch"`
	Before      *int64  `json:"before"`
	After       *int64  `json:"after"`
	Limit       *int    `json:"limit"`
	// latency
	RTT      []float64 `json:"rtt_ms"`
	Delivery []float64 `json:"delivery_ms"`
	// refresh
	Token *string `json:"token"`
}

// DecodeRequest decodes and validates one client frame. The error, if any, is
// an *Error whose Code says what was wrong; its Ref is the frame's
// client_msg_id when one could be read.
func DecodeRequest(data []byte, lim Limits) (Request, error) {
	var raw rawRequest
	err := json.Unmarshal(data, &raw)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
	case errors.As(err, &typeErr) && typeErr.Field != "":
		// A field of the wrong JSON type: the rest of the object decoded, so
		// the error can still name the frame and its client_msg_id.
		e := Errorf(CodeBadRequest, "field %q must be %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
		if raw.ClientMsgID != nil && ValidClientMsgID(*raw.ClientMsgID) {
			e.Ref = *raw.ClientMsgID
		}
		return Request{}, e
	default:
		return Request{}, Errorf(CodeBadJSON, "frame is not a JSON object")
	}

	req := Request{Type: raw.Type}
	ref := ""
	if raw.ClientMsgID != nil && ValidClientMsgID(*raw.ClientMsgID) {
		ref = *raw.ClientMsgID
	}
	fail := func(code, format string, args ...any) (Request, error) {
		e := Errorf(code, format, args...)
		e.Ref = ref
		return Request{}, e
	}

	switch raw.Type {
	case TypeJoin, TypeLeave, TypeSend, TypeHistory, TypeTyping:
	case TypeLatency:
		return decodeLatency(raw, fail)
	case TypeRefresh:
		if raw.Token == nil || *raw.Token == "" {
			return fail(CodeBadRequest, "missing field \"token\"")
		}
		if len(*raw.Token) > MaxTokenBytes {
			return fail(CodeBadRequest, "token is longer than %d bytes", MaxTokenBytes)
		}
		return Request{Type: TypeRefresh, Token: *raw.Token}, nil
	case "":
		return fail(CodeUnknownType, "missing field \"type\"")
	default:
		return fail(CodeUnknownType, "unknown frame type %q", truncate(raw.Type, 32))
	}

	if raw.Room == nil {
		return fail(CodeBadRequest, "missing field \"room\"")
	}
	if !ValidRoom(*raw.Room) {
		return fail(CodeBadRoom, "room names are 1-%d letters, digits, '-', '_' or '.', starting with a letter or digit", MaxRoomLen)
	}
	req.Room = *raw.Room

	switch raw.Type {
	case TypeJoin:
		if raw.Since != nil {
			if *raw.Since < 0 {
				return fail(CodeBadRequest, "\"since\" must be a non-negative integer")
			}
			req.Since, req.HasSince = *raw.Since, true
		}
		if raw.Epoch != nil {
			if !validToken(*raw.Epoch, maxEpochLen) && *raw.Epoch != "" {
				return fail(CodeBadRequest, "\"epoch\" is not an epoch this server issued")
			}
			req.Epoch = *raw.Epoch
		}
	case TypeSend:
		if raw.ClientMsgID == nil {
			return fail(CodeBadRequest, "missing field \"client_msg_id\"")
		}
		if ref == "" {
			return fail(CodeBadRequest, "\"client_msg_id\" must be 1-%d letters, digits or '-', '_', '.', ':'", MaxClientMsgIDLen)
		}
		req.ClientMsgID = ref
		if raw.Text == nil {
			return fail(CodeBadRequest, "missing field \"text\"")
		}
		if err := ValidText(*raw.Text, lim.MaxText()); err != nil {
			e := err.(*Error)
			e.Ref = ref
			return Request{}, e
		}
		req.Text = *raw.Text
	case TypeHistory:
		if raw.Before != nil && raw.After != nil {
			return fail(CodeBadRequest, "give \"before\" or \"after\", not both")
		}
		if raw.Before != nil {
			if *raw.Before < 1 {
				return fail(CodeBadRequest, "\"before\" must be a positive integer")
			}
			req.Before, req.HasBefore = *raw.Before, true
		}
		if raw.After != nil {
			if *raw.After < 0 {
				return fail(CodeBadRequest, "\"after\" must be a non-negative integer")
			}
			req.After, req.HasAfter = *raw.After, true
		}
		req.Limit = lim.maxHistory()
		if raw.Limit != nil {
			if *raw.Limit < 1 || *raw.Limit > lim.maxHistory() {
				return fail(CodeBadRequest, "\"limit\" must be between 1 and %d", lim.maxHistory())
			}
			req.Limit = *raw.Limit
		}
	}
	return req, nil
}

// jsonKind names a Go kind the way a JSON user thinks of it.
func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "an integer"
	case strings.HasPrefix(goKind, "float"):
		return "a number"
	case goKind == "slice":
		return "a list"
	case goKind == "ptr":
		return "a value of another type"
	}
	return "a " + goKind
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// Validation bounds that are part of the protocol, not configuration.
const (
	MaxRoomLen        = 64
	MaxClientMsgIDLen = 64
	MaxNameLen        = 32
	maxEpochLen       = 64
	maxIDLen          = 64
)

// ValidRoom reports whether name is a room name: 1 to MaxRoomLen ASCII
// letters, digits, '-', '_' or '.', starting with a letter or digit. The
// alphabet keeps room names safe in URLs, Redis keys and log lines.
func ValidRoom(name string) bool {
	if len(name) == 0 || len(name) > MaxRoomLen || !isAlnum(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// ValidClientMsgID reports whether id may be a client_msg_id: 1 to
// MaxClientMsgIDLen letters, digits, '-', '_', '.' or ':'.
func ValidClientMsgID(id string) bool {
	if len(id) == 0 || len(id) > MaxClientMsgIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' && c != ':' {
			return false
		}
	}
	return true
}

// tokenEncoding writes bytes in lower-case base32 with no padding: within
// the alphabet validToken accepts, and in ASCII order, so tokens that share a
// timestamp prefix sort by it.
var tokenEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// EncodeToken encodes b for an id or epoch this server issues (see
// validToken for what clients and broker bodies must then carry).
func EncodeToken(b []byte) string { return tokenEncoding.EncodeToString(b) }

// validToken reports whether s is 1 to max ASCII letters, digits, '-' or '_'
// (the alphabet of ids and epochs this server issues).
func validToken(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ValidText checks a message text: valid UTF-8, not blank, at most max bytes.
// The error is an *Error.
func ValidText(text string, max int) error {
	if !utf8.ValidString(text) {
		return Errorf(CodeBadRequest, "text is not valid UTF-8")
	}
	if strings.TrimSpace(text) == "" {
		return Errorf(CodeBadRequest, "text is empty")
	}
	if len(text) > max {
		return Errorf(CodeTextTooLong, "text is %d bytes; the limit is %d", len(text), max)
	}
	return nil
}

// CleanName turns a display name a user typed into one fit to show others:
// control and format characters dropped, spaces collapsed, at most
// MaxNameLen characters. It reports false when nothing is left.
func CleanName(name string) (string, bool) {
	if !utf8.ValidString(name) {
		return "", false
	}
	var b strings.Builder
	n := 0
	space := false
	for _, r := range strings.TrimSpace(name) {
		if n == MaxNameLen {
			break
		}
		switch {
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			space = true
			continue
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x200b || r == 0x200e || r == 0x200f ||
			(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0xfeff:
			// Control, zero-width and bidi-override characters let a name
			// disguise itself as another or scramble the text around it.
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
			n++
		}
		space = false
		if n < MaxNameLen {
			b.WriteRune(r)
			n++
		}
	}
	return b.String(), b.Len() > 0
}

// User identifies who sent a message.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Message is one chat message: the record the store keeps, the body the
// broker carries and, with "type":"message" added, the frame members receive.
type Message struct {
	Room string `json:"room"`
	// Epoch names the life of the room's history this Seq belongs to. It
	// changes when the history was lost, and seqs start again at 1.
	Epoch string `json:"epoch"`
	// Seq is the message's place in its room: 1, 2, 3, ... without holes.
	Seq int64 `json:"seq"`
	// ID is unique across rooms and epochs.
	ID          string    `json:"id"`
	User        User      `json:"user"`
	Text        string    `json:"text"`
	TS          time.Time `json:"ts"`
	ClientMsgID string    `json:"client_msg_id,omitempty"`
}

// messageFrame gives a Message its "type" on the wire.
type messageFrame struct {
	Type string `json:"type"`
	Message
}

// EncodeMessage encodes m as a "message" frame. The same bytes serve as the
// broker body and as the frame every member receives.
func EncodeMessage(m Message) []byte {
	return mustMarshal(messageFrame{Type: TypeMessage, Message: m})
}

// PeekRoom returns the room of a "message" or "typing" body as this
// package encodes them (type first, room second), without decoding the rest,
// so that a gateway can drop bodies for rooms it has no member of cheaply.
// ok is false for any other shape; the caller then decodes the body.
func PeekRoom(body []byte) (room string, ok bool) {
	var rest []byte
	switch {
	case bytes.HasPrefix(body, peekMessage):
		rest = body[len(peekMessage):]
	case bytes.HasPrefix(body, peekTyping):
		rest = body[len(peekTyping):]
	default:
		return "", false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || end > MaxRoomLen {
		return "", false
	}
	if room = string(rest[:end]); !ValidRoom(room) {
		return "", false
	}
	return room, true
}

var (
	peekMessage = []byte(`{"type":"message","room":"`)
	peekTyping  = []byte(`{"type":"typing","room":"`)
)

// DecodeBody decodes a broker body: a "message" frame (validated as by
// DecodeMessage), a "typing" frame (validated; its Room and User are in m), or
// any other type, which is returned with a zero Message for the caller to
// handle or drop. One decode serves all, since the types share field names.
func DecodeBody(data []byte) (typ string, m Message, err error) {
	var f messageFrame
	if err := json.Unmarshal(data, &f); err != nil {
		return "", Message{}, fmt.Errorf("decode body: %w", err)
	}
	switch f.Type {
	case TypeMessage:
		m, err := validMessage(f.Message)
		return f.Type, m, err
	case TypeTyping:
		if !ValidRoom(f.Room) || !validUser(f.User) {
			return f.Type, Message{}, errors.New("decode typing: invalid room or user")
		}
		return f.Type, Message{Room: f.Room, User: f.User}, nil
	}
	return f.Type, Message{}, nil
}

func validUser(u User) bool {
	return u.ID != "" && len(u.ID) <= 128 && len(u.Name) <= 4*MaxNameLen && utf8.ValidString(u.ID) && utf8.ValidString(u.Name)
}

// DecodeMessage decodes and validates a "message" frame, such as a broker
// body. Bodies may come from other services publishing to the exchange, so
// everything a client would rely on is checked.
func DecodeMessage(data []byte) (Message, error) {
	var f messageFrame
	if err := json.Unmarshal(data, &f); err != nil {
		return Message{}, fmt.Errorf("decode message: %w", err)
	}
	if f.Type != TypeMessage {
		return Message{}, fmt.Errorf("decode message: type is %q", truncate(f.Type, 32))
	}
	return validMessage(f.Message)
}

func validMessage(m Message) (Message, error) {
	switch {
	case !ValidRoom(m.Room):
		return Message{}, errors.New("decode message: invalid room")
	case !validToken(m.Epoch, maxEpochLen):
		return Message{}, errors.New("decode message: invalid epoch")
	case m.Seq < 1:
		return Message{}, errors.New("decode message: seq must be positive")
	case !validToken(m.ID, maxIDLen):
		return Message{}, errors.New("decode message: invalid id")
	case !validUser(m.User):
		return Message{}, errors.New("decode message: invalid user")
	case m.ClientMsgID != "" && !ValidClientMsgID(m.ClientMsgID):
		return Message{}, errors.New("decode message: invalid client_msg_id")
	}
	// A text limit far above any gateway's keeps one hostile body from
	// costing every member a megabyte.
	if err := ValidText(m.Text, 64<<10); err != nil {
		return Message{}, fmt.Errorf("decode message: %w", err)
	}
	return m, nil
}

// Welcome is the first frame of every connection: who the gateway thinks the
// client is, and which gateway it landed on.
type Welcome struct {
	User    User   `json:"user"`
	Gateway string `json:"gateway"`
	// Guest is true when the name was chosen by the client, not vouched for by
	// a token.
	Guest bool `json:"guest"`
}

// Joined answers a join: the room's epoch, its latest seq and messages.
type Joined struct {
	Room  string `json:"room"`
	Epoch string `json:"epoch"`
	// Seq is the room's latest seq when the join was served; live messages
	// that follow have higher seqs.
	Seq      int64     `json:"seq"`
	Messages []Message `json:"messages"`
	// Recovered is set only when the join asked to resume (it had "since"):
	// true when Messages hold everything after "since" (or More says the rest
	// is to be fetched with history), false when the epoch changed or the
	// missed messages are no longer retained.
	Recovered *bool `json:"recovered,omitempty"`
	// More is true when the resume did not fit in one frame: the client
	// fetches the rest with history "after".
	More bool `json:"more,omitempty"`
}

// History answers a history request. Before and After echo the request's,
// so a client with several requests out can tell which one this answers.
type History struct {
	Room     string    `json:"room"`
	Epoch    string    `json:"epoch"`
	Seq      int64     `json:"seq"`
	Before   *int64    `json:"before,omitempty"`
	After    *int64    `json:"after,omitempty"`
	Messages []Message `json:"messages"`
}

// Ack tells a sender that its message is stored and published.
type Ack struct {
	ClientMsgID string `json:"client_msg_id"`
	Room        string `json:"room"`
	Seq         int64  `json:"seq"`
	ID          string `json:"id"`
}

// Typing says that User is typing in Room. It is ephemeral: relayed through
// the broker to every gateway, never stored, and dropped first when a client
// falls behind.
type Typing struct {
	Room string `json:"room"`
	User User   `json:"user"`
}

// Gap tells a client that the gateway dropped the messages From..To of Room
// from its backlog because it was falling behind; the client fetches them with
// history "after" From-1, as after any hole in the seqs.
type Gap struct {
	Room string `json:"room"`
	From int64  `json:"from"`
	To   int64  `json:"to"`
}

// Presence is a room's member list, sent when it changes (at most about
// once a second per room) and right after a join. Members is left out for
// rooms larger than the gateway's list limit: then Count is all there is.
// Joined and Left are the users who came and went since the gateway's last
// presence frame for the room; they are empty in the frame that follows a
// join.
type Presence struct {
	Room    string `json:"room"`
	Count   int    `json:"count"`
	Members []User `json:"members,omitempty"`
	Joined  []User `json:"joined,omitempty"`
	Left    []User `json:"left,omitempty"`
}

// Refreshed answers a successful refresh: the session now lasts until
// Expires.
type Refreshed struct {
	User    User      `json:"user"`
	Expires time.Time `json:"expires"`
}

// Status tells a client about the state of its gateway.
type Status struct {
	// Degraded is true while the broker cannot carry messages: chat goes on
	// through the store, with messages arriving up to a second later.
	Degraded bool `json:"degraded"`
}

// Left confirms a leave.
type Left struct {
	Room string `json:"room"`
}

// ErrorFrame reports a problem with a client frame.
type ErrorFrame struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Ref     string `json:"ref,omitempty"`
	Room    string `json:"room,omitempty"`
}

// Encode encodes one server frame of the given type: v is one of the frame
// structs of this package, and its fields follow "type" on the wire.
func Encode(typ string, v any) []byte {
	b := mustMarshal(v)
	// Every frame struct encodes as an object, so splicing the type in front
	// of its first field avoids a wrapper type per frame.
	var out bytes.Buffer
	out.Grow(len(b) + len(typ) + 12)
	out.WriteString(`{"type":`)
	out.Write(mustMarshal(typ))
	if len(b) > 2 {
		out.WriteByte(',')
	}
	out.Write(b[1:])
	return out.Bytes()
}

// EncodeError encodes e as an "error" frame about room (which may be empty).
func EncodeError(e *Error, room string) []byte {
	return Encode(TypeError, ErrorFrame{Code: e.Code, Message: e.Message, Ref: e.Ref, Room: room})
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the frame types above are marshalled; they cannot fail.
		panic(fmt.Sprintf("protocol: marshal %T: %v", v, err))
	}
	return b
}
