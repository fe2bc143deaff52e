//go:build integration

package amqpbroker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parleychat/parley/internal/broker/brokertest"
	"github.com/parleychat/parley/internal/testenv"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 20 * time.Second

// newTestExchange returns an exchange name of the test's own and deletes the
// exchange when the test ends (after the brokers made later have closed).
func newTestExchange(tb testing.TB) string {
	tb.Helper()
	name := testenv.Unique(tb)
	tb.Cleanup(func() { deleteExchange(tb, name) })
	return name
}

// deleteExchange deletes an exchange over a connection of its own. It fails
// the test when RabbitMQ cannot be reached: under the integration tag it must
// be up.
func deleteExchange(tb testing.TB, name string) {
	tb.Helper()
	conn, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		tb.Errorf("delete exchange %s: RabbitMQ unreachable: %v", name, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		tb.Errorf("delete exchange %s: %v", name, err)
		return
	}
	if err := ch.ExchangeDelete(name, false, false); err != nil {
		tb.Errorf("delete exchange %s: %v", name, err)
	}
}

// logCounter counts log messages, so that tests can see what a Broker did
// inside (for example that it published something again).
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *logCounter) count(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[msg]
}

// countingHandler passes records at Info and above to next and counts every
// record, Debug included.
type countingHandler struct {
	next slog.Handler
	c    *logCounter
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.c.mu.Lock()
	if h.c.n == nil {
		h.c.n = map[string]int{}
	}
	h.c.n[r.Message]++
	h.c.mu.Unlock()
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{next: h.next.WithAttrs(as), c: h.c}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{next: h.next.WithGroup(name), c: h.c}
}

// testBroker is a Broker under test with what the test may look at.
type testBroker struct {
	*Broker
	logs *logCounter
}

// newTestBroker makes a Broker on exchange with a gateway id of the test's
// own, logging to the test output, and closes it when the test ends. Fields
// of cfg that are set are kept.
func newTestBroker(tb testing.TB, exchange string, cfg Config) testBroker {
	tb.Helper()
	return newTestBrokerRand(tb, exchange, cfg, nil)
}

// newTestBrokerRand is newTestBroker with the backoff's random source
// injected (nil: the real one).
func newTestBrokerRand(tb testing.TB, exchange string, cfg Config, randN func(int64) int64) testBroker {
	tb.Helper()
	if cfg.URL == "" {
		cfg.URL = testenv.AMQPURL()
	}
	cfg.Exchange = exchange
	if cfg.GatewayID == "" {
		cfg.GatewayID = testenv.Unique(tb)
	}
	logs := &logCounter{}
	level := slog.LevelInfo
	if _, ok := tb.(*testing.B); ok {
		level = slog.LevelWarn // keep benchmark output readable
	}
	cfg.Logger = slog.New(countingHandler{
		next: slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: level}),
		c:    logs,
	})
	var (
		b   *Broker
		err error
	)
	if randN == nil {
		b, err = New(cfg)
	} else {
		b, err = newBroker(cfg, randN)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return testBroker{Broker: b, logs: logs}
}

// connName returns the connection name of one of b's links.
func (b testBroker) connName(link string) string {
	return "parley " + b.cfg.GatewayID + " " + link
}

// queueName returns the name of b's current queue ("" while not consuming).
func (b testBroker) queueName() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queue
}

// startConsume runs b.Consume with a new Recorder until the test ends and
// waits for its first LinkUp.
func startConsume(tb testing.TB, b *Broker) *brokertest.Recorder {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rec := &brokertest.Recorder{}
	done := make(chan error, 1)
	go func() { done <- b.Consume(ctx, rec) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Consume = %v, want nil", err)
			}
		case <-time.After(waitTimeout):
			tb.Errorf("Consume did not return after its context ended")
		}
	})
	rec.WaitFor(tb, waitTimeout, "LinkUp", func(ev []brokertest.Event) bool { return count(ev, brokertest.LinkUp) >= 1 })
	return rec
}

// waitReady polls b.Ready until it returns nil; Ready has no event to wait
// on. It fails the test, naming the broken link, if RabbitMQ is unreachable.
func waitReady(tb testing.TB, brokers ...*Broker) {
	tb.Helper()
	waitUntil(tb, "Ready", func() (bool, string) {
		for _, b := range brokers {
			if err := b.Ready(); err != nil {
				return false, err.Error()
			}
		}
		return true, ""
	})
}

// waitPublishLink polls until b's publish link is up and not blocked, for
// brokers that only publish (Ready also wants a consumer).
func waitPublishLink(tb testing.TB, b *Broker) {
	tb.Helper()
	waitUntil(tb, "the publish link", func() (bool, string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.pub != nil && !b.blocked, fmt.Sprintf("publish link down (%v)", b.pubErr)
	})
}

// waitUntil polls cond every 10ms until it holds, and fails the test with
// cond's last explanation if it does not hold within waitTimeout.
func waitUntil(tb testing.TB, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("waited %v for %s: %s", waitTimeout, what, why)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// count counts events of kind k.
func count(events []brokertest.Event, k brokertest.Kind) int {
	n := 0
	for _, e := range events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

// hasBody reports whether body was delivered.
func hasBody(events []brokertest.Event, body string) bool {
	for _, e := range events {
		if e.Kind == brokertest.Deliver && string(e.Body) == body {
			return true
		}
	}
	return false
}

// rabbitmqctl runs rabbitmqctl ($PARLEY_TEST_RABBITMQCTL, or the one on the
// PATH) quietly and returns its output; a failure fails the test.
func rabbitmqctl(tb testing.TB, args ...string) string {
	tb.Helper()
	bin := os.Getenv("PARLEY_TEST_RABBITMQCTL")
	if bin == "" {
		bin = "rabbitmqctl"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append(args, "-q")...).CombinedOutput()
	if err != nil {
		tb.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// connectionPID returns the pid (as rabbitmqctl's table output prints it) of
// the connection whose client-provided name is name, waiting for it to be
// listed.
func connectionPID(tb testing.TB, name string) string {
	tb.Helper()
	var pid string
	waitUntil(tb, "connection "+name+" to be listed", func() (bool, string) {
		out := rabbitmqctl(tb, "list_connections", "pid", "client_properties", "--no-table-headers")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `{"connection_name","`+name+`"}`) {
				pid, _, _ = strings.Cut(line, "\t")
				return true, ""
			}
		}
		return false, "not listed"
	})
	return pid
}

// killConnection closes the named connection from the server side, as an
// operator or a failing node would.
func killConnection(tb testing.TB, name string) {
	tb.Helper()
	rabbitmqctl(tb, "close_connection", connectionPID(tb, name), "parley test kills this connection")
}

// queueInfo is a row of rabbitmqctl list_queues.
type queueInfo struct {
	Name       string  `json:"name"`
	Arguments  [][]any `json:"arguments"`
	Durable    bool    `json:"durable"`
	AutoDelete bool    `json:"auto_delete"`
	Exclusive  bool    `json:"exclusive"`
}

// argument returns the value of the queue argument key, or nil.
func (q queueInfo) argument(key string) any {
	for _, a := range q.Arguments {
		if len(a) == 3 && a[0] == key {
			return a[2]
		}
	}
	return nil
}

// listQueue returns what RabbitMQ says about the queue named name.
func listQueue(tb testing.TB, name string) queueInfo {
	tb.Helper()
	out := rabbitmqctl(tb, "list_queues", "name", "arguments", "durable", "auto_delete", "exclusive", "--formatter", "json")
	var rows []queueInfo
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		tb.Fatalf("decode list_queues: %v\n%s", err, out)
	}
	for _, q := range rows {
		if q.Name == name {
			return q
		}
	}
	tb.Fatalf("queue %s is not listed", name)
	return queueInfo{}
}

// assertClosedCleanly checks in RabbitMQ's log that the named connection was
// closed with a connection.close handshake: RabbitMQ logs that at info level,
// and an abrupt close ("client unexpectedly closed TCP connection") as a
// warning. The log is $PARLEY_TEST_RABBITMQ_LOG or the Debian default.
func assertClosedCleanly(tb testing.TB, name string) {
	tb.Helper()
	path := os.Getenv("PARLEY_TEST_RABBITMQ_LOG")
	if path == "" {
		path = "/var/log/rabbitmq/rabbit@localhost.log"
	}
	marker := " - " + name + ", vhost"
	var line string
	waitUntil(tb, "RabbitMQ to log the close of "+name, func() (bool, string) {
		f, err := os.Open(path)
		if err != nil {
			return false, "cannot read the RabbitMQ log (set PARLEY_TEST_RABBITMQ_LOG): " + err.Error()
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
		line = ""
		for sc.Scan() {
			if t := sc.Text(); strings.Contains(t, "closing AMQP connection") && strings.Contains(t, marker) {
				line = t // the last one counts
			}
		}
		return line != "", "no close logged"
	})
	if !strings.Contains(line, "[info]") {
		tb.Errorf("RabbitMQ logged an abrupt close of %s: %s", name, line)
	}
}
