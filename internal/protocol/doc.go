// Package protocol defines Parley's wire format: the JSON frames a client and
// a gateway exchange over a WebSocket, the message record that the store keeps
// and the broker carries, and the rules that make a frame valid.
//
// Every frame is a JSON object with a "type" field. A client sends one object
// per WebSocket frame; a gateway may pack several objects into one frame,
// separated by '\n' (encoded JSON never contains a raw newline), so clients
// split every frame they receive on '\n'.
//
// Decoding and validation live together here so that the gateway, the broker
// consumer and the HTTP API reject the same inputs with the same error codes.
// docs/protocol.md is the reader's version of this package and must be kept in
// step with it.
package protocol
