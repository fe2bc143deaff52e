//go:build integration

package amqpbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/broker"
	"github.com/parleychat/parley/internal/broker/brokertest"
	"github.com/parleychat/parley/internal/testenv"
)

// TestConformance runs the broker contract on two Brokers sharing one
// exchange, as two gateways of one cluster.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) (a, b broker.Broker) {
		ex := newTestExchange(t)
		id := testenv.Unique(t)
		return newTestBroker(t, ex, Config{GatewayID: id + "-a"}).Broker,
			newTestBroker(t, ex, Config{GatewayID: id + "-b"}).Broker
	})
}

// TestExchangesIsolated checks that deployments (or tests) on different
// exchanges of one RabbitMQ do not hear each other.
func TestExchangesIsolated(t *testing.T) {
	ex1, ex2 := newTestExchange(t), newTestExchange(t)
	b1 := newTestBroker(t, ex1, Config{})
	b2 := newTestBroker(t, ex2, Config{})
	r1, r2 := startConsume(t, b1.Broker), startConsume(t, b2.Broker)
	waitReady(t, b1.Broker, b2.Broker)

	mustPublish(t, b1.Broker, `{"to":"one"}`)
	mustPublish(t, b2.Broker, `{"to":"two"}`)
	// Whatever RabbitMQ routed to a queue is in it once the publish is
	// confirmed, so it would arrive before the sentinel published after it.
	mustPublish(t, b1.Broker, `{"sentinel":1}`)
	mustPublish(t, b2.Broker, `{"sentinel":2}`)
	r1.WaitFor(t, waitTimeout, "sentinel 1", func(ev []brokertest.Event) bool { return hasBody(ev, `{"sentinel":1}`) })
	r2.WaitFor(t, waitTimeout, "sentinel 2", func(ev []brokertest.Event) bool { return hasBody(ev, `{"sentinel":2}`) })
	if got, want := bodies(r1), []string{`{"to":"one"}`, `{"sentinel":1}`}; !slices.Equal(got, want) {
		t.Errorf("exchange 1 delivered %q, want %q", got, want)
	}
	if got, want := bodies(r2), []string{`{"to":"two"}`, `{"sentinel":2}`}; !slices.Equal(got, want) {
		t.Errorf("exchange 2 delivered %q, want %q", got, want)
	}
}

// TestTopology checks what the Broker declares, as RabbitMQ reports it: a
// durable fanout exchange; a server-named, exclusive, auto-delete queue with
// the configured x-max-length and drop-head overflow; the configured prefetch
// on the consume channel; and connection names that tell the links apart.
func TestTopology(t *testing.T) {
	ex := newTestExchange(t)
	b := newTestBroker(t, ex, Config{Prefetch: 77, QueueMaxLength: 12345})
	startConsume(t, b.Broker)
	waitReady(t, b.Broker)

	q := listQueue(t, b.queueName())
	if !strings.HasPrefix(q.Name, "amq.gen-") {
		t.Errorf("queue %q is not server-named", q.Name)
	}
	if q.Durable || !q.AutoDelete || !q.Exclusive {
		t.Errorf("queue durable=%v auto_delete=%v exclusive=%v, want false, true, true", q.Durable, q.AutoDelete, q.Exclusive)
	}
	if got := q.argument("x-max-length"); got != float64(12345) {
		t.Errorf("x-max-length = %v, want 12345", got)
	}
	if got := q.argument("x-overflow"); got != "drop-head" {
		t.Errorf("x-overflow = %v, want drop-head", got)
	}

	out := rabbitmqctl(t, "list_exchanges", "name", "type", "durable", "--no-table-headers")
	if want := ex + "\tfanout\ttrue"; !strings.Contains(out, want) {
		t.Errorf("exchange %s is not listed as a durable fanout:\n%s", ex, out)
	}

	consumePID := connectionPID(t, b.connName("consume"))
	publishPID := connectionPID(t, b.connName("publish"))
	if consumePID == publishPID {
		t.Fatalf("publish and consume share connection %s", consumePID)
	}
	out = rabbitmqctl(t, "list_channels", "connection", "prefetch_count", "--no-table-headers")
	if want := consumePID + "\t77"; !strings.Contains(out, want) {
		t.Errorf("consume channel has no prefetch of 77; channels:\n%s", out)
	}
}

// TestAcksAfterPause: deliveries are acked in batches, and a batch smaller
// than a quarter of the prefetch window is acked once deliveries pause, so
// RabbitMQ does not keep them counted as unacked while a room is quiet.
func TestAcksAfterPause(t *testing.T) {
	ex := newTestExchange(t)
	b := newTestBroker(t, ex, Config{}) // acks every 128 deliveries, or on a pause
	rec := startConsume(t, b.Broker)
	waitReady(t, b.Broker)
	for i := range 5 {
		mustPublish(t, b.Broker, fmt.Sprintf(`{"n":%d}`, i))
	}
	rec.WaitFor(t, waitTimeout, "5 deliveries", func(ev []brokertest.Event) bool { return count(ev, brokertest.Deliver) == 5 })
	q := b.queueName()
	waitUntil(t, "the deliveries to be acked", func() (bool, string) {
		out := rabbitmqctl(t, "list_queues", "name", "messages_unacknowledged", "--no-table-headers")
		for _, line := range strings.Split(out, "\n") {
			if name, n, ok := strings.Cut(line, "\t"); ok && name == q {
				return strings.TrimSpace(n) == "0", n + " unacknowledged"
			}
		}
		return false, "queue not listed"
	})
}

// TestMessageProperties checks what another consumer of the exchange sees:
// content_type application/json, message_id the id, a transient message.
func TestMessageProperties(t *testing.T) {
	ex := newTestExchange(t)
	b := newTestBroker(t, ex, Config{})
	startConsume(t, b.Broker) // declares the exchange
	waitReady(t, b.Broker)

	conn, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustPublishID(t, b.Broker, `{"type":"message"}`, "01jq3n9c4k0f3m6t2b7x5d8e1a")
	select {
	case d := <-deliveries:
		if d.ContentType != "application/json" || d.MessageId != "01jq3n9c4k0f3m6t2b7x5d8e1a" ||
			d.DeliveryMode != amqp.Transient || string(d.Body) != `{"type":"message"}` {
			t.Errorf("got content_type=%q message_id=%q delivery_mode=%d body=%s",
				d.ContentType, d.MessageId, d.DeliveryMode, d.Body)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no delivery")
	}
}

// TestConsumeLinkKilled kills the consume connection from the server side and
// checks that the handler hears LinkDown, then LinkUp within a few seconds,
// that deliveries continue, and that the publish link is not disturbed.
func TestConsumeLinkKilled(t *testing.T) {
	ex := newTestExchange(t)
	b := newTestBroker(t, ex, Config{})
	rec := startConsume(t, b.Broker)
	waitReady(t, b.Broker)
	mustPublish(t, b.Broker, `{"n":1}`)
	rec.WaitFor(t, waitTimeout, "the first body", func(ev []brokertest.Event) bool { return hasBody(ev, `{"n":1}`) })
	oldQueue := b.queueName()

	killed := time.Now()
	killConnection(t, b.connName("consume"))
	rec.WaitFor(t, waitTimeout, "LinkDown then LinkUp", func(ev []brokertest.Event) bool {
		return count(ev, brokertest.LinkUp) >= 2
	})
	if d := time.Since(killed); d > 5*time.Second {
		t.Errorf("consuming resumed %v after the kill, want within a few seconds", d)
	}
	var kinds []string
	for _, e := range rec.Events() {
		kinds = append(kinds, e.Kind.String())
	}
	if got, want := strings.Join(kinds, " "), "LinkUp Deliver LinkDown LinkUp"; got != want {
		t.Errorf("handler calls: %s, want %s", got, want)
	}
	if e := rec.Events()[2]; e.Err == nil || !strings.Contains(e.Err.Error(), "CONNECTION_FORCED") {
		t.Errorf("LinkDown error = %v, want the server's CONNECTION_FORCED", e.Err)
	}
	if got := b.queueName(); got == oldQueue || got == "" {
		t.Errorf("queue after the reconnect = %q, want a new one (old %q)", got, oldQueue)
	}

	waitReady(t, b.Broker)
	mustPublish(t, b.Broker, `{"n":2}`)
	rec.WaitFor(t, waitTimeout, "a body after the reconnect", func(ev []brokertest.Event) bool { return hasBody(ev, `{"n":2}`) })
	if n := b.logs.count("amqp link up"); n != 3 {
		t.Errorf("%d links came up, want 3 (publish once, consume twice)", n)
	}
}

// TestPublishLinkKilled kills the publish connection from the server side and
// checks that publishes fail at once while it is down, that Ready says which
// link is down, and that publishing works again once it is back. The backoff
// always waits its full ceiling (1s) so that the outage can be observed.
func TestPublishLinkKilled(t *testing.T) {
	ex := newTestExchange(t)
	b := newTestBrokerRand(t, ex, Config{BackoffBase: time.Second, BackoffCap: time.Second},
		func(n int64) int64 { return n - 1 })
	rec := startConsume(t, b.Broker)
	waitReady(t, b.Broker)

	killConnection(t, b.connName("publish"))
	waitUntil(t, "Ready to report the publish link down", func() (bool, string) {
		err := b.Ready()
		return err != nil && strings.Contains(err.Error(), "publish link down"), fmt.Sprint(err)
	})
	if err := b.Ready(); strings.Contains(err.Error(), "consume") {
		t.Errorf("Ready blames the consume link too: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := b.Publish(ctx, []byte(`{"n":"while down"}`), "down")
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Publish while down = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Publish while down took %v, want an error at once", d)
	}

	waitReady(t, b.Broker)
	mustPublish(t, b.Broker, `{"n":"after"}`)
	rec.WaitFor(t, waitTimeout, "the body published after the reconnect", func(ev []brokertest.Event) bool {
		return hasBody(ev, `{"n":"after"}`)
	})
	if hasBody(rec.Events(), `{"n":"while down"}`) {
		t.Error("the publish that failed was delivered")
	}
	if n := count(rec.Events(), brokertest.LinkDown); n != 0 {
		t.Errorf("killing the publish link made the consumer hear %d LinkDown", n)
	}
}

// TestPublishSurvivesLinkLoss loses the publish link while publishes await
// their confirms: a proxy swallows everything RabbitMQ sends (the publishes
// still reach the queues, their confirms do not come back) and then cuts the
// connection. Each of those Publish calls must publish its body again on the
// next link and return nil, and every body must be delivered (a receiver may
// get one twice and dedupes by seq).
func TestPublishSurvivesLinkLoss(t *testing.T) {
	ex := newTestExchange(t)
	proxy := newFaultProxy(t)
	pub := newTestBroker(t, ex, Config{URL: proxy.URL(t)})
	con := newTestBroker(t, ex, Config{})
	rec := startConsume(t, con.Broker)
	waitReady(t, con.Broker)
	waitPublishLink(t, pub.Broker)

	const workers = 16
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent []string
	)
	publishAll := func(phase string, each int) {
		for w := range workers {
			wg.Go(func() {
				for n := range each {
					body := fmt.Sprintf(`{"phase":%q,"w":%d,"n":%d}`, phase, w, n)
					ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
					err := pub.Publish(ctx, []byte(body), body)
					cancel()
					if err != nil {
						t.Errorf("publish %s: %v", body, err)
						return
					}
					mu.Lock()
					sent = append(sent, body)
					mu.Unlock()
				}
			})
		}
	}

	publishAll("before", 50)
	wg.Wait()
	// From now on no confirm reaches the Broker, and none is owed for a
	// publish made before: the publishes below all lose theirs.
	proxy.mute()
	publishAll("lost", 1)
	waitUntil(t, "every publish to await its confirm", func() (bool, string) {
		n := pub.awaitingConfirm.Load()
		return n == workers, fmt.Sprintf("%d awaiting", n)
	})
	proxy.cut()
	wg.Wait()
	publishAll("after", 10)
	wg.Wait()

	if got := pub.logs.count("publish link lost before the confirm; publishing again on the next link"); got != workers {
		t.Errorf("%d publishes were published again, want the %d whose confirms were lost", got, workers)
	}
	if got := pub.logs.count("amqp link down, reconnecting"); got != 1 {
		t.Errorf("the publish link went down %d times, want 1", got)
	}
	mu.Lock()
	want := make(map[string]bool, len(sent))
	for _, body := range sent {
		want[body] = true
	}
	mu.Unlock()
	if got := len(want); got != workers*61 {
		t.Fatalf("%d publishes returned nil, want %d", got, workers*61)
	}
	rec.WaitFor(t, waitTimeout, "every body", func(ev []brokertest.Event) bool {
		got := make(map[string]bool, len(ev))
		for _, e := range ev {
			if e.Kind == brokertest.Deliver && want[string(e.Body)] {
				got[string(e.Body)] = true
			}
		}
		return len(got) == len(want)
	})
}

// TestBlocked checks, by feeding the supervisor's connection.blocked handling
// directly (a real alarm would take the shared RabbitMQ down for every other
// test), that a blocked publish link makes Publish fail at once with
// ErrBlocked and Ready say so, and that unblocking restores both.
func TestBlocked(t *testing.T) {
	ex := newTestExchange(t)
	b := newTestBroker(t, ex, Config{})
	rec := startConsume(t, b.Broker)
	waitReady(t, b.Broker)

	b.mu.Lock()
	link := b.pub
	b.mu.Unlock()
	b.setBlocked(link, true, "low on memory")
	err := b.Ready()
	if !errors.Is(err, ErrBlocked) || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "low on memory") {
		t.Errorf("Ready while blocked = %v, want ErrBlocked with the reason", err)
	}
	if strings.Contains(err.Error(), "consume") {
		t.Errorf("Ready while blocked blames the consume link: %v", err)
	}
	start := time.Now()
	err = b.Publish(context.Background(), []byte(`{"n":1}`), "1")
	if !errors.Is(err, ErrBlocked) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Publish while blocked = %v, want ErrUnavailable and ErrBlocked", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Publish while blocked took %v, want an error at once", d)
	}

	b.setBlocked(link, false, "")
	if err := b.Ready(); err != nil {
		t.Errorf("Ready after unblock = %v", err)
	}
	mustPublish(t, b.Broker, `{"n":2}`)
	rec.WaitFor(t, waitTimeout, "a body after unblock", func(ev []brokertest.Event) bool { return hasBody(ev, `{"n":2}`) })
}

// TestCloseWaitsForInFlight calls Close while publishes await their confirms
// (a proxy holds RabbitMQ's replies back). Close must refuse new publishes
// with broker.ErrClosed at once, wait for the confirms rather than tear the
// link down under them, and then close both connections with a handshake.
func TestCloseWaitsForInFlight(t *testing.T) {
	ex := newTestExchange(t)
	proxy := newFaultProxy(t)
	pub := newTestBroker(t, ex, Config{URL: proxy.URL(t)})
	con := newTestBroker(t, ex, Config{})
	rec := startConsume(t, con.Broker)
	startConsume(t, pub.Broker) // so that Close has a consume link to end too
	waitReady(t, pub.Broker, con.Broker)

	const inFlight = 32
	proxy.hold()
	var wg sync.WaitGroup
	for i := range inFlight {
		wg.Go(func() {
			body := fmt.Sprintf(`{"n":%d}`, i)
			if err := pub.Publish(context.Background(), []byte(body), body); err != nil {
				t.Errorf("publish in flight at Close: %v", err)
			}
		})
	}
	waitUntil(t, "the publishes to await their confirms", func() (bool, string) {
		n := pub.awaitingConfirm.Load()
		return n == inFlight, fmt.Sprintf("%d awaiting", n)
	})

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- pub.Close(ctx) }()
	waitUntil(t, "Close to wait for the confirms", func() (bool, string) {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		return pub.closing && pub.drained != nil, ""
	})
	start := time.Now()
	if err := pub.Publish(context.Background(), []byte(`{"n":"late"}`), "late"); !errors.Is(err, broker.ErrClosed) || errors.Is(err, ErrUnavailable) {
		t.Errorf("Publish during Close = %v, want broker.ErrClosed", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Publish during Close took %v, want an error at once", d)
	}
	if n := pub.awaitingConfirm.Load(); n != inFlight {
		t.Errorf("%d publishes await their confirms while Close waits, want %d", n, inFlight)
	}
	pub.mu.Lock()
	linkUp := pub.pub != nil
	pub.mu.Unlock()
	select {
	case <-pub.pubDone:
		linkUp = false
	default:
	}
	if !linkUp {
		t.Error("Close tore the publish link down while publishes awaited their confirms")
	}
	proxy.release()
	if err := <-closed; err != nil {
		t.Errorf("Close = %v", err)
	}
	wg.Wait()

	rec.WaitFor(t, waitTimeout, "every body published before Close", func(ev []brokertest.Event) bool {
		return count(ev, brokertest.Deliver) >= inFlight
	})
	assertClosedCleanly(t, pub.connName("publish"))
	assertClosedCleanly(t, pub.connName("consume"))
}

// TestNoGoroutineLeft checks that a Broker that published, consumed and
// closed leaves no goroutine of its own or of the AMQP library.
func TestNoGoroutineLeft(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ex := newTestExchange(t)
	b, err := New(Config{URL: testenv.AMQPURL(), Exchange: ex, GatewayID: testenv.Unique(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &brokertest.Recorder{}
	done := make(chan error, 1)
	go func() { done <- b.Consume(ctx, rec) }()
	waitReady(t, b)
	mustPublish(t, b, `{"n":1}`)
	rec.WaitFor(t, waitTimeout, "the body", func(ev []brokertest.Event) bool { return hasBody(ev, `{"n":1}`) })

	closeCtx, closeCancel := context.WithTimeout(context.Background(), waitTimeout)
	defer closeCancel()
	if err := b.Close(closeCtx); err != nil {
		t.Errorf("Close = %v", err)
	}
	// Close ends Consume, which returns nil without LinkDown.
	if err := <-done; err != nil {
		t.Errorf("Consume = %v after Close, want nil", err)
	}
	if n := count(rec.Events(), brokertest.LinkDown); n != 0 {
		t.Errorf("Close made %d LinkDown calls, want 0", n)
	}
	goleak.VerifyNone(t, ignore)
}

// mustPublish publishes body and fails the test on error.
func mustPublish(tb testing.TB, b *Broker, body string) {
	tb.Helper()
	mustPublishID(tb, b, body, "test")
}

// mustPublishID publishes body with message id id and fails the test on
// error.
func mustPublishID(tb testing.TB, b *Broker, body, id string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.Publish(ctx, []byte(body), id); err != nil {
		tb.Fatalf("publish %s: %v", body, err)
	}
}

// bodies returns the bodies rec got, as strings.
func bodies(rec *brokertest.Recorder) []string {
	var out []string
	for _, b := range rec.Bodies() {
		out = append(out, string(b))
	}
	return out
}
