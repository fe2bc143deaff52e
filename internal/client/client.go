// Package client is a Go client of Parley's WebSocket protocol, for tests,
// the load generator and bots. It speaks docs/protocol.md and nothing more:
// it splits server messages into frames and decodes them, and leaves
// ordering, gap repair and reconnects to its user.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/protocol"
)

// Frame is one decoded server frame. Which fields are set depends on Type.
type Frame struct {
	Type string `json:"type"`

	// message; ack, joined, history, left and error use some of its fields
	// (room, seq, id, epoch, client_msg_id), and welcome its user.
	protocol.Message

	// joined, history
	Messages  []protocol.Message `json:"messages"`
	Recovered *bool              `json:"recovered"`
	More      bool               `json:"more"`

	// welcome
	Gateway string `json:"gateway"`
	Guest   bool   `json:"guest"`

	// error
	Code         string `json:"code"`
	ErrorMessage string `json:"message"`
	Ref          string `json:"ref"`

	// Raw is the frame as received.
	Raw []byte `json:"-"`
}

// Conn is one client connection. Read (Next) from one goroutine; Send may be
// called from any.
type Conn struct {
	ws      *websocket.Conn
	pending [][]byte // frames of the last WebSocket message not yet returned
	// Messages counts WebSocket messages received, Frames the frames in
	// them: the ratio shows how much the gateway batches.
	Messages, Frames int
}

// Options are optional settings for Dial.
type Options struct {
	// Name is the guest display name; Key the guest key (see docs/protocol.md).
	Name, Key string
	// Token is a bearer token, for gateways that verify JWTs.
	Token string
	// Header is sent with the handshake (for example Origin).
	Header http.Header
	// HTTPClient dials; nil means the default.
	HTTPClient *http.Client
}

// Dial connects to a gateway's /ws endpoint; base is the gateway's URL
// (http://host:port or ws://host:port) and the handshake response is
// returned for inspection even on failure.
func Dial(ctx context.Context, base string, opts Options) (*Conn, *http.Response, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, nil, fmt.Errorf("parse gateway url: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	u.Path = "/ws"
	q := u.Query()
	if opts.Name != "" {
		q.Set("name", opts.Name)
	}
	if opts.Key != "" {
		q.Set("key", opts.Key)
	}
	u.RawQuery = q.Encode()
	h := opts.Header.Clone()
	if opts.Token != "" {
		if h == nil {
			h = http.Header{}
		}
		h.Set("Authorization", "Bearer "+opts.Token)
	}
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPHeader: h, HTTPClient: opts.HTTPClient})
	if err != nil {
		return nil, resp, fmt.Errorf("dial %s: %w", u.Redacted(), err)
	}
	ws.SetReadLimit(-1) // a gateway's batched frames may be large
	return &Conn{ws: ws}, resp, nil
}

// Send writes v (a frame as a map or struct with a "type") as one message.
func (c *Conn) Send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	return c.SendRaw(ctx, b)
}

// SendRaw writes b as one text message, as it is, valid or not.
func (c *Conn) SendRaw(ctx context.Context, b []byte) error {
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// WS returns the underlying connection, for tests that need to misbehave
// (binary frames, never reading).
func (c *Conn) WS() *websocket.Conn { return c.ws }

// Next returns the next frame, reading a WebSocket message when the last
// one is used up. An error ends the connection; websocket.CloseStatus tells
// the close code.
func (c *Conn) Next(ctx context.Context) (Frame, error) {
	for len(c.pending) == 0 {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			return Frame{}, err
		}
		c.Messages++
		c.pending = bytes.Split(data, []byte{'\n'})
	}
	raw := c.pending[0]
	c.pending = c.pending[1:]
	c.Frames++
	var f Frame
	if err := json.Unmarshal(raw, &f); err != nil {
		return Frame{}, fmt.Errorf("decode frame %q: %w", raw, err)
	}
	f.Raw = raw
	return f, nil
}

// NextOf returns the next frame of one of the given types, skipping others.
func (c *Conn) NextOf(ctx context.Context, types ...string) (Frame, error) {
	for {
		f, err := c.Next(ctx)
		if err != nil {
			return f, err
		}
		for _, t := range types {
			if f.Type == t {
				return f, nil
			}
		}
	}
}

// Join joins room and returns the joined frame, skipping frames before it
// (but failing on an error frame for the room).
func (c *Conn) Join(ctx context.Context, room string) (Frame, error) {
	if err := c.Send(ctx, map[string]any{"type": "join", "room": room}); err != nil {
		return Frame{}, err
	}
	for {
		f, err := c.NextOf(ctx, protocol.TypeJoined, protocol.TypeError)
		if err != nil {
			return f, err
		}
		if f.Type == protocol.TypeError {
			return f, fmt.Errorf("join %s: %s: %s", room, f.Code, f.ErrorMessage)
		}
		if f.Room == room {
			return f, nil
		}
	}
}

// Close closes the connection normally.
func (c *Conn) Close() error { return c.ws.Close(websocket.StatusNormalClosure, "") }

// CloseNow drops the connection without a close handshake, as a crashed
// client or a lost network would.
func (c *Conn) CloseNow() error { return c.ws.CloseNow() }
