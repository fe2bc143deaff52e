//go:build faults

package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBrokerConnectionsClosed cuts every RabbitMQ connection of the cluster
// five times during a 30 s run of 100 messages/s across 2 gateways and 50
// clients. The gateways reconnect both links (full-jitter backoff, fresh
// queues), repair what their queues missed from the store, and publish again
// what was awaiting a confirm; clients notice nothing: they stay connected,
// every send is answered, and every acknowledged message reaches every one
// of them once, in seq order.
func TestBrokerConnectionsClosed(t *testing.T) {
	const (
		clients  = 50
		rate     = 100 // messages per second, in all
		duration = 30 * time.Second
		closes   = 5
		// readyWithin bounds the time from a close to every gateway being
		// ready again with both links reconnected.
		readyWithin = 5 * time.Second
	)
	r := startRig(t, rigOptions{gateways: 2})
	cr := startCrowd(t, crowdOptions(t, clients, 1, func(i int) string { return r.GatewayURL(i % 2) }))

	ctx, cancel := context.WithTimeout(context.Background(), duration+time.Minute)
	defer cancel()
	w := r.watchReady(t)
	start := time.Now()
	stopLoad := cr.Load(rate, cr.Chatters)
	var recoveries []time.Duration
	for k := range closes {
		if !at(ctx, start, time.Duration(3+5*k)*time.Second) {
			t.Fatal(ctx.Err())
		}
		closed := time.Now()
		mustCtl(t, "close_all_connections", "-p", r.vhost, fmt.Sprintf("parley fault test: close %d of %d", k+1, closes))
		conns, err := r.waitRelinked(closed, readyWithin+5*time.Second)
		if err != nil {
			t.Errorf("close %d: %v", k+1, err)
			continue
		}
		// Ready again: when /readyz answered 200 after the outage, or, if
		// the poller never caught the gateway unready (it reconnected
		// within one poll), when RabbitMQ saw its last link connect.
		var took time.Duration
		var each []string
		for i := range r.Len() {
			down, up, ok := w.outage(i, closed, time.Now())
			if !ok {
				up = r.relinkedAt(i, conns)
			}
			took = max(took, up.Sub(closed))
			each = append(each, fmt.Sprintf("%s unready at +%v, ready at +%v",
				r.GatewayID(i), durationOr(down.Sub(closed), ok), up.Sub(closed).Round(time.Millisecond)))
		}
		recoveries = append(recoveries, took)
		t.Logf("close %d (times from the start of rabbitmqctl, which takes 0.3-2.5 s to act): %s", k+1, strings.Join(each, "; "))
		if took > readyWithin {
			t.Errorf("close %d: ready again after %v, want within %v", k+1, took, readyWithin)
		}
	}
	if !at(ctx, start, duration) {
		t.Fatal(ctx.Err())
	}
	sent := stopLoad()
	t.Logf("load: %d sends in %v; recovery after each close: %v", sent, duration, recoveries)

	rep := settle(t, cr)
	if rep.StayedConnected != clients {
		t.Errorf("%d of %d clients stayed connected, want all: a broker fault must not disconnect clients", rep.StayedConnected, clients)
	}
	r.checkBaseline(t)
}

// durationOr renders d rounded, or "not seen" when !ok.
func durationOr(d time.Duration, ok bool) string {
	if !ok {
		return "not seen"
	}
	return d.Round(time.Millisecond).String()
}

// TestBrokerStopped stops the RabbitMQ application for 10 s under load
// (2 gateways, 50 clients, 100 messages/s). Chat goes on through the store:
// sends are stored and acknowledged, every gateway reads its rooms from
// Redis while its broker links are down, and clients are told the chat is
// degraded, then that it is not. When RabbitMQ is back the gateways
// reconnect, publish again what they stored meanwhile, and every client
// ends with every acknowledged message, once, in seq order, without having
// been disconnected.
func TestBrokerStopped(t *testing.T) {
	const (
		clients = 50
		rate    = 100
		before  = 5 * time.Second
		outage  = 10 * time.Second
		after   = 10 * time.Second
	)
	r := startRig(t, rigOptions{gateways: 2})
	cr := startCrowd(t, crowdOptions(t, clients, 1, func(i int) string { return r.GatewayURL(i % 2) }))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	start := time.Now()
	stopLoad := cr.Load(rate, cr.Chatters)
	if !at(ctx, start, before) {
		t.Fatal(ctx.Err())
	}
	stopping := time.Now()
	stopRabbit(t)
	stopped := time.Now()
	t.Logf("rabbitmqctl stop_app took %v", stopped.Sub(stopping).Round(time.Millisecond))
	took, err := r.waitAll(5*time.Second, "unready", func(i int) bool { return !r.ready(i) })
	if err != nil {
		t.Errorf("gateways still ready with RabbitMQ stopped: %v", err)
	}
	t.Logf("every gateway unready %v after stop_app returned", took.Round(time.Millisecond))

	if !at(ctx, stopped, outage) {
		t.Fatal(ctx.Err())
	}
	starting := time.Now()
	mustCtl(t, "start_app")
	awaitRabbit(t)
	started := time.Now()
	t.Logf("RabbitMQ stopped for %v; start_app and await_startup took %v",
		starting.Sub(stopped).Round(time.Millisecond), started.Sub(starting).Round(time.Millisecond))
	if _, err := r.waitRelinked(starting, 30*time.Second); err != nil {
		t.Fatalf("after start_app: %v", err)
	}
	readyAt := time.Now()
	t.Logf("every gateway ready with fresh links %v after RabbitMQ was up", readyAt.Sub(started).Round(time.Millisecond))

	if !at(ctx, started, after) {
		t.Fatal(ctx.Err())
	}
	t.Logf("load: %d sends", stopLoad())
	// Messages acknowledged while RabbitMQ was away (after the gateways
	// noticed) must have reached every member through the store before it
	// was back.
	checkChatWentOn(t, r, cr, clients, "the outage", stopped.Add(time.Second), stopping, starting)
}

// TestBrokerMemoryAlarm sets off RabbitMQ's memory alarm under load (2
// gateways, 50 clients, 100 messages/s): RabbitMQ blocks every publishing
// connection. Gateways consume on a connection of their own, which the alarm
// does not block, so nothing deadlocks; sends are stored and acknowledged,
// rooms are served from the store, clients are told the chat is degraded,
// and when the alarm clears everything is as before.
func TestBrokerMemoryAlarm(t *testing.T) {
	const (
		clients = 50
		rate    = 100
		before  = 4 * time.Second
		alarm   = 8 * time.Second
		after   = 8 * time.Second
	)
	r := startRig(t, rigOptions{gateways: 2})
	if a, err := alarms(); err != nil || a != "[]" {
		t.Fatalf("RabbitMQ has alarms before the test: %q, %v", a, err)
	}
	cr := startCrowd(t, crowdOptions(t, clients, 1, func(i int) string { return r.GatewayURL(i % 2) }))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	prev := watermark(t)
	restore := append([]string{"set_vm_memory_high_watermark"}, prev...)
	disarm := deadMan(t, 90*time.Second, rabbitmqctlBin()+" "+strings.Join(restore, " "))
	restored := false
	t.Cleanup(func() {
		defer disarm()
		if !restored {
			if _, err := ctl(60*time.Second, restore...); err != nil {
				t.Errorf("restore the memory watermark: %v", err)
			}
		}
	})

	start := time.Now()
	stopLoad := cr.Load(rate, cr.Chatters)
	if !at(ctx, start, before) {
		t.Fatal(ctx.Err())
	}
	raising := time.Now()
	mustCtl(t, "set_vm_memory_high_watermark", "0.0000001")
	if err := waitAlarm(true); err != nil {
		t.Fatal(err)
	}
	alarmOn := time.Now()
	t.Logf("memory alarm on %v after set_vm_memory_high_watermark (watermark was %s)", alarmOn.Sub(raising).Round(time.Millisecond), strings.Join(prev, " "))
	took, err := r.waitAll(alarm, "unready", func(i int) bool { return !r.ready(i) })
	if err != nil {
		t.Errorf("gateways did not notice the alarm: %v", err)
	} else {
		t.Logf("every gateway unready (publish link blocked) %v after the alarm", took.Round(time.Millisecond))
	}

	if !at(ctx, alarmOn, alarm) {
		t.Fatal(ctx.Err())
	}
	clearing := time.Now()
	mustCtl(t, restore...)
	restored = true
	if err := waitAlarm(false); err != nil {
		t.Fatal(err)
	}
	alarmOff := time.Now()
	took, err = r.waitAll(30*time.Second, "ready", r.ready)
	if err != nil {
		t.Fatalf("after the alarm: %v", err)
	}
	t.Logf("alarm cleared %v after restoring the watermark; every gateway ready %v later",
		alarmOff.Sub(clearing).Round(time.Millisecond), took.Round(time.Millisecond))

	if !at(ctx, alarmOff, after) {
		t.Fatal(ctx.Err())
	}
	t.Logf("load: %d sends", stopLoad())
	// Messages acknowledged during the alarm must have reached every member
	// through the store before it cleared. (A publish written just as
	// RabbitMQ blocked the connection waits for its confirm up to the
	// publish timeout before the message is acknowledged anyway.)
	checkChatWentOn(t, r, cr, clients, "the alarm", alarmOn.Add(time.Second), raising, clearing)
}

// waitAlarm waits until RabbitMQ's memory alarm is on (or off).
func waitAlarm(on bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return poll(ctx, 100*time.Millisecond, func() (bool, string) {
		a, err := alarms()
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(a, "memory") == on, "alarms: " + a
	})
}

// checkChatWentOn checks what a broker fault must leave behind once the load
// has stopped: every client stayed connected; no send was refused (Redis
// was up, and a stored message is acknowledged); the messages acknowledged
// between ackedFrom and a second before back reached every member before
// back, that is through the store; clients were told the chat was degraded
// after began and recovered after back; and the gateways are back to their
// baseline.
func checkChatWentOn(t *testing.T, r *rig, cr *Crowd, clients int, what string, ackedFrom, began, back time.Time) {
	t.Helper()
	rep := settle(t, cr)
	if rep.StayedConnected != clients {
		t.Errorf("%d of %d clients stayed connected, want all", rep.StayedConnected, clients)
	}
	if rep.Unavailable > 0 {
		t.Errorf("%d sends answered unavailable with Redis up: a stored message must be acknowledged", rep.Unavailable)
	}
	states := cr.States()
	n, lat, late := deliveredBy(states, ackedFrom, back.Add(-time.Second), back)
	t.Logf("during %s: %d messages acknowledged, delivered to every member before it ended: %v", what, n, lat)
	if n == 0 {
		t.Errorf("no message was acknowledged during %s: chat did not go on", what)
	}
	if len(late) > 0 {
		t.Errorf("%d deliveries of messages acknowledged during %s came only after it ended, e.g. %q", len(late), what, late[:min(3, len(late))])
	}
	checkDegraded(t, states, began, back)
	r.checkBaseline(t)
}

// deliveredBy looks at the messages acknowledged between from and to and
// returns how many there were, how long they took to reach the members of
// their rooms, and which deliveries were missing at by.
func deliveredBy(states []State, from, to, by time.Time) (n int, lat Stats, late []string) {
	var ds []time.Duration
	for _, s := range states {
		for _, res := range s.Results {
			if res.Code != "" || res.Answered.Before(from) || res.Answered.After(to) {
				continue
			}
			n++
			for _, m := range states {
				if m.Room != res.Room {
					continue
				}
				seen, ok := m.Seen[res.ID]
				if !ok || seen.At.After(by) {
					late = append(late, fmt.Sprintf("%s (seq %d, from %s on %s, acked %+v after the fault ended) to %s on %s, shown %+v after (%s)",
						res.ClientMsgID, res.Seq, s.Name, s.Conns[0].Gateway, res.Answered.Sub(by).Round(time.Millisecond),
						m.Name, m.Conns[0].Gateway, seen.At.Sub(by).Round(time.Millisecond), seen.How))
					continue
				}
				ds = append(ds, seen.At.Sub(res.Created))
			}
		}
	}
	return n, StatsOf(ds), late
}

// checkDegraded checks that every client was told the chat was degraded
// after from and before to, and then, last, that it was not; it logs how
// long the news took.
func checkDegraded(t *testing.T, states []State, from, to time.Time) {
	t.Helper()
	var toldDown, toldUp []time.Duration
	bad := 0
	for _, s := range states {
		var down, up time.Time
		for _, st := range s.Statuses {
			switch {
			case st.Degraded && down.IsZero() && st.At.After(from) && st.At.Before(to):
				down = st.At
			case !st.Degraded && !down.IsZero() && st.At.After(down):
				up = st.At
			}
		}
		last := len(s.Statuses) > 0 && !s.Statuses[len(s.Statuses)-1].Degraded
		if down.IsZero() || up.IsZero() || !last {
			bad++
			if bad <= 3 {
				t.Errorf("%s: status frames %v: want degraded:true during the fault, then degraded:false", s.Name, s.Statuses)
			}
			continue
		}
		toldDown = append(toldDown, down.Sub(from))
		toldUp = append(toldUp, up.Sub(to))
	}
	if bad > 0 {
		t.Errorf("%d of %d clients were not told of the degraded chat and its end", bad, len(states))
	}
	t.Logf("status degraded:true reached the clients %v after the fault began; degraded:false %v after it ended",
		StatsOf(toldDown), StatsOf(toldUp))
}
