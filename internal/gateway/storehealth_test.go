package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Work that waits on the store when it is marked down ends then, as
// errStoreDown, rather than at its own timeout; new work is refused until the
// store answers again.
func TestStoreHealthEndsWaitingWorkWhenTheStoreGoesDown(t *testing.T) {
	h := newStoreHealth()
	ctx, done, err := h.work(t.Context(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !h.set(true) {
		t.Fatal("set(true) on a healthy store reported no change")
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("work still waiting 5s after the store was marked down")
	}
	if err := done(ctx.Err()); !errors.Is(err, errStoreDown) {
		t.Errorf("done = %v, want errStoreDown", err)
	}
	if _, _, err := h.work(t.Context(), time.Minute); !errors.Is(err, errStoreDown) {
		t.Errorf("work while down: %v, want errStoreDown", err)
	}
	if h.set(true) {
		t.Error("set(true) twice reported a change")
	}

	if !h.set(false) {
		t.Fatal("set(false) on a down store reported no change")
	}
	ctx, done, err = h.work(t.Context(), time.Minute)
	if err != nil {
		t.Fatalf("work after the store came back: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("new work ended at once: %v", context.Cause(ctx))
	}
	other := errors.New("no such room")
	if err := done(other); err != other {
		t.Errorf("done(%v) = %v, want it unchanged", other, err)
	}
}

// Work that runs out of time is the store's failure to answer, not the
// gateway's decision: its error stays a deadline, for storeFailed to count.
func TestStoreHealthWorkTimesOutOnItsOwn(t *testing.T) {
	h := newStoreHealth()
	ctx, done, err := h.work(t.Context(), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	if err := done(ctx.Err()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("done = %v, want a deadline", err)
	}
}
