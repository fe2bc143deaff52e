package stats

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// report returns a valid report of gateway id at t with the given counters.
func report(id string, started, t time.Time, sent, delivered uint64) Report {
	return Report{
		Type: BodyType, Gateway: id, Time: t, Started: started, IntervalMS: 1000,
		Connections: 1, LocalRooms: 1, Sent: sent, Delivered: delivered,
		RTT: make([]uint64, NumBuckets), Delivery: make([]uint64, NumBuckets),
	}
}

func mustBody(t testing.TB, r Report) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestAggregator(clk *fakeClock) *Aggregator {
	return NewAggregator(AggregatorConfig{
		Gateway: "gw-a", Interval: time.Second, Window: time.Minute, Now: clk.now,
		Logger: slog.New(slog.DiscardHandler),
	})
}

func row(t testing.TB, s Snapshot, id string) GatewayRow {
	t.Helper()
	for _, r := range s.Gateways {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no gateway %q in snapshot: %+v", id, s.Gateways)
	return GatewayRow{}
}

func TestAggregatorRates(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	start := clk.t
	// Two gateways reporting every second, half a second apart: gw-1 sends
	// 10 messages a second and delivers 30, gw-2 sends 4 and delivers 8.
	var s1, s2 uint64
	for i := range 12 {
		a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, s1, 3*s1)))
		clk.advance(500 * time.Millisecond)
		a.HandleBody(BodyType, mustBody(t, report("gw-2", start, clk.t, s2, 2*s2)))
		clk.advance(500 * time.Millisecond)
		if i < 10 {
			s1 += 10
			s2 += 4
		}
	}
	s := a.Snapshot()
	if s.ServedBy != "gw-a" || s.Totals.Gateways != 2 || len(s.Gateways) != 2 {
		t.Fatalf("snapshot: served by %q, %d gateways", s.ServedBy, s.Totals.Gateways)
	}
	// The last interval had no traffic.
	if r := row(t, s, "gw-1"); r.SentPerSec == nil || *r.SentPerSec != 0 {
		t.Errorf("gw-1 rate after traffic stopped = %v, want 0", r.SentPerSec)
	}
	if s.Totals.Sent != s1+s2 || s.Totals.Delivered != 3*s1+2*s2 {
		t.Errorf("totals sent %d delivered %d, want %d %d", s.Totals.Sent, s.Totals.Delivered, s1+s2, 3*s1+2*s2)
	}
	if r := row(t, s, "gw-2"); r.Sent != s2 || r.Delivered != 2*s2 {
		t.Errorf("gw-2 counters %d %d, want %d %d", r.Sent, r.Delivered, s2, 2*s2)
	}

	// The history holds 14 messages a second while both sent, whatever the
	// phase of their reports.
	if s.Rate.StepMS != 1000 || len(s.Rate.SentPerSec) < 9 {
		t.Fatalf("rate series: %+v", s.Rate)
	}
	t.Logf("sent/s %v, delivered/s %v", s.Rate.SentPerSec, s.Rate.DeliveredPerSec)
	full := 0
	for i, v := range s.Rate.SentPerSec {
		d := s.Rate.DeliveredPerSec[i]
		if v == 14 && d == 38 {
			full++
		} else if v > 14 || d > 38 {
			t.Errorf("rate[%d] = %v sent, %v delivered: above what was sent", i, v, d)
		}
	}
	if full < 9 {
		t.Errorf("rate series %v: want at least 9 steps of 14/s", s.Rate.SentPerSec)
	}
	// Nothing is reported for steps some gateway has not covered yet.
	end := s.Rate.Start.Add(time.Duration(len(s.Rate.SentPerSec)) * time.Second)
	if end.After(clk.t) {
		t.Errorf("series ends at %v, after now %v", end, clk.t)
	}

	// While traffic flows, the current rates are per gateway and summed.
	a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, s1+5, 3*s1)))
	clk.advance(500 * time.Millisecond)
	a.HandleBody(BodyType, mustBody(t, report("gw-2", start, clk.t, s2+2, 2*s2)))
	s = a.Snapshot()
	if r := row(t, s, "gw-1"); r.SentPerSec == nil || *r.SentPerSec != 5 {
		t.Errorf("gw-1 rate = %v, want 5", r.SentPerSec)
	}
	if s.Totals.SentPerSec != 7 {
		t.Errorf("total rate = %v, want 7", s.Totals.SentPerSec)
	}
}

func TestAggregatorFirstReportHasNoRate(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	a.HandleBody(BodyType, mustBody(t, report("gw-1", clk.t, clk.t, 100, 100)))
	s := a.Snapshot()
	if r := row(t, s, "gw-1"); r.SentPerSec != nil || r.Sent != 100 {
		t.Errorf("first report: rate %v sent %d, want null and 100", r.SentPerSec, r.Sent)
	}
	if len(s.Rate.SentPerSec) != 0 {
		t.Errorf("series from one report: %v", s.Rate.SentPerSec)
	}
}

func TestAggregatorRestartedGateway(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	a.HandleBody(BodyType, mustBody(t, report("gw-1", clk.t, clk.t, 500, 500)))
	clk.advance(time.Second)
	// The gateway restarted: counters from zero, a new start time.
	a.HandleBody(BodyType, mustBody(t, report("gw-1", clk.t, clk.t, 3, 6)))
	r := row(t, a.Snapshot(), "gw-1")
	if r.Sent != 3 || r.SentPerSec == nil || *r.SentPerSec != 3 || *r.DeliveredPerSec != 6 {
		t.Errorf("after restart: sent %d rate %v/%v, want 3 and 3/6", r.Sent, r.SentPerSec, r.DeliveredPerSec)
	}
}

func TestAggregatorIgnoresRepeatsAndOldReports(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	start := clk.t
	a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, 10, 10)))
	clk.advance(time.Second)
	a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, 20, 20)))
	old := report("gw-1", start, clk.t.Add(-time.Second), 10, 10)
	a.HandleBody(BodyType, mustBody(t, old))
	a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, 20, 20)))
	if r := row(t, a.Snapshot(), "gw-1"); r.Sent != 20 || *r.SentPerSec != 10 {
		t.Errorf("sent %d rate %v, want 20 and 10", r.Sent, *r.SentPerSec)
	}
}

func TestAggregatorMergesLatency(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	r1 := report("gw-1", clk.t, clk.t, 0, 0)
	r1.RTT = hist(map[float64]uint64{12: 60})
	r1.Delivery = hist(map[float64]uint64{4: 10})
	r2 := report("gw-2", clk.t, clk.t, 0, 0)
	r2.RTT = hist(map[float64]uint64{12: 39, 250: 1})
	a.HandleBody(BodyType, mustBody(t, r1))
	a.HandleBody(BodyType, mustBody(t, r2))
	s := a.Snapshot()

	rtt := s.Totals.RTT
	if rtt.Count != 100 || rtt.P50 == nil || *rtt.P50 <= 10 || *rtt.P50 > 15 {
		t.Errorf("merged rtt = %+v, want 100 samples, p50 in (10, 15]", rtt)
	}
	// 99 of 100 samples are at most 15 ms: p99 is still in that bucket.
	if *rtt.P99 > 15 {
		t.Errorf("merged rtt p99 = %v, want <= 15", *rtt.P99)
	}
	if g2 := row(t, s, "gw-2").RTT; g2.Count != 40 || *g2.P99 <= 200 {
		t.Errorf("gw-2 rtt = %+v, want 40 samples and p99 above 200", g2)
	}
	if d := s.Totals.Delivery; d.Count != 10 || *d.P50 <= 3 || *d.P50 > 5 {
		t.Errorf("merged delivery = %+v", d)
	}
	if d := row(t, s, "gw-2").Delivery; d.Count != 0 || d.P50 != nil || d.P99 != nil {
		t.Errorf("no delivery samples: %+v, want count 0 and null quantiles", d)
	}
	// Null, not zero, on the wire.
	b, _ := json.Marshal(row(t, s, "gw-2").Delivery)
	if string(b) != `{"count":0,"p50_ms":null,"p99_ms":null}` {
		t.Errorf("empty quantiles encode as %s", b)
	}
}

func TestAggregatorBusiestRooms(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	r1 := report("gw-1", clk.t, clk.t, 0, 0)
	r1.Busiest = []RoomCount{{"general", 8}, {"dev", 5}}
	r2 := report("gw-2", clk.t, clk.t, 0, 0)
	r2.IntervalMS = 2000
	r2.Busiest = []RoomCount{{"dev", 6}, {"random", 1}}
	a.HandleBody(BodyType, mustBody(t, r1))
	a.HandleBody(BodyType, mustBody(t, r2))
	got := a.Snapshot().Busiest
	want := []RoomRate{{"dev", 11, 8}, {"general", 8, 8}, {"random", 1, 0.5}}
	if len(got) != len(want) {
		t.Fatalf("busiest = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("busiest = %+v, want %+v", got, want)
		}
	}
}

func TestAggregatorDropsSilentGateways(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	start := clk.t
	a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, 1, 1)))
	a.HandleBody(BodyType, mustBody(t, report("gw-2", start, clk.t, 2, 2)))
	for range 4 {
		clk.advance(time.Second)
		a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, 1, 1)))
	}
	// gw-2 has been silent for 4 intervals of 1s: gone.
	s := a.Snapshot()
	if s.Totals.Gateways != 1 || s.Gateways[0].ID != "gw-1" || s.Totals.Sent != 1 {
		t.Errorf("after gw-2 went silent: %+v", s.Gateways)
	}
	// Silence alone, with no other report arriving, drops gw-1 too.
	clk.advance(3*time.Second + time.Millisecond)
	if s := a.Snapshot(); s.Totals.Gateways != 0 || len(s.Gateways) != 0 {
		t.Errorf("after everyone went silent: %+v", s.Gateways)
	}
	// 2.9 intervals is not yet silence.
	a.HandleBody(BodyType, mustBody(t, report("gw-3", start, clk.t, 1, 1)))
	clk.advance(2900 * time.Millisecond)
	if s := a.Snapshot(); s.Totals.Gateways != 1 {
		t.Errorf("gw-3 dropped early: %+v", s.Gateways)
	}
}

func TestAggregatorIgnoresBadBodies(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	good := report("gw-1", clk.t, clk.t, 5, 5)
	mutate := func(f func(r *Report)) []byte {
		r := good
		r.RTT = append([]uint64(nil), good.RTT...)
		f(&r)
		return mustBody(t, r)
	}
	bad := map[string][]byte{
		"not json":        []byte(`{"type":"stats",`),
		"array":           []byte(`[1,2]`),
		"wrong type":      mutate(func(r *Report) { r.Type = "message" }),
		"no gateway":      mutate(func(r *Report) { r.Gateway = "" }),
		"control char id": mutate(func(r *Report) { r.Gateway = "gw\n1" }),
		"long id":         mutate(func(r *Report) { r.Gateway = strings.Repeat("g", 200) }),
		"no time":         mutate(func(r *Report) { r.Time = time.Time{} }),
		"zero interval":   mutate(func(r *Report) { r.IntervalMS = 0 }),
		"huge interval":   mutate(func(r *Report) { r.IntervalMS = 1 << 40 }),
		"negative conns":  mutate(func(r *Report) { r.Connections = -1 }),
		"short histogram": mutate(func(r *Report) { r.RTT = r.RTT[:3] }),
		"no histogram":    mutate(func(r *Report) { r.Delivery = nil }),
		"huge count":      mutate(func(r *Report) { r.RTT[0] = 1 << 60 }),
		"huge counter":    mutate(func(r *Report) { r.Sent = 1 << 60 }),
		"bad room":        mutate(func(r *Report) { r.Busiest = []RoomCount{{"no spaces", 1}} }),
		"repeated room":   mutate(func(r *Report) { r.Busiest = []RoomCount{{"a", 1}, {"a", 2}} }),
		"too many rooms": mutate(func(r *Report) {
			for i := range TopRooms + 1 {
				r.Busiest = append(r.Busiest, RoomCount{Room: "r" + strings.Repeat("x", i), Sends: 1})
			}
		}),
		"negative sent": []byte(strings.Replace(string(mustBody(t, good)), `"sent":5`, `"sent":-5`, 1)),
		"huge body":     []byte(`{"type":"stats","gateway":"` + strings.Repeat("x", 70<<10) + `"}`),
	}
	for name, body := range bad {
		a.HandleBody(BodyType, body)
		if s := a.Snapshot(); len(s.Gateways) != 0 {
			t.Fatalf("%s: body was taken: %+v", name, s.Gateways)
		}
	}
	// Other body types are none of the aggregator's business.
	a.HandleBody("typing", mustBody(t, good))
	if s := a.Snapshot(); len(s.Gateways) != 0 {
		t.Fatalf("a body of another type was taken")
	}
	a.HandleBody(BodyType, mustBody(t, good))
	if s := a.Snapshot(); len(s.Gateways) != 1 || s.Totals.Sent != 5 {
		t.Fatalf("the good body was not taken: %+v", s)
	}
}

func TestAggregatorBoundsGateways(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	for i := range maxGateways + 50 {
		a.HandleBody(BodyType, mustBody(t, report("gw-"+strings.Repeat("x", i%100)+string(rune('A'+i/100)), clk.t, clk.t, 1, 1)))
	}
	if n := len(a.Snapshot().Gateways); n > maxGateways {
		t.Errorf("%d gateways tracked, want at most %d", n, maxGateways)
	}
}

func TestHandler(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk)
	a.HandleBody(BodyType, mustBody(t, report("gw-1", clk.t, clk.t, 5, 7)))
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()

	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var s Snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if s.Totals.Sent != 5 || s.Totals.Delivered != 7 || len(s.Gateways) != 1 || s.Gateways[0].ID != "gw-1" {
		t.Errorf("snapshot = %s", body)
	}
	for _, key := range []string{`"busiest_rooms":[]`, `"rate":{`, `"served_by":"gw-a"`} {
		if !strings.Contains(string(body), key) {
			t.Errorf("snapshot lacks %s: %s", key, body)
		}
	}

	res, err = http.Post(srv.URL, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", res.StatusCode)
	}
}

func TestAggregatorRecentLatency(t *testing.T) {
	clk := newClock()
	a := newTestAggregator(clk) // Recent: the default minute
	start := clk.t
	r := report("gw-1", start, clk.t, 0, 0)
	r.RTT = hist(map[float64]uint64{12: 10})
	a.HandleBody(BodyType, mustBody(t, r))
	for i := 1; i <= 60; i++ {
		clk.advance(time.Second)
		a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, 0, 0)))
		s := a.Snapshot()
		if s.Totals.RTT.Count != 0 {
			t.Fatalf("after %ds the last interval has %d samples, want 0", i, s.Totals.RTT.Count)
		}
		if got := s.Totals.RTTRecent.Count; got != 10 || *s.Totals.RTTRecent.P50 <= 10 || *s.Totals.RTTRecent.P50 > 15 {
			t.Fatalf("after %ds the last minute has %+v, want the 10 samples at ~12 ms", i, s.Totals.RTTRecent)
		}
		if got := row(t, s, "gw-1").RTTRecent.Count; got != 10 {
			t.Fatalf("gw-1's last minute has %d samples, want 10", got)
		}
	}
	clk.advance(time.Second)
	a.HandleBody(BodyType, mustBody(t, report("gw-1", start, clk.t, 0, 0)))
	if s := a.Snapshot(); s.Totals.RTTRecent.Count != 0 || s.RecentMS != 60000 {
		t.Errorf("after 61s: %+v (recent_ms %d), want the samples gone", s.Totals.RTTRecent, s.RecentMS)
	}
}
