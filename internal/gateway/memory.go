package gateway

import (
	"context"
	"runtime/debug"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// After a storm of new connections (a deploy, a network blip: thousands of
// clients reconnecting within seconds) the heap holds the storm's garbage:
// handshake requests and buffers, the stacks of goroutines that served a
// first frame and ended. Go's collector makes it reusable, but the runtime
// gives it back to the system only slowly, so the gateway's RSS stays near
// the storm's peak while its connections sit idle. Once a storm is over and
// the gateway is quiet, it collects and returns that memory at once: the
// collection and the return stall allocation for a moment, which a busy
// gateway would feel in its latency (with a release allowed during W1's
// publishing, its p99.9 was 72-76 ms against 50-54), and a busy gateway's
// heap is in use anyway. In the benchmark's IDLE workload it took RSS per
// idle connection from 12.1-15.0 KB (more the faster the clients came) to
// 8.4-8.7 KB (see docs/benchmarks.md); the collection costs one full GC of
// the live heap, once per storm.
const (
	// stormAccepts is how many connections within a second make a storm.
	stormAccepts = 200
	// stormQuiet is how many in a second mean the storm is over.
	stormQuiet = 20
	// quietWrites is how many WebSocket messages written in a second leave
	// a gateway quiet enough for the release.
	quietWrites = 1000
)

// stormWatch tells, from the counts of accepted connections and of
// messages written, read once a second, when to release a storm's memory.
type stormWatch struct {
	accepted, written int64 // at the last call
	storm             bool
}

// observe takes the counts so far and reports whether, in the second since
// the last call, a storm was over and the gateway quiet.
func (w *stormWatch) observe(accepted, written int64) (release bool) {
	n, wrote := accepted-w.accepted, written-w.written
	w.accepted, w.written = accepted, written
	switch {
	case n >= stormAccepts:
		w.storm = true
	case w.storm && n < stormQuiet && wrote < quietWrites:
		w.storm = false
		return true
	}
	return false
}

// releaseAfterStorms returns a connection storm's memory to the system once
// the storm is over, until ctx ends.
func (g *Gateway) releaseAfterStorms(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	w := stormWatch{accepted: g.accepted.Load(), written: g.messagesWritten()}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !w.observe(g.accepted.Load(), g.messagesWritten()) {
			continue
		}
		start := time.Now()
		debug.FreeOSMemory()
		g.metrics.memoryReleases.Inc()
		g.log.Debug("returned a connection storm's memory to the system", "took", time.Since(start))
	}
}

// messagesWritten reads how many WebSocket messages the gateway has written
// off its metric, once a second, so that the write path counts each write
// once.
func (g *Gateway) messagesWritten() int64 {
	var m dto.Metric
	if err := g.metrics.framesOut.Write(&m); err != nil {
		return 0 // a counter's Write does not fail
	}
	return int64(m.GetCounter().GetValue())
}
