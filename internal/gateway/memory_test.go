package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestStormWatchReleasesOnceAStormIsOverAndAllIsQuiet(t *testing.T) {
	var w stormWatch
	var accepted, written int64
	second := func(n, wrote int64) bool {
		accepted += n
		written += wrote
		return w.observe(accepted, written)
	}
	// Ordinary arrivals are no storm, however long they go on.
	for range 5 {
		if second(stormAccepts-1, 0) {
			t.Fatal("released without a storm")
		}
	}
	// A storm: nothing while it lasts, nor while it only slows down.
	for _, n := range []int64{stormAccepts, 5 * stormAccepts, stormQuiet} {
		if second(n, 0) {
			t.Fatalf("released during the storm (%d in a second)", n)
		}
	}
	// Over, but the gateway is busy writing: not yet.
	for range 3 {
		if second(0, quietWrites) {
			t.Fatal("released while the gateway was busy")
		}
	}
	if !second(stormQuiet-1, quietWrites-1) {
		t.Fatal("no release once the storm was over and the gateway quiet")
	}
	// Once per storm.
	if second(0, 0) || second(0, 0) {
		t.Fatal("released twice for one storm")
	}
}

func TestMessagesWrittenReadsTheMetric(t *testing.T) {
	g := &Gateway{metrics: newMetrics(prometheus.NewRegistry())}
	for range 3 {
		g.metrics.framesOut.Inc()
	}
	if n := g.messagesWritten(); n != 3 {
		t.Fatalf("messagesWritten() = %d after 3 writes", n)
	}
}
