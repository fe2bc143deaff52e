//go:build integration

package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/stats"
)

// fetchStats GETs a gateway's /api/stats.
func fetchStats(ctx context.Context, base string) (stats.Snapshot, error) {
	var s stats.Snapshot
	body, err := httpGet(ctx, base+"/api/stats")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("decode /api/stats: %w: %.200s", err, body)
	}
	return s, nil
}

// sendsCounted reads parley_sends_total, the gateway's own count of the
// messages its clients sent, from its /metrics.
func sendsCounted(ctx context.Context, base string) (uint64, error) {
	body, err := httpGet(ctx, base+"/metrics")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "parley_sends_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("parley_sends_total %q: %w", v, err)
			}
			return uint64(f), nil
		}
	}
	return 0, fmt.Errorf("no parley_sends_total in %s/metrics", base)
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	return body, nil
}

// TestClusterStatsAgreeWithEachGatewaysCounters: three gateways, a client on
// each sending its own number of messages into a room they all share. Once
// the reports have settled, GET /api/stats on every gateway lists all three
// gateways with the very counts each gateway's /metrics shows
// (parley_sends_total), totals that are their sum, the messages each
// delivered (every message reaches the three members, one per gateway) and
// the connections.
func TestClusterStatsAgreeWithEachGatewaysCounters(t *testing.T) {
	c := startCluster(t, 3, map[string]string{"PARLEY_STATS_INTERVAL": "500ms"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const room = "stats"
	perGateway := []int{4, 7, 11}
	total := 0
	for _, n := range perGateway {
		total += n
	}

	// One member per gateway, dialled directly (not through nginx), all in
	// the room before anyone sends.
	conns := make([]*client.Conn, c.Len())
	for i := range conns {
		conn, _, err := client.Dial(ctx, c.GatewayURL(i), client.Options{Name: fmt.Sprintf("member-%d", i)})
		if err != nil {
			t.Fatalf("dial gateway %d: %v", i, err)
		}
		t.Cleanup(func() { _ = conn.CloseNow() })
		if _, err := conn.Join(ctx, room); err != nil {
			t.Fatalf("join on gateway %d: %v", i, err)
		}
		conns[i] = conn
	}
	// Each reads until it has every message; each sends its share.
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(conns))
	for i, conn := range conns {
		wg.Go(func() {
			seen := map[int64]bool{}
			acks := 0
			for len(seen) < total || acks < perGateway[i] {
				f, err := conn.NextOf(ctx, protocol.TypeMessage, protocol.TypeAck, protocol.TypeError)
				if err != nil {
					errs <- fmt.Errorf("member %d after %d messages: %w", i, len(seen), err)
					return
				}
				switch f.Type {
				case protocol.TypeMessage:
					seen[f.Seq] = true
				case protocol.TypeAck:
					acks++
				default:
					errs <- fmt.Errorf("member %d: error frame %s", i, f.Raw)
					return
				}
			}
		})
	}
	for i, conn := range conns {
		for k := range perGateway[i] {
			if err := conn.Send(ctx, map[string]any{"type": "send", "room": room, "text": fmt.Sprintf("m %d.%d", i, k),
				"client_msg_id": fmt.Sprintf("s-%d-%d", i, k)}); err != nil {
				t.Fatalf("send on gateway %d: %v", i, err)
			}
		}
		// A latency report, which the statistics take too.
		if err := conn.Send(ctx, map[string]any{"type": "latency", "rtt_ms": []float64{10 + float64(i)}, "delivery_ms": []float64{2}}); err != nil {
			t.Fatalf("latency on gateway %d: %v", i, err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Each gateway's own count of what its client sent.
	own := map[string]uint64{}
	var sum uint64
	for i := range c.Len() {
		n, err := sendsCounted(ctx, c.GatewayURL(i))
		if err != nil {
			t.Fatal(err)
		}
		if n != uint64(perGateway[i]) {
			t.Fatalf("gateway %s counted %d sends, its client sent %d", c.GatewayID(i), n, perGateway[i])
		}
		own[c.GatewayID(i)] = n
		sum += n
	}

	agrees := func(s stats.Snapshot) error {
		if s.Totals.Gateways != c.Len() || len(s.Gateways) != c.Len() {
			return fmt.Errorf("%d gateways reported", len(s.Gateways))
		}
		for _, g := range s.Gateways {
			want, ok := own[g.ID]
			switch {
			case !ok:
				return fmt.Errorf("unknown gateway %q", g.ID)
			case g.Sent != want:
				return fmt.Errorf("%s: sent %d, its /metrics says %d", g.ID, g.Sent, want)
			case g.Delivered != uint64(total):
				return fmt.Errorf("%s: delivered %d, want %d", g.ID, g.Delivered, total)
			case g.Connections != 1:
				return fmt.Errorf("%s: %d connections, want 1", g.ID, g.Connections)
			}
		}
		if s.Totals.Sent != sum || s.Totals.Delivered != uint64(total*c.Len()) || s.Totals.Connections != c.Len() {
			return fmt.Errorf("totals: sent %d (want %d), delivered %d (want %d), connections %d",
				s.Totals.Sent, sum, s.Totals.Delivered, total*c.Len(), s.Totals.Connections)
		}
		return nil
	}
	for i := range c.Len() {
		var last error
		deadline := time.Now().Add(30 * time.Second)
		for {
			s, err := fetchStats(ctx, c.GatewayURL(i))
			if err == nil {
				err = agrees(s)
			}
			if err == nil {
				b, _ := json.Marshal(s.Totals)
				t.Logf("/api/stats on %s: totals %s", c.GatewayID(i), b)
				break
			}
			last = err
			if time.Now().After(deadline) {
				t.Fatalf("/api/stats on %s never agreed with the gateways' own counters: %v", c.GatewayID(i), last)
			}
			time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
		}
	}

	// The same through nginx, and the page that shows it.
	if _, err := fetchStats(ctx, c.URL()); err != nil {
		t.Errorf("through nginx: %v", err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL()+"/stats", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `id="rate-chart"`) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("GET /stats: %s, CSP %q, page %.100s", resp.Status, resp.Header.Get("Content-Security-Policy"), page)
	}
}
