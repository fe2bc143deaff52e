//go:build integration

package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/protocol"
)

// gatewayMetric reads one series from a gateway's /metrics.
func gatewayMetric(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("%s not in %s/metrics", series, base)
	return 0
}

// listeners joins n clients to room on url, each recording how long every
// message took from its send time (carried in the text) to arrival.
type listeners struct {
	mu        sync.Mutex
	latencies []time.Duration
	got       []int // messages received, per listener
}

func listen(ctx context.Context, t *testing.T, url, room string, n int) *listeners {
	t.Helper()
	l := &listeners{got: make([]int, n)}
	for i := range n {
		c, _, err := client.Dial(ctx, url, client.Options{Name: fmt.Sprint("listener-", i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.CloseNow() })
		if _, err := c.Join(ctx, room); err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				f, err := c.NextOf(ctx, protocol.TypeMessage)
				if err != nil {
					return
				}
				sent, err := strconv.ParseInt(strings.TrimPrefix(f.Text, "t="), 10, 64)
				if err != nil {
					continue
				}
				l.mu.Lock()
				l.latencies = append(l.latencies, time.Since(time.Unix(0, sent)))
				l.got[i]++
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// p99 returns the 99th percentile of the latencies recorded since the last
// call, and forgets them.
func (l *listeners) p99() (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lat := l.latencies
	l.latencies = nil
	if len(lat) == 0 {
		return 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100], len(lat)
}

// paced sends n messages to room at rate per second, each carrying its send
// time, and waits for every ack.
func paced(ctx context.Context, t *testing.T, c *client.Conn, room string, n int, rate float64, tag string) {
	t.Helper()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := range n {
		<-tick.C
		msg := map[string]any{"type": "send", "room": room, "text": fmt.Sprint("t=", time.Now().UnixNano()), "client_msg_id": fmt.Sprint(tag, i)}
		if err := c.Send(ctx, msg); err != nil {
			t.Fatal(err)
		}
		if f, err := c.NextOf(ctx, protocol.TypeAck, protocol.TypeError); err != nil || f.Type != protocol.TypeAck {
			t.Fatalf("paced send %d: %+v %v", i, f, err)
		}
	}
}

func TestFloodingClientIsRateLimitedThenClosedWhileOthersKeepTheirLatency(t *testing.T) {
	c := startCluster(t, 1, map[string]string{"PARLEY_SEND_RATE": "10", "PARLEY_SEND_BURST": "20"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gw := c.GatewayURL(0)
	l := listen(ctx, t, gw, "general", 20)
	sender, _, err := client.Dial(ctx, gw, client.Options{Name: "steady"})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.CloseNow()
	if _, err := sender.Join(ctx, "general"); err != nil {
		t.Fatal(err)
	}

	// Before: the steady sender's messages, 8 a second for 3 s.
	paced(ctx, t, sender, "general", 24, 8, "before-")
	before, nBefore := l.p99()

	// During: the same, while another client floods 1,000 sends a second.
	flooder, _, err := client.Dial(ctx, gw, client.Options{Name: "flooder"})
	if err != nil {
		t.Fatal(err)
	}
	defer flooder.CloseNow()
	if _, err := flooder.Join(ctx, "general"); err != nil {
		t.Fatal(err)
	}
	limited, closed := make(chan int, 1), make(chan websocket.StatusCode, 1)
	go func() {
		n := 0
		for {
			f, err := flooder.Next(ctx)
			if err != nil {
				limited <- n
				closed <- websocket.CloseStatus(err)
				return
			}
			if f.Type == protocol.TypeError && f.Code == protocol.CodeRateLimited {
				n++
			}
		}
	}()
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			<-tick.C
			if flooder.Send(ctx, map[string]any{"type": "send", "room": "general", "text": "spam", "client_msg_id": fmt.Sprint("f-", i)}) != nil {
				return // closed under it
			}
		}
	}()
	paced(ctx, t, sender, "general", 24, 8, "during-")
	during, nDuring := l.p99()

	if code := <-closed; code != websocket.StatusPolicyViolation {
		t.Fatalf("flooder ended with close %d, want 1008", code)
	}
	if n := <-limited; n == 0 {
		t.Fatal("the flooder was closed without first being told rate_limited")
	}
	t.Logf("listeners' delivery p99: before the flood %v (%d deliveries), during %v (%d deliveries)", before, nBefore, during, nDuring)
	// Every listener gets every steady message (the flooder's 20-message
	// burst and its trickle are extra, so at least 48 each). The last acks
	// may come before the last deliveries: wait for them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		short := slices.IndexFunc(l.got, func(n int) bool { return n < 48 })
		got := slices.Clone(l.got)
		l.mu.Unlock()
		if short < 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener %d got %d of the 48 steady messages (all: %v)", short, got[short], got)
		}
		time.Sleep(20 * time.Millisecond) // polling the listeners' counts
	}
	// Latency is measured, not judged by a timed test; this bound only
	// tells "kept up" from "stalled behind the flood".
	if during > time.Second {
		t.Errorf("during the flood the listeners' p99 was %v", during)
	}
}

func TestTenThousandMalformedFramesLeaveTheGatewayBounded(t *testing.T) {
	c := startCluster(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	gw := c.GatewayURL(0)
	l := listen(ctx, t, gw, "general", 5)
	sender, _, err := client.Dial(ctx, gw, client.Options{Name: "honest"})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.CloseNow()
	if _, err := sender.Join(ctx, "general"); err != nil {
		t.Fatal(err)
	}
	goroutines0 := gatewayMetric(t, gw, "go_goroutines")
	rss0 := gatewayMetric(t, gw, "process_resident_memory_bytes")

	kinds := [][]byte{
		[]byte(`{`), []byte(`[]`), []byte(`"x"`), []byte(`{"type":"nope"}`), []byte(`{"type":"join"}`),
		[]byte(`{"type":"join","room":"` + strings.Repeat("r", 100) + `"}`),
		[]byte(`{"type":"send","room":"general","text":"x"}`),
		[]byte(`{"type":"send","room":"nowhere","text":"x","client_msg_id":"a"}`),
		[]byte(`{"type":"history","room":"general","limit":-4}`),
		[]byte(`{"type":"join","room":"general","since":"x"}`),
		[]byte(strings.Repeat("{", 4000)),
		[]byte(`{"type":"latency","rtt_ms":[-1]}`),
	}
	sent, closes := 0, 0
	for sent < 10_000 {
		// An abuser is closed after a burst of rejected frames; this one
		// keeps coming back, as a determined one would.
		m, _, err := client.Dial(ctx, gw, client.Options{Name: "mallory"})
		if err != nil {
			t.Fatalf("after %d malformed frames: %v", sent, err)
		}
		go func() {
			for {
				if _, err := m.Next(ctx); err != nil {
					return
				}
			}
		}()
		for ; sent < 10_000; sent++ {
			if err := m.SendRaw(ctx, kinds[sent%len(kinds)]); err != nil {
				break
			}
		}
		closes++
		_ = m.CloseNow()
	}
	t.Logf("sent 10,000 malformed frames over %d connections", closes)

	// The honest clients still chat.
	paced(ctx, t, sender, "general", 10, 20, "after-")
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		done := !slices.ContainsFunc(l.got, func(n int) bool { return n < 10 })
		l.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listeners got %v of 10 messages", l.got)
		}
		time.Sleep(20 * time.Millisecond) // polling the listeners' counts
	}

	// And the gateway holds no more than before.
	deadline = time.Now().Add(15 * time.Second)
	var goroutines float64
	for {
		goroutines = gatewayMetric(t, gw, "go_goroutines")
		if goroutines <= goroutines0+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling until connections wind down
	}
	rss := gatewayMetric(t, gw, "process_resident_memory_bytes")
	t.Logf("gateway goroutines %v -> %v, RSS %.1f -> %.1f MiB", goroutines0, goroutines, rss0/(1<<20), rss/(1<<20))
	if goroutines > goroutines0+2 {
		t.Errorf("goroutines grew from %v to %v", goroutines0, goroutines)
	}
	if rss > rss0+64<<20 {
		t.Errorf("RSS grew from %.1f to %.1f MiB", rss0/(1<<20), rss/(1<<20))
	}
}
