//go:build faults

package faults

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// TestRedisStopped takes the gateways' Redis away for 10 s under load (2
// gateways, 50 clients, 100 messages/s), in two ways: shut down (the port
// refuses connections; this Redis persists nothing, so it comes back empty)
// and frozen (SIGSTOP: connections open but nothing answers, the harder case
// for timeouts; it comes back with its data).
//
// Redis is the record: a message that cannot be stored must not be
// acknowledged. So while Redis is away every send is answered "unavailable"
// within 2 s and none is acked, clients stay connected, and when Redis is
// back the same gateway processes store and acknowledge again.
func TestRedisStopped(t *testing.T) {
	t.Run("shutdown", func(t *testing.T) {
		testRedisOutage(t, redisShutdown)
	})
	t.Run("frozen", func(t *testing.T) {
		testRedisOutage(t, redisFrozen)
	})
}

type redisFault int

const (
	redisShutdown redisFault = iota // SIGTERM, then a fresh, empty server on the same port
	redisFrozen                     // SIGSTOP, then SIGCONT
)

func testRedisOutage(t *testing.T, fault redisFault) {
	const (
		clients = 50
		rate    = 100
		before  = 5 * time.Second
		outage  = 10 * time.Second
		after   = 10 * time.Second
		// answerWithin bounds the unavailable answer to a send while Redis
		// is away.
		answerWithin = 2 * time.Second
	)
	rs := startRedis(t)
	r := startRig(t, rigOptions{gateways: 2, redisURL: rs.URL()})
	pids := []int{r.GatewayPID(0), r.GatewayPID(1)}
	cr := startCrowd(t, crowdOptions(t, clients, 1, func(i int) string { return r.GatewayURL(i % 2) }))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	start := time.Now()
	stopLoad := cr.Load(rate, cr.Chatters)
	if !at(ctx, start, before) {
		t.Fatal(ctx.Err())
	}
	switch fault {
	case redisShutdown:
		if err := rs.stop(); err != nil {
			t.Fatal(err)
		}
	case redisFrozen:
		if err := rs.proc.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// However the test ends, the server is not left frozen: kill (its
		// cleanup) works on a stopped process, and so does SIGCONT.
		t.Cleanup(func() { _ = rs.signal(syscall.SIGCONT) })
	}
	stopped := time.Now()
	took, err := r.waitAll(5*time.Second, "unready", func(i int) bool { return !r.ready(i) })
	if err != nil {
		t.Errorf("gateways still ready with Redis away: %v", err)
	}
	t.Logf("Redis away; every gateway unready %v later", took.Round(time.Millisecond))

	if !at(ctx, stopped, outage) {
		t.Fatal(ctx.Err())
	}
	restarting := time.Now()
	switch fault {
	case redisShutdown:
		err = rs.start()
	case redisFrozen:
		err = rs.signal(syscall.SIGCONT)
	}
	if err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	took, err = r.waitAll(30*time.Second, "ready", r.ready)
	if err != nil {
		t.Fatalf("after Redis came back: %v", err)
	}
	t.Logf("Redis away for %v, back %v after it was started again; every gateway ready %v later",
		restarting.Sub(stopped).Round(time.Millisecond), restarted.Sub(restarting).Round(time.Millisecond), took.Round(time.Millisecond))

	if !at(ctx, restarted, after) {
		t.Fatal(ctx.Err())
	}
	sent := stopLoad()
	t.Logf("load: %d sends", sent)
	rep := settle(t, cr)
	if rep.StayedConnected != clients {
		t.Errorf("%d of %d clients stayed connected, want all", rep.StayedConnected, clients)
	}
	for i, pid := range pids {
		if got := r.GatewayPID(i); got != pid {
			t.Errorf("%s is process %d, was %d: recovery must not need a restart", r.GatewayID(i), got, pid)
		}
	}

	// Sends written while Redis was away (early enough to be answered
	// before it was back): answered within answerWithin, so unavailable,
	// and never acknowledged before Redis was back.
	states := cr.States()
	var during, acked, slow, lateUnavailable int
	var answer []time.Duration
	var firstAck time.Time
	unavailable := map[string]bool{} // client_msg_ids
	for _, s := range states {
		for _, res := range s.Results {
			w := res.Written
			if w.After(stopped) && w.Before(restarting.Add(-answerWithin)) {
				during++
				d := res.Answered.Sub(w)
				answer = append(answer, d)
				if res.Code == "" && res.Answered.Before(restarting) {
					acked++ // acknowledged though nothing could be stored
				}
				if d > answerWithin {
					slow++
				}
			}
			if res.Code == "" && res.Answered.After(restarting) && (firstAck.IsZero() || res.Answered.Before(firstAck)) {
				firstAck = res.Answered
			}
			if res.Code != "" {
				unavailable[res.ClientMsgID] = true
				if res.Written.After(restarted.Add(answerWithin)) {
					lateUnavailable++
				}
			}
		}
		want := 0
		if fault == redisShutdown {
			want = 1 // Redis came back empty: a new epoch
		}
		if s.Epochs != want {
			t.Errorf("%s saw %d epoch changes, want %d", s.Name, s.Epochs, want)
		}
	}
	t.Logf("while Redis was away: %d sends, %d acked, answered in %v", during, acked, StatsOf(answer))
	if during == 0 {
		t.Error("no send was written while Redis was away")
	}
	if acked > 0 {
		t.Errorf("%d sends acknowledged while Redis was away", acked)
	}
	if slow > 0 {
		t.Errorf("%d of %d sends written while Redis was away were answered later than %v (%v)", slow, during, answerWithin, StatsOf(answer))
	}
	if firstAck.IsZero() {
		t.Error("no send acknowledged after Redis came back")
	} else {
		t.Logf("first ack %v after Redis was started again", firstAck.Sub(restarting).Round(time.Millisecond))
	}
	if lateUnavailable > 0 {
		t.Errorf("%d sends written more than %v after Redis was back were not acknowledged", lateUnavailable, answerWithin)
	}
	// A command that timed out may still run once Redis reads it: the
	// protocol lets a sender retry "unavailable" with the same
	// client_msg_id, which is then stored once. Count how often that
	// happened (these clients do not retry).
	storedAnyway := map[string]bool{}
	for _, s := range states {
		for _, seen := range s.Seen {
			if unavailable[seen.ClientMsgID] {
				storedAnyway[seen.ClientMsgID] = true
			}
		}
	}
	t.Logf("%d of %d sends answered unavailable were stored after all (a retry would have been deduplicated)",
		len(storedAnyway), len(unavailable))
	r.checkBaseline(t)
}
