//go:build faults

package faults

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/internal/client"
	"github.com/parleychat/parley/internal/protocol"
)

// TestGatewayKilled kills one of 3 gateways (SIGKILL: no drain, no close
// frame) while 300 clients chat through nginx in 10 rooms. Its clients'
// connections just drop; they reconnect through nginx with full-jitter
// backoff, land on the survivors, resume with since and epoch, and write
// again the sends the dead gateway never answered. All are back within 10 s,
// their reconnects spread over time rather than in one spike, and every
// client ends with every acknowledged message of its room, once, in order.
func TestGatewayKilled(t *testing.T) {
	const (
		clients = 300
		rooms   = 10
		rate    = 50
		before  = 5 * time.Second
		after   = 15 * time.Second
		// backWithin bounds the time from the kill to the last client
		// being joined again.
		backWithin = 10 * time.Second
		victim     = 0
	)
	r := startRig(t, rigOptions{gateways: 3})
	cr := startCrowd(t, crowdOptions(t, clients, rooms, func(int) string { return r.URL() }))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Logf("clients per gateway: %v", perGateway(cr.States()))

	start := time.Now()
	stopLoad := cr.Load(rate, cr.Chatters)
	if !at(ctx, start, before) {
		t.Fatal(ctx.Err())
	}
	killed := time.Now()
	if err := r.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s killed (SIGKILL) and reaped in %v", r.GatewayID(victim), time.Since(killed).Round(time.Millisecond))

	// Wait until every client of the dead gateway is joined again.
	victimID := r.GatewayID(victim)
	wctx, wcancel := context.WithTimeout(ctx, backWithin+10*time.Second)
	err := poll(wctx, 50*time.Millisecond, func() (bool, string) {
		away := 0
		for _, s := range cr.States() {
			if s.Conns[0].Gateway == victimID && !rejoined(s, killed) {
				away++
			}
		}
		return away == 0, fmt.Sprintf("%d clients of %s not back", away, victimID)
	})
	wcancel()
	if err != nil {
		t.Error(err)
	}

	if !at(ctx, killed, after) {
		t.Fatal(ctx.Err())
	}
	sent := stopLoad()
	t.Logf("load: %d sends", sent)
	rep := settle(t, cr)
	states := cr.States()

	var affected, others, stayed int
	var firstTry, back []time.Duration
	attempts := map[int]int{}
	for _, s := range states {
		if s.Conns[0].Gateway != victimID {
			others++
			if len(s.Conns) == 1 {
				stayed++
			}
			continue
		}
		affected++
		if code := s.Conns[0].Code; code != -1 && code != websocket.StatusAbnormalClosure {
			t.Errorf("%s's connection to the killed gateway ended with %v (%s), want a dropped connection", s.Name, code, s.Conns[0].Err)
		}
		if len(s.Conns) < 2 {
			t.Errorf("%s never reconnected", s.Name)
			continue
		}
		firstTry = append(firstTry, s.Conns[1].Dialled.Sub(killed))
		i := slices.IndexFunc(s.Conns[1:], func(c ConnRecord) bool { return !c.Joined.IsZero() })
		if i < 0 {
			t.Errorf("%s never joined again: %+v", s.Name, s.Conns)
			continue
		}
		attempts[i+1]++
		back = append(back, s.Conns[1+i].Joined.Sub(killed))
	}
	t.Logf("%d clients were on %s, %d on the survivors (%d of those stayed connected)", affected, victimID, others, stayed)
	if stayed != others {
		t.Errorf("%d clients of the surviving gateways were disconnected", others-stayed)
	}
	t.Logf("reconnect attempts until joined: %v (attempts: clients)", attempts)
	t.Logf("first reconnect attempt after the kill: %v", StatsOf(firstTry))
	t.Logf("joined again after the kill: %v", StatsOf(back))
	counts, hist := Histogram(back, 100*time.Millisecond)
	t.Logf("histogram of the time from the kill to joined again (100 ms buckets):\n%s", hist)
	if s := StatsOf(back); s.Max > backWithin {
		t.Errorf("the last client was back %v after the kill, want within %v", s.Max, backWithin)
	}
	checkSpread(t, back, counts, affected)
	if rep.Gaps > 0 || rep.Dups > 0 || rep.Missing > 0 {
		t.Errorf("clients missed or repeated messages they were due (see the report)")
	}

	// Bring the dead gateway back, then everything must be as before.
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	if err := r.Restart(rctx, victim); err != nil {
		t.Fatal(err)
	}
	checkNewcomers(t, r, 15*time.Second)
	r.checkBaseline(t)
}

// TestRollingRestart restarts all 3 gateways one at a time (SIGTERM, then a
// fresh process on the same port), as a deploy does, while 300 clients chat
// through nginx in 10 rooms. Each gateway drains: readiness off, clients
// closed with 1012 in batches, sends in flight stored and confirmed. Clients
// reconnect at once (within 750 ms of jitter) through nginx to another
// gateway and resume, so that no client has a gap, ever.
func TestRollingRestart(t *testing.T) {
	const (
		clients = 300
		rooms   = 10
		rate    = 50
		between = 4 * time.Second
	)
	r := startRig(t, rigOptions{gateways: 3})
	cr := startCrowd(t, crowdOptions(t, clients, rooms, func(int) string { return r.URL() }))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Logf("clients per gateway: %v", perGateway(cr.States()))
	stopLoad := cr.Load(rate, cr.Chatters)
	for i := range r.Len() {
		if !sleepCtx(ctx, between) {
			t.Fatal(ctx.Err())
		}
		stopping := time.Now()
		if err := r.Stop(ctx, i); err != nil {
			t.Errorf("stop %s: %v", r.GatewayID(i), err)
		}
		stopped := time.Now()
		if err := r.Restart(ctx, i); err != nil {
			t.Fatalf("restart %s: %v", r.GatewayID(i), err)
		}
		t.Logf("%s: drained and exited in %v, ready again %v later; clients per gateway now %v",
			r.GatewayID(i), stopped.Sub(stopping).Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond),
			perGateway(cr.States()))
	}
	// Every gateway is back: new clients must reach all of them.
	checkNewcomers(t, r, 15*time.Second)
	if !sleepCtx(ctx, between) {
		t.Fatal(ctx.Err())
	}
	sent := stopLoad()
	t.Logf("load: %d sends", sent)
	rep := settle(t, cr)
	states := cr.States()
	if rep.Gaps > 0 {
		t.Errorf("%d gaps: a rolling restart must not leave any client a gap", rep.Gaps)
	}

	var back []time.Duration
	var moved, refused int
	codes := map[string]int{}
	var problems []string
	for _, s := range states {
		for k, c := range s.Conns[:len(s.Conns)-1] {
			if c.Joined.IsZero() {
				refused++ // a reconnect attempt that failed
				continue
			}
			codes[closeName(c.Code)]++
			if c.Code != websocket.StatusServiceRestart {
				problems = append(problems, fmt.Sprintf("%s: connection %d to %s ended with %v (%s), want 1012", s.Name, k+1, c.Gateway, c.Code, c.Err))
			}
			next := s.Conns[k+1:]
			j := slices.IndexFunc(next, func(c ConnRecord) bool { return !c.Joined.IsZero() })
			if j < 0 {
				problems = append(problems, fmt.Sprintf("%s never joined again after %s closed it", s.Name, c.Gateway))
				continue
			}
			back = append(back, next[j].Joined.Sub(c.Ended))
		}
		if len(s.Conns) > 1 {
			moved++
		}
	}
	if len(problems) > 0 {
		t.Errorf("%d problems with reconnects, e.g. %q", len(problems), problems[:min(3, len(problems))])
	}
	if refused > 0 {
		t.Errorf("%d reconnect attempts failed (first: %s)", refused, firstRefusal(states))
	}
	t.Logf("%d of %d clients were moved at least once; connections ended: %v; failed reconnect attempts: %d", moved, clients, codes, refused)
	t.Logf("from close to joined again: %v", StatsOf(back))
	_, hist := Histogram(back, 100*time.Millisecond)
	t.Logf("histogram of the time from a 1012 close to joined again (100 ms buckets):\n%s", hist)
	if s := StatsOf(back); s.Max > 5*time.Second {
		t.Errorf("a client took %v to rejoin after 1012, want within 5s", s.Max)
	}
	r.checkBaseline(t)
}

// firstRefusal describes the first failed reconnect attempt in states.
func firstRefusal(states []State) string {
	for _, s := range states {
		for _, c := range s.Conns {
			if c.Joined.IsZero() && !c.Stopped {
				return s.Name + ": " + c.Err
			}
		}
	}
	return "none"
}

// rejoined reports whether s is joined on a connection made after t.
func rejoined(s State, t time.Time) bool {
	for _, c := range s.Conns {
		if c.Dialled.After(t) && !c.Joined.IsZero() {
			return true
		}
	}
	return false
}

// perGateway counts the clients on each gateway, by their latest
// connection.
func perGateway(states []State) map[string]int {
	m := map[string]int{}
	for _, s := range states {
		m[s.Conns[len(s.Conns)-1].Gateway]++
	}
	return m
}

func closeName(code websocket.StatusCode) string {
	if code == -1 {
		return "dropped"
	}
	return fmt.Sprint(int(code))
}

// checkSpread fails the test if the reconnects came in one spike: more than
// a third of them within one 100 ms bucket, or the middle 80% of them within
// 200 ms. Full jitter over the first backoff ceiling (500 ms) puts about a
// fifth in each bucket and spreads the middle 80% over 400 ms; reconnecting
// at once would put all in one.
func checkSpread(t *testing.T, back []time.Duration, counts []int, n int) {
	t.Helper()
	if n == 0 || len(counts) == 0 {
		t.Error("no reconnects to check the spread of")
		return
	}
	peak := slices.Max(counts)
	s := StatsOf(back)
	t.Logf("reconnect spread: busiest 100 ms holds %d of %d (%.0f%%); p10-p90 %v", peak, n,
		100*float64(peak)/float64(n), (s.P90 - s.P10).Round(time.Millisecond))
	if 3*peak > n {
		t.Errorf("reconnects came in a spike: %d of %d within one 100 ms bucket", peak, n)
	}
	if s.P90-s.P10 < 200*time.Millisecond {
		t.Errorf("reconnects came in a spike: the middle 80%% within %v", s.P90-s.P10)
	}
}

// checkNewcomers checks that the load balancer gives every gateway its share
// of new clients again: it connects new clients through nginx, one every
// 50 ms, keeping them all open as real clients would, until the last 30
// are spread over every gateway (at least 5 each), and fails the test if
// that takes longer than within, or if nginx refuses a connection.
func checkNewcomers(t *testing.T, r *rig, within time.Duration) {
	t.Helper()
	const window, least = 30, 5
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var conns []*client.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var landed []string
	refused := map[string]int{}
	last := map[string]int{}
	state := func() string {
		all := map[string]int{}
		for _, g := range landed {
			all[g]++
		}
		return fmt.Sprintf("%d new clients connected (%v), the last %d landed on %v; refused: %v",
			len(landed), all, min(window, len(landed)), last, refused)
	}
	start := time.Now()
	err := poll(ctx, 50*time.Millisecond, func() (bool, string) {
		dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
		defer dcancel()
		c, resp, err := client.Dial(dctx, r.URL(), client.Options{Name: fmt.Sprintf("newcomer-%d", len(conns))})
		var w client.Frame
		if err == nil {
			conns = append(conns, c)
			w, err = c.NextOf(dctx, protocol.TypeWelcome)
		}
		if err != nil {
			if ctx.Err() == nil { // not our own deadline
				why := err.Error()
				if resp != nil {
					why = resp.Status
				}
				refused[why]++
			}
			return false, state()
		}
		landed = append(landed, w.Gateway)
		clear(last)
		for _, g := range landed[max(0, len(landed)-window):] {
			last[g]++
		}
		spread := len(landed) >= window
		for i := range r.Len() {
			spread = spread && last[r.GatewayID(i)] >= least
		}
		return spread, state()
	})
	if err != nil {
		t.Errorf("nginx does not spread new clients over the gateways: %v", err)
		return
	}
	if len(refused) > 0 {
		t.Errorf("nginx refused new clients: %s", state())
	}
	t.Logf("new clients spread over every gateway after %d connections in %v: %s", len(landed), time.Since(start).Round(time.Millisecond), state())
}
