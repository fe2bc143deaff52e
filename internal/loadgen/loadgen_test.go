package loadgen

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/gateway"
	"github.com/parleychat/parley/internal/gatewaytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTestGateway runs a gateway on the embedded broker and store, with the
// send rate limit lifted, and returns its URL.
func newTestGateway(t *testing.T) string {
	t.Helper()
	return gatewaytest.Start(t, gatewaytest.Config{
		Options: gateway.Options{SendRate: 1e6, SendBurst: 1e6, MaxConnsPerIP: 1e6},
	}).URL
}

func TestRunDeliversEverythingOnce(t *testing.T) {
	url := newTestGateway(t)
	var progress bytes.Buffer
	res, err := Run(t.Context(), Config{
		Name: "test", URLs: []string{url, url}, Clients: 60, Rooms: 3, Publishers: 6, Rate: 120,
		Duration: 1500 * time.Millisecond, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 60 || res.Joined != 60 {
		t.Fatalf("connected %d joined %d, want 60", res.Connected, res.Joined)
	}
	st := res.Steps[0]
	// 120/s for 1.5s = 180 messages, each to the 20 members of its room.
	if st.Sent != 180 || st.Acked != 180 || st.Expected != 180*20 || st.Delivered != st.Expected || st.Duplicates != 0 {
		t.Fatalf("sent %d acked %d expected %d delivered %d duplicates %d; want 180, 180, 3600, 3600, 0",
			st.Sent, st.Acked, st.Expected, st.Delivered, st.Duplicates)
	}
	if st.Latency.N != uint64(st.Delivered) || st.Latency.P50 <= 0 || st.Latency.Max < st.Latency.P99 {
		t.Fatalf("latency %+v", st.Latency)
	}
	// Every delivery reaches its socket before the generator reads it.
	if st.Arrival.N != st.Latency.N || st.Arrival.P50 <= 0 || st.Arrival.P50 > st.Latency.P50 || st.Arrival.Max > st.Latency.Max {
		t.Fatalf("arrival %+v against latency %+v", st.Arrival, st.Latency)
	}
	if st.FramesPS < st.DeliveriesPS || st.WSMessagesPS <= 0 {
		t.Fatalf("frames/s %.0f, deliveries/s %.0f, ws messages/s %.0f", st.FramesPS, st.DeliveriesPS, st.WSMessagesPS)
	}
	if !strings.Contains(progress.String(), "deliv/s") {
		t.Errorf("no progress line in %q", progress.String())
	}
	var out bytes.Buffer
	if err := WriteSummary(&out, res); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&out, res); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()[bytes.LastIndexByte(bytes.TrimSpace(out.Bytes()), '\n')+1:]), &back); err != nil {
		t.Fatalf("JSON line: %v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
}

func TestRampStopsAtTheBreakPoint(t *testing.T) {
	url := newTestGateway(t)
	res, err := Run(t.Context(), Config{
		Name: "ramp", URLs: []string{url}, Clients: 10, Publishers: 2, Rate: 40, Duration: 300 * time.Millisecond,
		Ramp: true, RampFactor: 2, RampSteps: 3,
		// Nothing is that fast: the first step breaks.
		RampP99: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 1 || res.Break != 0 || !strings.Contains(res.BreakReason, "p99") {
		t.Fatalf("%d steps, break %d (%s); want the first step to break on p99", len(res.Steps), res.Break, res.BreakReason)
	}
}

func TestRampRunsStepsOnTheSameConnections(t *testing.T) {
	url := newTestGateway(t)
	res, err := Run(t.Context(), Config{
		Name: "ramp", URLs: []string{url}, Clients: 10, Publishers: 2, Rate: 20, Duration: 300 * time.Millisecond,
		Ramp: true, RampFactor: 2, RampSteps: 3, RampP99: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 3 || res.Break != -1 {
		t.Fatalf("%d steps, break %d (%s); want 3 unbroken", len(res.Steps), res.Break, res.BreakReason)
	}
	for i, st := range res.Steps {
		if st.Delivered != st.Expected || st.Expected != st.Sent*10 {
			t.Errorf("step %d: sent %d expected %d delivered %d", i, st.Sent, st.Expected, st.Delivered)
		}
	}
	if res.Steps[2].Sent <= res.Steps[0].Sent {
		t.Errorf("sends did not grow: %d then %d", res.Steps[0].Sent, res.Steps[2].Sent)
	}
}

func TestIdleRunMeasuresThisProcess(t *testing.T) {
	url := newTestGateway(t)
	// The gateway runs in this process, so its RSS is ours.
	res, err := Run(t.Context(), Config{Name: "idle", URLs: []string{url}, Clients: 50, Rooms: 5, Hold: 100 * time.Millisecond, PIDs: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Joined != 50 || len(res.Steps) != 0 || res.GatewayRSSJoinedMB <= 0 {
		t.Fatalf("joined %d, %d steps, rss %.1f MB", res.Joined, len(res.Steps), res.GatewayRSSJoinedMB)
	}
}
