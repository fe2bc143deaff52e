// Package auth decides who is on the other end of a WebSocket handshake.
//
// A deployment that knows its users has its backend sign a JWT for each of
// them (see Mint and JWT); the gateway verifies it and never sees a password.
// Guest mode, the embedded default and the mode of demos, lets a client name
// itself. New combines the two the way the configuration asks: tokens only,
// guests only, a token when the client has one and a guest otherwise, or
// neither, which refuses every handshake.
//
// User ids of the two kinds live in separate namespaces so that nobody can
// speak as somebody else across them: a guest's id is "g_" and 16
// characters, a token holder's is "u_" followed by the token's subject.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"path"
	"time"

	"github.com/parleychat/parley/internal/protocol"
)

// Identity is who a connection speaks for.
type Identity struct {
	User protocol.User
	// Guest is true when the user named itself; clients label such users.
	Guest bool
	// Rooms are the rooms the user may join, as path.Match patterns
	// ("team-*"); nil means every room. A token's "rooms" claim sets them,
	// so a backend can keep users out of rooms without the gateway knowing
	// its permission model. An empty, non-nil list allows no room.
	Rooms []string
	// Expires is when the token behind this identity stops being valid; the
	// gateway ends the session then unless the client refreshes its token,
	// so that a user the backend stops issuing tokens to is gone within one
	// token lifetime. Zero for guests, who never expire.
	Expires time.Time
}

// MayJoin reports whether the user may join room. Patterns use path.Match
// syntax; room names contain no '/', so '*' matches any run of characters.
func (id Identity) MayJoin(room string) bool {
	if id.Rooms == nil {
		return true
	}
	for _, p := range id.Rooms {
		if ok, err := path.Match(p, room); err == nil && ok {
			return true
		}
	}
	return false
}

// Error is a refused handshake or refresh: Status is the HTTP status to
// answer with (400 for a malformed request, 401 for failed authentication)
// and Message says why in words safe to show the client. Err, when set, is
// the detailed cause for the log: it may name the check that failed, which
// the client is not told, so Error() leaves it out.
type Error struct {
	Status  int
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the detailed cause, for logging.
func (e *Error) Unwrap() error { return e.Err }

func unauthorized(message string, cause error) *Error {
	return &Error{Status: http.StatusUnauthorized, Message: message, Err: cause}
}

func badRequest(message string, cause error) *Error {
	return &Error{Status: http.StatusBadRequest, Message: message, Err: cause}
}

// Guest authenticates nobody: the client picks a display name with ?name=,
// and may keep a stable user id across connections by sending the same
// secret ?key= each time (the browser client stores one). The id is a hash
// of the key, so ids shown to other users never reveal the key that claims
// them; without a key, each connection is a new guest.
type Guest struct{}

// Authenticate implements the gateway's authenticator.
func (Guest) Authenticate(r *http.Request) (Identity, error) {
	q := r.URL.Query()
	name, ok := protocol.CleanName(q.Get("name"))
	if !ok {
		return Identity{}, &Error{Status: http.StatusBadRequest, Message: "guest mode: pass a display name as ?name="}
	}
	var sum [32]byte
	if key := q.Get("key"); key != "" {
		if len(key) < 16 || len(key) > 128 {
			return Identity{}, &Error{Status: http.StatusBadRequest, Message: "guest key must be 16-128 characters"}
		}
		sum = sha256.Sum256([]byte("parley guest\x00" + key))
	} else {
		_, _ = rand.Read(sum[:])
	}
	return Identity{
		User:  protocol.User{ID: "g_" + protocol.EncodeToken(sum[:10]), Name: name},
		Guest: true,
	}, nil
}

// Config chooses how handshakes are authenticated.
type Config struct {
	// JWT configures token verification; with no key source set (see
	// JWTConfig.Enabled), tokens are not accepted.
	JWT JWTConfig
	// Guests lets a handshake that carries no token in as a guest. A
	// handshake that carries a bad token is refused all the same: it never
	// falls back to guest.
	Guests bool
}

// Authenticator is the gateway's authenticator for every mode: it verifies
// the token of a handshake that has one, lets one without a token in as a
// guest when guests are allowed, and refuses the rest with 401. It is safe
// for concurrent use.
type Authenticator struct {
	jwt    *JWT // nil when tokens are not accepted
	guests bool
}

// New builds the Authenticator that cfg describes. With no token key and
// guests off it refuses every handshake, which is what an operator who
// turned guests off before configuring tokens should get, rather than an
// open door.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{guests: cfg.Guests}
	if cfg.JWT.Enabled() {
		j, err := NewJWT(cfg.JWT)
		if err != nil {
			return nil, err
		}
		a.jwt = j
	}
	return a, nil
}

// Authenticate implements the gateway's authenticator.
func (a *Authenticator) Authenticate(r *http.Request) (Identity, error) {
	tok, has, err := requestToken(r)
	if err != nil {
		return Identity{}, err
	}
	switch {
	case has && a.jwt != nil:
		return a.jwt.Verify(r.Context(), tok)
	case a.guests:
		// Without token verification a token means nothing: the request is
		// a guest's like any other, and must name itself.
		return Guest{}.Authenticate(r)
	case a.jwt != nil:
		return Identity{}, unauthorized("authentication required: pass a token as ?token= or in an Authorization: Bearer header", nil)
	default:
		return Identity{}, unauthorized("authentication required", errors.New("guests are disabled and no token key is configured"))
	}
}

// Refresh verifies a new token sent mid-session (the "refresh" frame) and
// returns the identity the session continues with: the new expiry, rooms and
// name. The token must be for the user the session already speaks for; a
// guest session has no token to refresh.
func (a *Authenticator) Refresh(ctx context.Context, cur Identity, token string) (Identity, error) {
	if a.jwt == nil {
		return Identity{}, badRequest("this server does not accept tokens", nil)
	}
	return a.jwt.Refresh(ctx, cur, token)
}

// String describes the mode, for the startup log.
func (a *Authenticator) String() string {
	switch {
	case a.jwt != nil && a.guests:
		return fmt.Sprintf("tokens (%s) and guests", a.jwt.keys.describe())
	case a.jwt != nil:
		return fmt.Sprintf("tokens (%s)", a.jwt.keys.describe())
	case a.guests:
		return "guests"
	default:
		return "closed: every handshake is refused"
	}
}
