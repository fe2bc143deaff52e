// Package brokertest is the conformance suite of broker.Broker: every
// implementation runs the same tests, so that the gateway can rely on the
// contract and not on one implementation (as testing/slogtest does for
// slog.Handler).
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) (a, b broker.Broker) { ... })
//	}
package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/broker"
)

const (
	// waitTimeout bounds every wait for an event in the suite; generous, so
	// that -race on a busy machine does not make it flaky.
	waitTimeout = 20 * time.Second

	// publishTimeout is the context of each Publish the suite makes.
	publishTimeout = 10 * time.Second
)

// Run runs the conformance suite. newBroker returns two brokers on one fan-out
// domain, standing for two gateways of one cluster (for an in-process broker,
// the same value twice: a and b may be the same Broker only if it allows two
// Consume calls at once). It is called once per subtest, must give brokers no
// other test hears, and must release them in t.Cleanup.
//
// The suite waits until Ready returns nil on both before it publishes:
// bodies published before a gateway consumes are not delivered to it, by
// contract. Subtests run one after another (not in parallel), because one of
// them checks that Consume leaves no goroutine behind.
func Run(t *testing.T, newBroker func(t *testing.T) (a, b broker.Broker)) {
	t.Run("ReadyWhenHealthy", func(t *testing.T) {
		a, b := newBroker(t)
		startConsume(t, a)
		startConsume(t, b)
		waitReady(t, a, b)
	})
	t.Run("LinkUpBeforeFirstDelivery", func(t *testing.T) {
		testLinkUpFirst(t, newBroker)
	})
	t.Run("DeliveredAfterPublishReturns", func(t *testing.T) {
		testDeliveredAfterPublish(t, newBroker)
	})
	t.Run("EveryBodyOnceInSenderOrder", func(t *testing.T) {
		testStreams(t, newBroker, 2, 200)
	})
	t.Run("ConcurrentPublishers", func(t *testing.T) {
		testStreams(t, newBroker, 8, 250)
	})
	t.Run("ConsumeReturnsNilOnCancel", func(t *testing.T) {
		testConsumeReturns(t, newBroker)
	})
}

// testLinkUpFirst checks that a handler hears LinkUp before any delivery.
func testLinkUpFirst(t *testing.T, newBroker func(t *testing.T) (a, b broker.Broker)) {
	a, b := newBroker(t)
	ra, rb := startConsume(t, a), startConsume(t, b)
	waitReady(t, a, b)
	mustPublish(t, a, []byte(`{"type":"message","text":"first"}`))
	for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
		r.WaitFor(t, waitTimeout, name+" to get the body", hasCount(Deliver, 1))
		events := r.Events()
		if got, want := events[0].Kind, LinkUp; got != want {
			t.Errorf("%s: first event is %v, want %v", name, got, want)
		}
		if n := r.Count(LinkDown); n != 0 {
			t.Errorf("%s: %d LinkDown on a healthy link", name, n)
		}
		if n := r.Overlapping(); n != 0 {
			t.Errorf("%s: %d overlapping Handler calls", name, n)
		}
	}
}

// testDeliveredAfterPublish checks that once Publish returned nil, the body
// reaches every consumer with nothing else to push it along, exactly once and
// unchanged even though the caller reuses its buffer.
func testDeliveredAfterPublish(t *testing.T, newBroker func(t *testing.T) (a, b broker.Broker)) {
	a, b := newBroker(t)
	ra, rb := startConsume(t, a), startConsume(t, b)
	waitReady(t, a, b)
	for i, pub := range []broker.Broker{a, b} {
		want := fmt.Sprintf(`{"type":"message","text":"from %d"}`, i)
		buf := []byte(want)
		mustPublish(t, pub, buf)
		copy(buf, "XXXXXXXXXXXX") // the caller owns buf again
		for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
			r.WaitFor(t, waitTimeout, fmt.Sprintf("%s to get %s", name, want), func(events []Event) bool {
				return countBody(events, want) >= 1
			})
		}
	}
	for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
		if got, want := r.Count(Deliver), 2; got != want {
			t.Errorf("%s: got %d deliveries, want %d: %q", name, got, want, r.Bodies())
		}
	}
}

// testStreams has senders goroutines (alternately on a and b) publish each
// bodies one after another, and checks that both consumers get every body
// exactly once, in each sender's order.
func testStreams(t *testing.T, newBroker func(t *testing.T) (a, b broker.Broker), senders, each int) {
	a, b := newBroker(t)
	ra, rb := startConsume(t, a), startConsume(t, b)
	waitReady(t, a, b)

	var wg sync.WaitGroup
	for s := range senders {
		pub := a
		if s%2 == 1 {
			pub = b
		}
		wg.Go(func() {
			for n := range each {
				body := fmt.Appendf(nil, `{"type":"message","sender":%d,"n":%d}`, s, n)
				ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
				err := pub.Publish(ctx, body, fmt.Sprintf("s%d-n%d", s, n))
				cancel()
				if err != nil {
					t.Errorf("sender %d: publish %d: %v", s, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	total := senders * each
	for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
		r.WaitFor(t, waitTimeout, fmt.Sprintf("%s to get %d bodies", name, total), hasCount(Deliver, total))
	}
	// A duplicate of a body would arrive before a later body of the same
	// publisher; a sentinel from each publisher, published last, bounds the
	// wait for any.
	mustPublish(t, a, []byte(`{"type":"sentinel","from":"a"}`))
	mustPublish(t, b, []byte(`{"type":"sentinel","from":"b"}`))
	for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
		r.WaitFor(t, waitTimeout, name+" to get both sentinels", func(events []Event) bool {
			return countBody(events, `{"type":"sentinel","from":"a"}`) >= 1 &&
				countBody(events, `{"type":"sentinel","from":"b"}`) >= 1
		})
		checkStreams(t, name, r.Bodies(), senders, each)
		if n := r.Overlapping(); n != 0 {
			t.Errorf("%s: %d overlapping Handler calls", name, n)
		}
	}
}

// testConsumeReturns checks that Consume returns nil soon after its context
// ends, that a Broker can consume again afterwards, and that no goroutine of
// the ended Consume is left.
func testConsumeReturns(t *testing.T, newBroker func(t *testing.T) (a, b broker.Broker)) {
	a, b := newBroker(t)
	startConsume(t, b)

	// Bring every link of both brokers up first, so that the goroutines
	// they own exist before the snapshot below.
	ctx1, cancel1 := context.WithCancel(context.Background())
	t.Cleanup(cancel1)
	r1 := &Recorder{}
	done1 := goConsume(ctx1, a, r1)
	r1.WaitFor(t, waitTimeout, "LinkUp", hasCount(LinkUp, 1))
	waitReady(t, a, b)
	cancel1()
	awaitReturn(t, done1)

	ignore := goleak.IgnoreCurrent()
	ctx2, cancel2 := context.WithCancel(context.Background())
	t.Cleanup(cancel2)
	r2 := &Recorder{}
	done2 := goConsume(ctx2, a, r2)
	r2.WaitFor(t, waitTimeout, "LinkUp of the second Consume", hasCount(LinkUp, 1))
	waitReady(t, a)
	mustPublish(t, b, []byte(`{"type":"message","text":"to the second consumer"}`))
	r2.WaitFor(t, waitTimeout, "the body", hasCount(Deliver, 1))
	cancel2()
	awaitReturn(t, done2)
	n := len(r2.Events())
	goleak.VerifyNone(t, ignore)
	if got := len(r2.Events()); got != n {
		t.Errorf("%d Handler calls after Consume returned", got-n)
	}
	if got := r2.Count(LinkDown); got != 0 {
		t.Errorf("ending Consume by its context made %d LinkDown calls, want 0", got)
	}
}

// startConsume runs br.Consume with a new Recorder until the test ends, and
// waits for its LinkUp. Cleanup checks that Consume returned nil.
func startConsume(t *testing.T, br broker.Broker) *Recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{}
	done := goConsume(ctx, br, r)
	t.Cleanup(func() {
		cancel()
		awaitReturn(t, done)
	})
	r.WaitFor(t, waitTimeout, "LinkUp", hasCount(LinkUp, 1))
	return r
}

// goConsume runs br.Consume(ctx, h) on a new goroutine; the returned channel
// gets its result. The caller owns the goroutine and joins it by receiving.
func goConsume(ctx context.Context, br broker.Broker, h broker.Handler) <-chan error {
	done := make(chan error, 1)
	go func() { done <- br.Consume(ctx, h) }()
	return done
}

// awaitReturn waits for a Consume whose context ended to return nil.
func awaitReturn(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Consume returned %v after its context ended, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Errorf("Consume did not return within %v of its context ending", waitTimeout)
	}
}

// waitReady polls Ready on every broker until it returns nil (Ready has no
// event to wait for).
func waitReady(t *testing.T, brokers ...broker.Broker) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for _, br := range brokers {
		for {
			err := br.Ready()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Ready still failing after %v: %v", waitTimeout, err)
			}
			time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
		}
	}
}

// mustPublish publishes body and fails the test on error.
func mustPublish(t *testing.T, br broker.Broker, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := br.Publish(ctx, body, "test"); err != nil {
		t.Fatalf("publish %s: %v", body, err)
	}
}

// hasCount returns a condition: at least n events of kind k.
func hasCount(k Kind, n int) func([]Event) bool {
	return func(events []Event) bool {
		c := 0
		for _, e := range events {
			if e.Kind == k {
				c++
			}
		}
		return c >= n
	}
}

// countBody counts the deliveries of body.
func countBody(events []Event, body string) int {
	c := 0
	for _, e := range events {
		if e.Kind == Deliver && string(e.Body) == body {
			c++
		}
	}
	return c
}

// checkStreams checks that bodies hold, besides sentinels, the numbers
// 0..each-1 of every sender exactly once and in order.
func checkStreams(t *testing.T, name string, bodies [][]byte, senders, each int) {
	t.Helper()
	next := make([]int, senders)
	errs := 0
	for _, body := range bodies {
		var m struct {
			Type   string `json:"type"`
			Sender int    `json:"sender"`
			N      int    `json:"n"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("%s: undecodable body %q: %v", name, body, err)
			continue
		}
		if m.Type == "sentinel" {
			continue
		}
		if m.Sender < 0 || m.Sender >= senders {
			t.Errorf("%s: body from unknown sender: %s", name, body)
			continue
		}
		if m.N != next[m.Sender] && errs < 10 {
			errs++
			t.Errorf("%s: sender %d: got n=%d, want %d (a duplicate, a loss or a reordering)",
				name, m.Sender, m.N, next[m.Sender])
		}
		next[m.Sender] = max(next[m.Sender], m.N+1)
	}
	if i := slices.IndexFunc(next, func(n int) bool { return n != each }); i >= 0 {
		t.Errorf("%s: sender %d: last body was n=%d, want %d", name, i, next[i]-1, each-1)
	}
}
