//go:build faults

package faults

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/internal/cluster"
	"github.com/parleychat/parley/internal/testenv"
)

// parleyBinary is the gateway binary every test's cluster runs, built once
// by TestMain with the race detector, so that a data race the faults provoke
// in a gateway fails its test (the gateway exits with status 66 and Close
// reports it).
var parleyBinary string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "parley-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, rabbitmqctlBin(), "-q", "await_startup", "--timeout", "30").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: RabbitMQ is not running (scripts/test.sh starts it): %v\n%s", err, out)
		return 1
	}
	parleyBinary, err = cluster.Build(ctx, "", filepath.Join(dir, "parley"), true)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	return m.Run()
}

// ---------------------------------------------------------------- RabbitMQ

func rabbitmqctlBin() string {
	if b := os.Getenv("PARLEY_TEST_RABBITMQCTL"); b != "" {
		return b
	}
	if p, err := exec.LookPath("rabbitmqctl"); err == nil {
		return p
	}
	return "/usr/sbin/rabbitmqctl" // Debian's, not in a normal user's PATH
}

// ctl runs rabbitmqctl quietly, bounded in time, and returns its output.
func ctl(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, rabbitmqctlBin(), append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// mustCtl is ctl that fails the test on error.
func mustCtl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ctl(60*time.Second, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newVhost creates a RabbitMQ virtual host for one test and deletes it when
// the test ends. A cluster on its own vhost has connections of its own:
// they can be listed, counted and closed (close_all_connections -p) without
// touching anybody else's on the same broker.
func newVhost(t testing.TB) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	vhost := "parley-faults-" + hex.EncodeToString(b[:])
	mustCtl(t, "add_vhost", vhost)
	t.Cleanup(func() {
		if _, err := ctl(60*time.Second, "delete_vhost", vhost); err != nil {
			t.Errorf("delete vhost: %v", err)
		}
	})
	mustCtl(t, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
	return vhost
}

// vhostURL is testenv.AMQPURL with its virtual host replaced by vhost.
func vhostURL(t testing.TB, vhost string) string {
	t.Helper()
	base := strings.TrimRight(testenv.AMQPURL(), "/")
	if i := strings.Index(base, "://"); i >= 0 {
		if j := strings.Index(base[i+3:], "/"); j >= 0 {
			base = base[:i+3+j]
		}
	}
	return base + "/" + vhost
}

// amqpConn is one row of list_connections.
type amqpConn struct {
	// Name is the name the client gave the connection ("parley gw-1
	// publish"), or else RabbitMQ's (its addresses).
	Name        string
	ConnectedAt time.Time
}

// connections lists the AMQP connections of vhost. (list_connections
// lists every vhost's, whatever -p says.)
func connections(vhost string) ([]amqpConn, error) {
	out, err := ctl(30*time.Second, "list_connections", "vhost", "name", "connected_at", "client_properties", "--formatter", "json")
	if err != nil {
		return nil, err
	}
	var rows []struct {
		VHost       string `json:"vhost"`
		Name        string `json:"name"`
		ConnectedAt int64  `json:"connected_at"`
		// A list of [key, type, value], or "none" while the connection
		// is still opening.
		Props json.RawMessage `json:"client_properties"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return nil, fmt.Errorf("list_connections: %w\n%s", err, out)
	}
	conns := make([]amqpConn, 0, len(rows))
	for _, row := range rows {
		if row.VHost != vhost {
			continue
		}
		c := amqpConn{Name: row.Name, ConnectedAt: time.UnixMilli(row.ConnectedAt)}
		var props [][]any
		_ = json.Unmarshal(row.Props, &props)
		for _, p := range props {
			if len(p) == 3 && p[0] == "connection_name" {
				if s, ok := p[2].(string); ok {
					c.Name = s
				}
			}
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func connNames(conns []amqpConn) []string {
	names := make([]string, len(conns))
	for i, c := range conns {
		names[i] = c.Name
	}
	slices.Sort(names)
	return names
}

// watermark returns the RabbitMQ node's vm_memory_high_watermark as the
// arguments of set_vm_memory_high_watermark that restore it.
func watermark(t testing.TB) []string {
	t.Helper()
	out := strings.TrimSpace(mustCtl(t, "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."))
	// 0.4, or {absolute,1073741824}
	if v, ok := strings.CutPrefix(out, "{absolute,"); ok {
		return []string{"absolute", strings.TrimSuffix(v, "}")}
	}
	if _, err := strconv.ParseFloat(out, 64); err != nil {
		t.Fatalf("unexpected watermark %q", out)
	}
	return []string{out}
}

// alarms returns the node's resource alarms as rabbit_alarm reports them
// ("[]" when there are none).
func alarms() (string, error) {
	out, err := ctl(30*time.Second, "eval", "rabbit_alarm:get_alarms().")
	return strings.TrimSpace(out), err
}

// deadMan arranges for the shell command restore to run after the given
// time even if this test binary dies first (a -timeout panic, a kill): a
// detached process of its own session waits, then restores the broker. The
// returned function disarms it; call it once the test restored the broker
// itself. It is the last line of defence for a machine whose RabbitMQ other
// people's tests use.
func deadMan(t testing.TB, after time.Duration, restore string) (disarm func()) {
	t.Helper()
	script := fmt.Sprintf("sleep %d; %s", int(after.Seconds()), restore)
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the dead man's switch: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// awaitRabbit waits until the RabbitMQ app runs and accepts AMQP
// connections.
func awaitRabbit(t testing.TB) {
	t.Helper()
	if _, err := ctl(150*time.Second, "await_startup", "--timeout", "120"); err != nil {
		t.Fatal(err)
	}
}

// stopRabbit stops the RabbitMQ application (the Erlang node stays up) and
// makes sure it is started again when the test ends, however it ends.
func stopRabbit(t testing.TB) {
	t.Helper()
	disarm := deadMan(t, 90*time.Second, rabbitmqctlBin()+" start_app")
	t.Cleanup(func() {
		defer disarm()
		if _, err := ctl(120*time.Second, "start_app"); err != nil {
			t.Errorf("restore RabbitMQ: %v", err)
		}
		if _, err := ctl(150*time.Second, "await_startup", "--timeout", "120"); err != nil {
			t.Errorf("restore RabbitMQ: %v", err)
		}
	})
	mustCtl(t, "stop_app")
}

// ---------------------------------------------------------------- Redis

// redisServer is a private redis-server for one test, on a port of its own,
// that the test may stop and start again. It persists nothing, as the brief
// for these tests asks: a restart starts empty (a new epoch for every room).
type redisServer struct {
	port int
	dir  string
	proc *exec.Cmd
	done chan struct{}
}

func startRedis(t testing.TB) *redisServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r := &redisServer{port: port, dir: t.TempDir()}
	t.Cleanup(func() { r.kill() })
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *redisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func redisBin() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	return "/usr/bin/redis-server"
}

// start runs the server and waits until it answers PING.
func (r *redisServer) start() error {
	cmd := exec.Command(redisBin(), "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.proc, r.done = cmd, make(chan struct{})
	done := r.done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	opt, err := redis.ParseURL(r.URL())
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return poll(ctx, 20*time.Millisecond, func() (bool, string) {
		err := rdb.Ping(ctx).Err()
		return err == nil, fmt.Sprint("redis-server not answering PING: ", err)
	})
}

// stop shuts the server down (SIGTERM) and waits until it has exited.
func (r *redisServer) stop() error {
	if r.proc == nil {
		return nil
	}
	_ = r.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.proc.Process.Kill()
		<-r.done
		return errors.New("redis-server did not stop within 10s of SIGTERM; killed it")
	}
	r.proc = nil
	return nil
}

// signal sends sig to the server.
func (r *redisServer) signal(sig syscall.Signal) error {
	if r.proc == nil {
		return errors.New("redis-server is not running")
	}
	return r.proc.Process.Signal(sig)
}

func (r *redisServer) kill() {
	if r.proc != nil {
		_ = r.proc.Process.Kill()
		<-r.done
		r.proc = nil
	}
}

// ---------------------------------------------------------------- cluster

// rigOptions say what cluster a test runs.
type rigOptions struct {
	gateways int
	// redisURL is the Redis the gateways use; empty means the machine's,
	// under a prefix of the test's own.
	redisURL string
	env      map[string]string
}

// rig is a test's cluster on a vhost of its own, with what it looked like
// before the faults (the baseline).
type rig struct {
	*cluster.Cluster
	vhost string
	http  *http.Client
	// baseGoroutines[i] is gateway i's go_goroutines before any client
	// connected; baseConns the vhost's connection names then.
	baseGoroutines []int
	baseConns      []string
}

// goroutineSlack is how far above its baseline a gateway's goroutine count
// may settle: the ping loop and timers may have a goroutine or two in
// flight at any moment.
const goroutineSlack = 3

func startRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	vhost := newVhost(t)
	env := map[string]string{
		// The load is a test's, not a person's: no rate limits in the way.
		"PARLEY_SEND_RATE":  "1000",
		"PARLEY_SEND_BURST": "1000",
		// Keys left on the shared Redis expire soon.
		"PARLEY_HISTORY_MAX_AGE": "1h",
	}
	for k, v := range o.env {
		env[k] = v
	}
	// PARLEY_FAULTS_KEEP_LOGS=1 keeps the cluster's logs (gateways, nginx)
	// after the test, for a closer look.
	dir := t.TempDir()
	if os.Getenv("PARLEY_FAULTS_KEEP_LOGS") != "" {
		var err error
		if dir, err = os.MkdirTemp("", "parley-faults-"+strings.ReplaceAll(t.Name(), "/", "-")+"-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("cluster logs kept in %s", dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{
		Gateways: o.gateways,
		Binary:   parleyBinary,
		AMQPURL:  vhostURL(t, vhost),
		RedisURL: o.redisURL,
		Env:      env,
		Dir:      dir,
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	r := &rig{Cluster: c, vhost: vhost, http: &http.Client{
		Timeout: 2 * time.Second,
		// A kept-alive connection holds goroutines in the gateway, which
		// would blur its goroutine count.
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
	t.Cleanup(func() {
		if t.Failed() {
			for i := range c.Len() {
				t.Logf("---- end of %s's log ----\n%s", c.GatewayID(i), tailFile(c.GatewayLog(i), 60))
			}
			t.Logf("---- end of nginx's log ----\n%s", tailFile(filepath.Join(c.Dir(), "nginx.log"), 40))
		}
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
		if o.redisURL == "" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := testenv.DeleteKeys(ctx, c.RedisPrefix()); err != nil {
				t.Errorf("delete redis keys: %v", err)
			}
		}
	})
	for i := range c.Len() {
		n, err := r.goroutines(i)
		if err != nil {
			t.Fatal(err)
		}
		r.baseGoroutines = append(r.baseGoroutines, n)
	}
	conns, err := connections(vhost)
	if err != nil {
		t.Fatal(err)
	}
	r.baseConns = connNames(conns)
	if len(r.baseConns) != 2*c.Len() {
		t.Fatalf("RabbitMQ lists %d connections of %d gateways: %q", len(r.baseConns), c.Len(), r.baseConns)
	}
	t.Logf("baseline: goroutines %v; RabbitMQ connections %q", r.baseGoroutines, r.baseConns)
	return r
}

// get GETs path of gateway i and returns the status and body.
func (r *rig) get(i int, path string) (int, string, error) {
	resp, err := r.http.Get(r.GatewayURL(i) + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// goroutines returns gateway i's go_goroutines metric.
func (r *rig) goroutines(i int) (int, error) {
	_, body, err := r.get(i, "/metrics")
	if err != nil {
		return 0, fmt.Errorf("metrics of %s: %w", r.GatewayID(i), err)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("metrics of %s: no go_goroutines", r.GatewayID(i))
}

// ready reports whether gateway i answers /readyz with 200.
func (r *rig) ready(i int) bool {
	code, _, err := r.get(i, "/readyz")
	return err == nil && code == http.StatusOK
}

// readiness returns how each gateway answers /readyz ("200" or the
// failure), for messages.
func (r *rig) readiness() string {
	var parts []string
	for i := range r.Len() {
		code, body, err := r.get(i, "/readyz")
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", r.GatewayID(i), err))
		} else {
			parts = append(parts, fmt.Sprintf("%s: %d %s", r.GatewayID(i), code, strings.TrimSpace(body)))
		}
	}
	return strings.Join(parts, "; ")
}

// waitAll polls every gateway until want(i) holds for all, or the timeout
// passes; it returns how long that took.
func (r *rig) waitAll(timeout time.Duration, what string, want func(i int) bool) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := poll(ctx, 25*time.Millisecond, func() (bool, string) {
		for i := range r.Len() {
			if !want(i) {
				return false, fmt.Sprintf("%s: not yet %s (%s)", r.GatewayID(i), what, r.readiness())
			}
		}
		return true, ""
	})
	return time.Since(start), err
}

// waitRelinked waits until every gateway is ready and has two RabbitMQ
// connections opened after since (publish and consume, reconnected), and
// returns those connections.
func (r *rig) waitRelinked(since time.Time, timeout time.Duration) ([]amqpConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var conns []amqpConn
	err := poll(ctx, 25*time.Millisecond, func() (bool, string) {
		for i := range r.Len() {
			if !r.ready(i) {
				return false, "not ready: " + r.readiness()
			}
		}
		var err error
		if conns, err = connections(r.vhost); err != nil {
			return false, err.Error()
		}
		fresh := 0
		for _, c := range conns {
			if !c.ConnectedAt.Before(since.Truncate(time.Millisecond)) {
				fresh++
			}
		}
		return fresh == len(conns) && fresh == 2*r.Len(),
			fmt.Sprintf("%d of %d connections opened since the fault, want %d", fresh, len(conns), 2*r.Len())
	})
	return conns, err
}

// relinkedAt returns when gateway i's last connection in conns was opened.
func (r *rig) relinkedAt(i int, conns []amqpConn) time.Time {
	var last time.Time
	for _, c := range conns {
		if strings.HasPrefix(c.Name, "parley "+r.GatewayID(i)+" ") && c.ConnectedAt.After(last) {
			last = c.ConnectedAt
		}
	}
	return last
}

// readyWatch polls every gateway's /readyz every 10ms and records when the
// answer changes, so that a test can tell when a gateway went unready and
// when it was ready again without polling at that moment itself.
type readyWatch struct {
	mu    sync.Mutex
	flips [][]readyFlip // by gateway
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

type readyFlip struct {
	at    time.Time
	ready bool
}

// watchReady starts a readyWatch; it stops when the test ends.
func (r *rig) watchReady(t *testing.T) *readyWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &readyWatch{flips: make([][]readyFlip, r.Len()), stop: cancel}
	for i := range r.Len() {
		w.wg.Go(func() {
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			last := -1
			for {
				ready := r.ready(i)
				if state := map[bool]int{false: 0, true: 1}[ready]; state != last {
					last = state
					w.mu.Lock()
					w.flips[i] = append(w.flips[i], readyFlip{at: time.Now(), ready: ready})
					w.mu.Unlock()
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		w.wg.Wait()
	})
	return w
}

// outage returns when gateway i was last seen unready in [from, until] and
// when it was ready again after that; ok is false if it was never seen
// unready then.
func (w *readyWatch) outage(i int, from, until time.Time) (down, up time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, f := range w.flips[i] {
		if f.at.Before(from) || f.at.After(until) || f.ready {
			continue
		}
		if !ok {
			down = f.at
		}
		ok = true
		up = time.Time{}
		if k+1 < len(w.flips[i]) {
			up = w.flips[i][k+1].at
		}
	}
	return down, up, ok
}

// checkBaseline waits until every gateway's goroutines and the vhost's
// RabbitMQ connections are back to what they were before the test's
// clients connected (each gateway its two connections, publish and
// consume, and no more), and fails the test if they are not within 20s.
func (r *rig) checkBaseline(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var now []int
	err := poll(ctx, 100*time.Millisecond, func() (bool, string) {
		now = now[:0]
		ok := true
		for i := range r.Len() {
			n, err := r.goroutines(i)
			if err != nil {
				return false, err.Error()
			}
			now = append(now, n)
			ok = ok && n <= r.baseGoroutines[i]+goroutineSlack
		}
		return ok, fmt.Sprintf("goroutines %v, baseline %v", now, r.baseGoroutines)
	})
	if err != nil {
		t.Errorf("gateway goroutines not back to baseline: %v", err)
	}
	var names []string
	err = poll(ctx, 200*time.Millisecond, func() (bool, string) {
		conns, err := connections(r.vhost)
		if err != nil {
			return false, err.Error()
		}
		names = connNames(conns)
		return slices.Equal(names, r.baseConns), fmt.Sprintf("connections %q, baseline %q", names, r.baseConns)
	})
	if err != nil {
		t.Errorf("RabbitMQ connections not back to baseline: %v", err)
	}
	t.Logf("after: goroutines %v (baseline %v); RabbitMQ connections %q", now, r.baseGoroutines, names)
}

// crowdOptions are n chatters spread over rooms (n/rooms each), all
// connecting to the URL urls picks for chatter i.
func crowdOptions(t *testing.T, n, rooms int, url func(i int) string) []ChatterOptions {
	opts := make([]ChatterOptions, n)
	for i := range n {
		opts[i] = ChatterOptions{
			URL:  url(i),
			Name: fmt.Sprintf("u%03d", i),
			Key:  fmt.Sprintf("faults-%s-key-%03d", strings.ReplaceAll(t.Name(), "/", "-"), i),
			Room: fmt.Sprintf("room-%d", i%rooms),
		}
	}
	return opts
}

// startCrowd starts the chatters, stops them when the test ends, and waits
// until all are joined.
func startCrowd(t *testing.T, opts []ChatterOptions) *Crowd {
	t.Helper()
	cr := StartCrowd(opts)
	t.Cleanup(cr.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	if err := cr.WaitJoined(ctx); err != nil {
		t.Fatalf("clients joining: %v", err)
	}
	t.Logf("%d clients joined in %v", len(opts), time.Since(start).Round(time.Millisecond))
	return cr
}

// settle waits for the crowd to settle, stops it and checks the report.
func settle(t *testing.T, cr *Crowd) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := cr.Settle(ctx); err != nil {
		t.Errorf("not settled: %v", err)
	}
	t.Logf("settled in %v", time.Since(start).Round(time.Millisecond))
	cr.Stop()
	rep := cr.Report()
	t.Logf("report: %s", rep)
	if err := rep.Err(); err != nil {
		t.Error(err)
	}
	return rep
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// at waits until offset after start, or until ctx ends (reporting false).
// A fault scenario is a timeline: between its steps it waits for time to
// pass under load, not for an event.
func at(ctx context.Context, start time.Time, offset time.Duration) bool {
	return sleepCtx(ctx, time.Until(start.Add(offset)))
}
