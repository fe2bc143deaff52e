// Package poller tells when sockets that nobody is reading have something to
// read, so that a connection with nothing to say needs no goroutine parked in
// a read.
//
// A Go server normally keeps one goroutine blocked in Read per connection,
// and its stack (4-8 KB once it has handled a frame) is most of what an idle
// connection costs. A Poller instead watches parked sockets with one epoll
// instance and one goroutine: a connection arms its socket when it has read
// everything, lets its goroutine end, and gets a callback when bytes arrive.
// The socket stays registered with Go's own network poller as well, so
// ordinary blocking reads and writes keep working on it.
//
// Only Linux is supported; elsewhere New returns ErrUnsupported and callers
// keep a goroutine per connection.
package poller

import "errors"

// ErrUnsupported is returned by New where there is no epoll.
var ErrUnsupported = errors.New("poller: not supported on this system")

// ErrClosed is returned by Arm once the poller has stopped.
var ErrClosed = errors.New("poller: closed")

// ErrWouldBlock is returned by Peek when the socket has nothing to read, and
// by Write when the socket cannot take the bytes now.
var ErrWouldBlock = errors.New("poller: operation would block")
