package brokertest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Kind says which Handler method produced an Event.
type Kind int

// The kinds of Event, one per broker.Handler method.
const (
	Deliver Kind = iota + 1
	LinkUp
	LinkDown
)

// String returns the Handler method's name.
func (k Kind) String() string {
	switch k {
	case Deliver:
		return "Deliver"
	case LinkUp:
		return "LinkUp"
	case LinkDown:
		return "LinkDown"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Event is one call a Recorder received.
type Event struct {
	Kind Kind
	Body []byte // for Deliver
	Err  error  // for LinkDown
}

// Recorder is a broker.Handler that records every call, so that tests can
// wait for and inspect what a Broker delivered. It also notices overlapping
// calls, which the Handler contract forbids. The zero value is ready to use.
type Recorder struct {
	busy        atomic.Bool // a Handler method is running
	overlapping atomic.Int64

	mu      sync.Mutex
	events  []Event
	changed chan struct{} // closed and replaced on every event
}

// Deliver implements broker.Handler.
func (r *Recorder) Deliver(body []byte) { r.record(Event{Kind: Deliver, Body: body}) }

// LinkUp implements broker.Handler.
func (r *Recorder) LinkUp() { r.record(Event{Kind: LinkUp}) }

// LinkDown implements broker.Handler.
func (r *Recorder) LinkDown(err error) { r.record(Event{Kind: LinkDown, Err: err}) }

func (r *Recorder) record(e Event) {
	if !r.busy.CompareAndSwap(false, true) {
		r.overlapping.Add(1)
	} else {
		defer r.busy.Store(false)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// Events returns a copy of the events so far, oldest first.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Bodies returns the bodies delivered so far, oldest first.
func (r *Recorder) Bodies() [][]byte {
	var out [][]byte
	for _, e := range r.Events() {
		if e.Kind == Deliver {
			out = append(out, e.Body)
		}
	}
	return out
}

// Count returns how many events of kind k were recorded.
func (r *Recorder) Count(k Kind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

// Overlapping returns how many Handler calls began while another was still
// running; a conforming Broker never makes one.
func (r *Recorder) Overlapping() int64 { return r.overlapping.Load() }

// WaitFor waits until cond holds for the events so far, re-checking on every
// new event, and fails tb if it does not hold within timeout. what says what
// is awaited, for the failure message.
func (r *Recorder) WaitFor(tb testing.TB, timeout time.Duration, what string, cond func([]Event) bool) {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond(r.events)
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		n := len(r.events)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			tb.Fatalf("waited %v for %s; got %d events: %s", timeout, what, n, r.summary())
		}
	}
}

// summary describes the events briefly, for failure messages.
func (r *Recorder) summary() string {
	counts := map[Kind]int{}
	var last []string
	events := r.Events()
	for i, e := range events {
		counts[e.Kind]++
		if i >= len(events)-5 {
			s := e.Kind.String()
			if e.Kind == Deliver {
				s += " " + string(e.Body)
			}
			last = append(last, s)
		}
	}
	return fmt.Sprintf("LinkUp=%d LinkDown=%d Deliver=%d, last %q",
		counts[LinkUp], counts[LinkDown], counts[Deliver], last)
}
