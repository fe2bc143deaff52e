package protocol

import (
	"errors"
	"fmt"
)

// Error codes sent in "error" frames. They are part of the protocol: clients
// branch on them, so a code never changes meaning once released.
const (
	// CodeBadJSON: the frame is not a JSON object.
	CodeBadJSON = "bad_json"
	// CodeUnknownType: the "type" field is missing or names no client frame.
	CodeUnknownType = "unknown_type"
	// CodeBadRequest: a field is missing, has the wrong JSON type or is out of range.
	CodeBadRequest = "bad_request"
	// CodeBadRoom: the room name breaks the naming rules (see ValidRoom).
	CodeBadRoom = "bad_room"
	// CodeTextTooLong: the text is longer than the gateway's limit.
	CodeTextTooLong = "text_too_long"
	// CodeBinaryUnsupported: the client sent a binary WebSocket frame.
	CodeBinaryUnsupported = "binary_unsupported"
	// CodeNotJoined: the client sent to, or asked about, a room it has not joined.
	CodeNotJoined = "not_joined"
	// CodeTooManyRooms: the connection has joined as many rooms as it may.
	CodeTooManyRooms = "too_many_rooms"
	// CodeRateLimited: the client sends faster than its allowance; retry later.
	CodeRateLimited = "rate_limited"
	// CodeUnavailable: the message could not be stored (or history could not
	// be read). Nothing was acknowledged, though a store that answered too
	// late may still have kept it; the client retries with the same
	// client_msg_id, which is stored at most once.
	CodeUnavailable = "unavailable"
	// CodeForbidden: the user may not join the room.
	CodeForbidden = "forbidden"
	// CodeUnauthorized: a refresh token was refused (invalid, expired, or for
	// another user); the session goes on until the old token expires.
	CodeUnauthorized = "unauthorized"
	// CodeTokenExpired: the session's token expired; send "refresh" or be closed.
	CodeTokenExpired = "token_expired"
	// CodeInternal: the gateway failed in a way the client cannot fix.
	CodeInternal = "internal"
)

// Error is a problem with one client frame. It becomes an "error" frame; the
// connection stays open.
type Error struct {
	Code    string
	Message string
	// Ref echoes the client_msg_id of the offending send, if it had one, so the
	// client can match the error to its pending message.
	Ref string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the protocol code of err, or CodeInternal when err is not
// (and does not wrap) an *Error.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
