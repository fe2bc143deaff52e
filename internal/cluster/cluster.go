// Package cluster runs Parley's scaled topology as local processes: N
// gateways, each a parley process on its own 127.0.0.1 port, sharing the
// machine's RabbitMQ and Redis, behind the real nginx with the same
// configuration as docker compose (both are rendered from nginx.conf.tmpl).
//
// It is for humans (cmd/parley-cluster, scripts/cluster.sh) and for tests
// (load balancing, a gateway that dies or restarts, messages crossing
// gateways). Every cluster gets its own RabbitMQ exchange and Redis key
// prefix, so clusters started by tests in parallel never hear each other.
//
// Every process the package starts leads a process group of its own and is
// reaped by a goroutine it owns; Close stops them all, and the kernel kills
// them if the parent dies first, so no process outlives its Cluster.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
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
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parleychat/parley/internal/config"
)

// Options says what cluster to start. The zero value starts three gateways,
// built from this module, on the machine's RabbitMQ and Redis, in a fresh
// namespace.
type Options struct {
	// Gateways is how many gateways to start. Zero means 3, as in
	// docker-compose.yml.
	Gateways int
	// Binary is the parley binary to run. Empty means build ./cmd/parley of
	// the module that contains the working directory into Dir.
	Binary string
	// Race builds the binary with the race detector (when Binary is empty).
	Race bool
	// AMQPURL and RedisURL are the shared broker and store. Empty means the
	// machine's: amqp://guest:guest@127.0.0.1:5672/ and
	// redis://127.0.0.1:6379/0.
	AMQPURL  string
	RedisURL string
	// Namespace names this cluster's RabbitMQ exchange ("parley.<ns>") and
	// Redis key prefix ("parley:<ns>:"). Empty means a random one, which
	// Close deletes from RabbitMQ again; keys under it in Redis expire by the
	// gateways' own retention. A fixed name lets history outlive the cluster.
	Namespace string
	// Env is added to every gateway's environment, after the variables the
	// cluster sets (so it may override PARLEY_AMQP_EXCHANGE, say, but not
	// PARLEY_ADDR or PARLEY_GATEWAY_ID). Variables PARLEY_* of this process
	// are not passed on: a gateway sees only what the cluster and Env say.
	Env map[string]string
	// GatewayEnv[i] is added to gateway i's environment after Env; it may
	// be shorter than Gateways.
	GatewayEnv []map[string]string
	// Port is the port nginx listens on, on 127.0.0.1. Zero means a free one.
	Port int
	// Dir holds the binary, the logs (gw-N.log, nginx.log) and nginx's
	// files. Empty means a temporary directory that Close removes; a given
	// Dir is left in place, logs included.
	Dir string
	// Nginx is the nginx binary. Empty means nginx from PATH, or
	// /usr/sbin/nginx (Debian's, not in a normal user's PATH).
	Nginx string
	// ReadyTimeout bounds the wait for one gateway's /readyz, and for
	// nginx. Zero means 60s.
	ReadyTimeout time.Duration
	// StopTimeout bounds a graceful stop before the process is killed; it
	// must exceed the gateways' PARLEY_SHUTDOWN_TIMEOUT. Zero means 20s.
	StopTimeout time.Duration
	// Logf, when set, is told what the cluster does (tests pass t.Logf).
	// It is called only from Start, Restart and Close.
	Logf func(format string, args ...any)
}

// Default URLs of the services that run on development and CI machines.
const (
	DefaultAMQPURL  = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultRedisURL = "redis://127.0.0.1:6379/0"
)

// Cluster is a running set of gateways behind nginx. Its methods may be
// called concurrently; calls about one gateway are serialised.
type Cluster struct {
	opts      Options
	dir       string
	removeDir bool
	binary    string
	exchange  string
	prefix    string
	dropExch  bool
	nginxConf string
	url       string
	nginxProc *process
	gateways  []*gateway

	closeOnce sync.Once
	closeErr  error
}

// gateway is one gateway slot: its port and environment are fixed, so that
// a restarted gateway is where nginx expects it.
type gateway struct {
	id      string
	port    int
	env     []string
	logPath string

	mu   sync.Mutex
	proc *process // the latest process; nil before the first start
}

// Start builds (unless given) the parley binary, starts the gateways and
// waits until each answers /readyz, then starts nginx in front of them and
// waits until it answers /healthz. On failure it stops whatever it started.
// ctx bounds the start only; the cluster runs until Close.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Gateways == 0 {
		opts.Gateways = 3
	}
	if opts.Gateways < 0 {
		return nil, fmt.Errorf("start cluster: %d gateways", opts.Gateways)
	}
	if opts.AMQPURL == "" {
		opts.AMQPURL = DefaultAMQPURL
	}
	if opts.RedisURL == "" {
		opts.RedisURL = DefaultRedisURL
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 20 * time.Second
	}
	c := &Cluster{opts: opts, dir: opts.Dir}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("start cluster: %w", err), c.Close())
		}
	}()

	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "parley-cluster-"); err != nil {
			return nil, fmt.Errorf("make directory: %w", err)
		}
		c.removeDir = true
	} else if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("make directory: %w", err)
	}
	if c.dir, err = filepath.Abs(c.dir); err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}

	ns := opts.Namespace
	if ns == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		ns = "cluster-" + hex.EncodeToString(b[:])
		c.dropExch = true
	}
	c.exchange, c.prefix = "parley."+ns, "parley:"+ns+":"

	nginx, err := findNginx(opts.Nginx)
	if err != nil {
		return nil, err
	}
	if c.binary = opts.Binary; c.binary == "" {
		c.logf("cluster: building cmd/parley")
		if c.binary, err = Build(ctx, "", filepath.Join(c.dir, "parley"), opts.Race); err != nil {
			return nil, err
		}
	}

	ports, err := freePorts(opts.Gateways)
	if err != nil {
		return nil, err
	}
	for i := range opts.Gateways {
		g := &gateway{
			id:      "gw-" + strconv.Itoa(i+1),
			port:    ports[i],
			logPath: filepath.Join(c.dir, "gw-"+strconv.Itoa(i+1)+".log"),
		}
		g.env = c.gatewayEnv(g, i)
		c.gateways = append(c.gateways, g)
	}
	// Start them all, then wait for each: they connect to RabbitMQ and Redis
	// in parallel.
	for _, g := range c.gateways {
		if err := c.startGateway(g, true); err != nil {
			return nil, err
		}
	}
	for _, g := range c.gateways {
		if err := c.waitReady(ctx, g); err != nil {
			return nil, err
		}
	}
	if err := c.startNginx(ctx, nginx); err != nil {
		return nil, err
	}
	return c, nil
}

// PassedOn returns the PARLEY_* settings getenv has a value for, except
// those a cluster sets itself (addresses, ids, where RabbitMQ and Redis are,
// the namespace), for Options.Env: a command that starts a cluster hands
// its own configuration on to the gateways.
func PassedOn(getenv func(string) string) map[string]string {
	env := map[string]string{}
	for _, k := range config.Keys() {
		switch k {
		case "PARLEY_ADDR", "PARLEY_GATEWAY_ID", "PARLEY_AMQP_URL", "PARLEY_REDIS_URL", "PARLEY_AMQP_EXCHANGE", "PARLEY_REDIS_PREFIX":
			continue
		}
		if v := getenv(k); v != "" {
			env[k] = v
		}
	}
	return env
}

// gatewayEnv is gateway i's environment: ours without PARLEY_*, then the
// cluster's settings, then Options.Env and GatewayEnv[i], then what must not
// be overridden.
func (c *Cluster) gatewayEnv(g *gateway, i int) []string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "PARLEY_") {
			env[k] = v
		}
	}
	env["PARLEY_AMQP_URL"] = c.opts.AMQPURL
	env["PARLEY_REDIS_URL"] = c.opts.RedisURL
	env["PARLEY_AMQP_EXCHANGE"] = c.exchange
	env["PARLEY_REDIS_PREFIX"] = c.prefix
	// nginx runs on this machine: believe its X-Forwarded-For.
	env["PARLEY_TRUSTED_PROXIES"] = "127.0.0.0/8,::1/128"
	maps.Copy(env, c.opts.Env)
	if i < len(c.opts.GatewayEnv) {
		maps.Copy(env, c.opts.GatewayEnv[i])
	}
	env["PARLEY_ADDR"] = "127.0.0.1:" + strconv.Itoa(g.port)
	env["PARLEY_GATEWAY_ID"] = g.id
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// startGateway starts g's process; first says whether this is the cluster's
// start (a fresh log) or a restart (appended to the log).
func (c *Cluster) startGateway(g *gateway, first bool) error {
	if !first {
		if f, err := os.OpenFile(g.logPath, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			_, _ = fmt.Fprintf(f, "\n---- parley-cluster: restarting %s at %s ----\n", g.id, time.Now().Format(time.RFC3339Nano))
			_ = f.Close()
		}
	}
	p, err := startProcess(g.id, c.binary, nil, g.env, g.logPath, first, syscall.SIGKILL)
	if err != nil {
		return err
	}
	g.proc = p
	c.logf("cluster: %s started, pid %d, %s, log %s", g.id, p.pid(), c.gatewayURL(g), g.logPath)
	return nil
}

// waitReady polls g's /readyz until it answers 200, g's process exits, or
// the ready timeout passes.
func (c *Cluster) waitReady(ctx context.Context, g *gateway) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	url := c.gatewayURL(g) + "/readyz"
	last, err := poll(ctx, g.proc, url)
	if err != nil {
		return fmt.Errorf("%s not ready (%s: %s): %w\n%s", g.id, url, last, err, tail(g.logPath))
	}
	return nil
}

// poll GETs url until it answers 200. It gives up when p (if any) exits or
// ctx ends, and returns the last answer or failure it saw.
func poll(ctx context.Context, p *process, url string) (last string, err error) {
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return "", fmt.Errorf("request %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return resp.Status, nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		var exited <-chan struct{}
		if p != nil {
			exited = p.done
		}
		select {
		case <-exited:
			return last, fmt.Errorf("process exited: %v", p.err)
		case <-ctx.Done():
			return last, ctx.Err()
		case <-tick.C:
		}
	}
}

// startNginx renders the configuration, checks it with nginx -t, starts
// nginx and waits until /healthz answers through it.
func (c *Cluster) startNginx(ctx context.Context, nginx string) error {
	prefix := filepath.Join(c.dir, "nginx")
	tmp := filepath.Join(prefix, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("nginx directory: %w", err)
	}
	port := c.opts.Port
	if port == 0 {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		port = ports[0]
	}
	cfg := NginxConfig{
		Origin:          []string{"Rendered from internal/cluster/nginx.conf.tmpl by package cluster for a local cluster."},
		WorkerProcesses: "1",
		PIDFile:         filepath.Join(prefix, "nginx.pid"),
		TempDir:         tmp,
		Listen:          "127.0.0.1:" + strconv.Itoa(port),
	}
	if os.Geteuid() == 0 {
		// Workers would otherwise run as nobody, who cannot enter a private
		// temporary directory.
		cfg.User = "root"
	}
	for _, g := range c.gateways {
		cfg.Upstreams = append(cfg.Upstreams, "127.0.0.1:"+strconv.Itoa(g.port))
	}
	conf, err := RenderNginx(cfg)
	if err != nil {
		return err
	}
	c.nginxConf = filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(c.nginxConf, conf, 0o644); err != nil {
		return fmt.Errorf("write nginx config: %w", err)
	}
	args := []string{"-p", prefix + "/", "-c", c.nginxConf, "-e", "stderr"}
	out, err := exec.CommandContext(ctx, nginx, append(args, "-t", "-q")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nginx -t %s: %w\n%s", c.nginxConf, err, out)
	}
	logPath := filepath.Join(c.dir, "nginx.log")
	// SIGTERM on the parent's death: nginx's master then stops its workers,
	// which SIGKILL to the master alone would orphan.
	p, err := startProcess("nginx", nginx, append(args, "-g", "daemon off;"), os.Environ(), logPath, true, syscall.SIGTERM)
	if err != nil {
		return err
	}
	c.nginxProc = p
	c.url = "http://127.0.0.1:" + strconv.Itoa(port)
	c.logf("cluster: nginx started, pid %d, %s, config %s, log %s", p.pid(), c.url, c.nginxConf, logPath)

	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	if last, err := poll(ctx, p, c.url+"/healthz"); err != nil {
		return fmt.Errorf("nginx not answering (%s/healthz: %s): %w\n%s", c.url, last, err, tail(logPath))
	}
	return nil
}

// URL returns the load balancer's base URL, "http://127.0.0.1:<port>".
func (c *Cluster) URL() string { return c.url }

// Dir returns the directory with the logs and nginx's configuration.
func (c *Cluster) Dir() string { return c.dir }

// NginxConfigPath returns the rendered nginx configuration's path.
func (c *Cluster) NginxConfigPath() string { return c.nginxConf }

// NginxPID returns the nginx master's process id.
func (c *Cluster) NginxPID() int { return c.nginxProc.pid() }

// Exchange returns the RabbitMQ exchange the gateways share.
func (c *Cluster) Exchange() string { return c.exchange }

// RedisPrefix returns the Redis key prefix the gateways share.
func (c *Cluster) RedisPrefix() string { return c.prefix }

// Len returns the number of gateways.
func (c *Cluster) Len() int { return len(c.gateways) }

// GatewayURL returns gateway i's own base URL, bypassing nginx. Gateways
// are numbered from 0; gateway i has the id gw-<i+1>.
func (c *Cluster) GatewayURL(i int) string { return c.gatewayURL(c.gateways[i]) }

func (c *Cluster) gatewayURL(g *gateway) string {
	return "http://127.0.0.1:" + strconv.Itoa(g.port)
}

// GatewayID returns gateway i's PARLEY_GATEWAY_ID.
func (c *Cluster) GatewayID(i int) string { return c.gateways[i].id }

// GatewayAddr returns gateway i's host:port, as nginx reports it in the
// X-Upstream-Addr response header.
func (c *Cluster) GatewayAddr(i int) string {
	return "127.0.0.1:" + strconv.Itoa(c.gateways[i].port)
}

// GatewayLog returns the path of gateway i's log (stdout and stderr of
// every process it ran as).
func (c *Cluster) GatewayLog(i int) string { return c.gateways[i].logPath }

// GatewayPID returns the process id of gateway i, or 0 if it is not
// running.
func (c *Cluster) GatewayPID(i int) int {
	g := c.gateways[i]
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.proc == nil || g.proc.exited() {
		return 0
	}
	return g.proc.pid()
}

// Kill kills gateway i with SIGKILL, as a crash would, and waits until it
// is gone. Killing a gateway that is not running does nothing.
func (c *Cluster) Kill(i int) error {
	g := c.gateways[i]
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.proc == nil {
		return nil
	}
	if err := g.proc.kill(); err != nil {
		return fmt.Errorf("kill %s: %w", g.id, err)
	}
	return nil
}

// Stop sends gateway i SIGTERM, as a deploy would, and waits until it
// exits. It returns an error unless the gateway exited with status 0; one
// that does not exit before ctx ends (or Options.StopTimeout passes) is
// killed. Stopping a gateway that is not running does nothing.
func (c *Cluster) Stop(ctx context.Context, i int) error {
	g := c.gateways[i]
	g.mu.Lock()
	defer g.mu.Unlock()
	return c.stopGateway(ctx, g)
}

func (c *Cluster) stopGateway(ctx context.Context, g *gateway) error {
	if g.proc == nil || g.proc.exited() {
		return nil
	}
	grace := c.opts.StopTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < grace {
		grace = time.Until(d)
	}
	if err := g.proc.stop(syscall.SIGTERM, grace); err != nil {
		return fmt.Errorf("stop %s: %w\n%s", g.id, err, tail(g.logPath))
	}
	return nil
}

// Restart stops gateway i as Stop does, if it is running, starts it again on
// the same port with the same environment, and waits until it is ready.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	g := c.gateways[i]
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := c.stopGateway(ctx, g); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := c.startGateway(g, false); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := c.waitReady(ctx, g); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

// Close stops nginx and every gateway (SIGTERM, then SIGKILL after
// Options.StopTimeout), makes sure no process of theirs is left, deletes a
// generated RabbitMQ exchange and removes a temporary Dir. It returns the
// errors met on the way, including gateways that did not exit cleanly;
// calling it again returns the same.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Cluster) close() error {
	var errs []error
	// nginx first, so that no new request reaches a stopping gateway.
	if c.nginxProc != nil {
		// SIGTERM is nginx's fast shutdown: it closes open WebSockets at
		// once instead of waiting for them (SIGQUIT).
		if err := c.nginxProc.stop(syscall.SIGTERM, c.opts.StopTimeout); err != nil {
			errs = append(errs, fmt.Errorf("stop nginx: %w", err))
		}
	}
	var wg sync.WaitGroup
	gwErrs := make([]error, len(c.gateways))
	for i, g := range c.gateways {
		wg.Go(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			gwErrs[i] = c.stopGateway(context.Background(), g)
		})
	}
	wg.Wait()
	errs = append(errs, gwErrs...)
	if c.dropExch && c.exchange != "" && len(c.gateways) > 0 {
		if err := deleteExchange(c.opts.AMQPURL, c.exchange); err != nil {
			c.logf("cluster: %v", err) // best effort: the broker may be down on purpose
		}
	}
	if c.removeDir {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.dir, err))
		}
	}
	c.logf("cluster: closed")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close cluster: %w", err)
	}
	return nil
}

// deleteExchange deletes the cluster's exchange, which the gateways declared
// durable, so that test runs do not pile exchanges up on a shared broker.
func deleteExchange(url, name string) error {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("delete exchange %s: %w", name, err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("delete exchange %s: %w", name, err)
	}
	defer func() { _ = ch.Close() }()
	if err := ch.ExchangeDelete(name, false, false); err != nil {
		return fmt.Errorf("delete exchange %s: %w", name, err)
	}
	return nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

// Build compiles ./cmd/parley of the module in moduleDir (empty: the module
// that contains the working directory) into out and returns out's absolute
// path.
func Build(ctx context.Context, moduleDir, out string, race bool) (string, error) {
	if moduleDir == "" {
		b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil {
			return "", fmt.Errorf("build parley: find module: %w", err)
		}
		gomod := strings.TrimSpace(string(b))
		if gomod == "" || gomod == os.DevNull {
			return "", errors.New("build parley: the working directory is not inside the parley module")
		}
		moduleDir = filepath.Dir(gomod)
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return "", fmt.Errorf("build parley: %w", err)
	}
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/parley")...)
	cmd.Dir = moduleDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build parley: go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, b)
	}
	return out, nil
}

// findNginx returns path, or nginx from PATH, or Debian's /usr/sbin/nginx.
func findNginx(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errors.New("nginx not found in PATH or /usr/sbin: install it (apt-get install -y nginx)")
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago. Holding all the listeners until the end keeps them distinct.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const keep = 4000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return "---- end of " + path + " ----\n" + string(b)
}
