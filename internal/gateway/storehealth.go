package gateway

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errStoreDown is returned for store work refused or ended because the
// store is known not to answer.
var errStoreDown = errors.New("store is not answering")

// storeHealth is the gateway's view of whether the store answers. While it
// does not, store work fails at once; and marking it down ends the work
// already waiting on it. Without that, a send that had queued for one of
// Redis's pooled connections before anyone knew would wait out the pool's
// wait and then a new connection's handshake, each up to the read timeout,
// while the sends after it were answered at once.
type storeHealth struct {
	mu sync.Mutex
	// up ends, with errStoreDown as its cause, when the store is marked
	// down; a new one replaces it when the store answers again. So the
	// store is down exactly while up is done.
	up     context.Context
	cancel context.CancelCauseFunc
}

func newStoreHealth() *storeHealth {
	h := &storeHealth{}
	h.up, h.cancel = context.WithCancelCause(context.Background())
	return h
}

// set records whether the store is down and reports whether that changed.
func (h *storeHealth) set(down bool) (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if (h.up.Err() != nil) == down {
		return false
	}
	if down {
		h.cancel(errStoreDown)
	} else {
		h.up, h.cancel = context.WithCancelCause(context.Background())
	}
	return true
}

// work starts one piece of store work: it returns ctx bounded by timeout and
// ended early if the store is marked down meanwhile, or errStoreDown if it is
// down already. The caller must pass the work's error through done, which
// releases the context and turns an error the early end caused into
// errStoreDown.
func (h *storeHealth) work(ctx context.Context, timeout time.Duration) (context.Context, func(error) error, error) {
	h.mu.Lock()
	up := h.up
	h.mu.Unlock()
	if up.Err() != nil {
		return nil, nil, errStoreDown
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(up, func() { cancel(context.Cause(up)) })
	done := func(err error) error {
		stop()
		if err != nil && errors.Is(context.Cause(ctx), errStoreDown) {
			err = errStoreDown
		}
		cancel(nil)
		cancelTimeout()
		return err
	}
	return ctx, done, nil
}
