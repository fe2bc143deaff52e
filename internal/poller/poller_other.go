//go:build !linux

package poller

import (
	"context"
	"syscall"
	"time"
)

// Poller is not available on this system; see ErrUnsupported.
type Poller struct{}

// New returns ErrUnsupported.
func New() (*Poller, error) { return nil, ErrUnsupported }

// Run returns at once.
func (p *Poller) Run(ctx context.Context) {}

// Socket is never returned on this system.
type Socket struct{}

// Register returns ErrUnsupported.
func (p *Poller) Register(conn syscall.Conn, ready func()) (*Socket, error) {
	return nil, ErrUnsupported
}

// Arm returns ErrUnsupported.
func (s *Socket) Arm() error { return ErrUnsupported }

// Release does nothing.
func (s *Socket) Release() {}

// Peek returns ErrUnsupported.
func (s *Socket) Peek(buf []byte) (int, error) { return 0, ErrUnsupported }

// Discard returns ErrUnsupported.
func (s *Socket) Discard(n int) error { return ErrUnsupported }

// Write returns ErrUnsupported.
func (s *Socket) Write(b []byte) (int, error) { return 0, ErrUnsupported }

// WaitReadable returns false.
func (s *Socket) WaitReadable(d time.Duration) bool { return false }

// Batch is not available on this system; see NewBatch.
type Batch struct{}

// NewBatch returns ErrUnsupported.
func NewBatch(size int) (*Batch, error) { return nil, ErrUnsupported }

// Len returns 0.
func (b *Batch) Len() int { return 0 }

// Cap returns 0.
func (b *Batch) Cap() int { return 0 }

// Add does nothing.
func (b *Batch) Add(s *Socket, p []byte) int { return 0 }

// Write returns ErrUnsupported.
func (b *Batch) Write() error { return ErrUnsupported }

// Result returns ErrUnsupported.
func (b *Batch) Result(i int) (int, error) { return 0, ErrUnsupported }

// Reset does nothing.
func (b *Batch) Reset() {}

// Close does nothing.
func (b *Batch) Close() {}
