// Package auth decides who is on the other end of a WebSocket handshake.
//
// Guest is the mode of the embedded default and of demos: the client names
// itself. (JWT verification for deployments that know their users comes with
// its own authenticator of the same shape.)
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"net/http"

	"github.com/parleychat/parley/internal/protocol"
)

// Identity is who a connection speaks for.
type Identity struct {
	User protocol.User
	// Guest is true when the user named itself; clients label such users.
	Guest bool
}

// Error is a refused handshake: Status is the HTTP status to answer with
// (400 for a malformed request, 401 for failed authentication), Message says
// why, for the client and the log.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Guest authenticates nobody: the client picks a display name with ?name=,
// and may keep a stable user id across connections by sending the same
// secret ?key= each time (the browser client stores one). The id is a hash
// of the key, so ids shown to other users never reveal the key that claims
// them; without a key, each connection is a new guest.
type Guest struct{}

// guestIDEncoding is lower-case base32, the alphabet of the protocol's ids.
var guestIDEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

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
		User:  protocol.User{ID: "g_" + guestIDEncoding.EncodeToString(sum[:10]), Name: name},
		Guest: true,
	}, nil
}
