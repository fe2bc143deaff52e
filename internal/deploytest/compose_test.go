package deploytest

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/parleychat/parley/internal/config"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// loadCompose loads docker-compose.yml as docker compose would, with an
// empty environment so that the result does not depend on the caller's.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return s
}

func TestCompose(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"rabbitmq", "redis", "gateway", "nginx"} {
		service(t, p, name)
	}
	absRoot, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("rabbitmq and redis", func(t *testing.T) {
		for _, name := range []string{"rabbitmq", "redis"} {
			checkHealthcheck(t, service(t, p, name))
		}
	})

	t.Run("gateway", func(t *testing.T) {
		gw := service(t, p, "gateway")
		if gw.Deploy == nil || gw.Deploy.Replicas == nil {
			t.Error("gateway: no deploy.replicas")
		} else if got := *gw.Deploy.Replicas; got != 3 {
			t.Errorf("gateway: deploy.replicas is %d, want 3", got)
		}
		if gw.Build == nil {
			t.Fatal("gateway: no build")
		}
		if gw.Build.Context != absRoot || gw.Build.Dockerfile != "deploy/Dockerfile" {
			t.Errorf("gateway: builds %s in %s, want deploy/Dockerfile in the repository root %s",
				gw.Build.Dockerfile, gw.Build.Context, absRoot)
		}
		if gw.Build.Target != "" {
			t.Errorf("gateway: build target %q; the healthcheck needs the default (Alpine) stage's wget", gw.Build.Target)
		}
		checkHealthcheck(t, gw)
		if !strings.Contains(strings.Join(gw.HealthCheck.Test, " "), "/readyz") {
			t.Errorf("gateway: the healthcheck %q does not ask /readyz", gw.HealthCheck.Test)
		}
		for _, dep := range []string{"rabbitmq", "redis"} {
			if d, ok := gw.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("gateway: depends_on %s is %+v, want condition %s", dep, d, types.ServiceConditionHealthy)
			}
		}

		// The environment is a valid gateway configuration, and every
		// variable in it is one the gateway reads (a typo would be ignored
		// silently).
		env := map[string]string{}
		for k, v := range gw.Environment {
			if v == nil {
				t.Errorf("gateway: %s has no value", k)
				continue
			}
			env[k] = *v
			if !slices.Contains(config.Keys(), k) {
				t.Errorf("gateway: %s is not a variable the gateway reads", k)
			}
		}
		cfg, err := config.Load(func(k string) string { return env[k] })
		if err != nil {
			t.Fatalf("gateway: environment: %v", err)
		}
		checkURLHost(t, "PARLEY_AMQP_URL", cfg.AMQPURL, "rabbitmq")
		checkURLHost(t, "PARLEY_REDIS_URL", cfg.RedisURL, "redis")
		rmq := service(t, p, "rabbitmq")
		if u, err := url.Parse(cfg.AMQPURL); err == nil {
			pass, _ := u.User.Password()
			if user := u.User.Username(); user != envOf(rmq, "RABBITMQ_DEFAULT_USER") || pass != envOf(rmq, "RABBITMQ_DEFAULT_PASS") {
				t.Errorf("PARLEY_AMQP_URL's credentials are not rabbitmq's RABBITMQ_DEFAULT_USER/PASS")
			}
		}

		if gw.StopGracePeriod == nil {
			t.Fatal("gateway: no stop_grace_period (Docker's default, 10s, is not above the drain)")
		}
		if grace := time.Duration(*gw.StopGracePeriod); grace <= cfg.ShutdownTimeout {
			t.Errorf("gateway: stop_grace_period %v is not longer than PARLEY_SHUTDOWN_TIMEOUT %v: Docker would kill draining gateways",
				grace, cfg.ShutdownTimeout)
		}
		if gw.StopSignal != "" && gw.StopSignal != "SIGTERM" {
			t.Errorf("gateway: stop_signal %s; the gateway drains on SIGTERM", gw.StopSignal)
		}
		if len(gw.Ports) > 0 {
			t.Errorf("gateway: publishes %+v; only nginx should (replicas cannot share a host port)", gw.Ports)
		}
	})

	t.Run("nginx", func(t *testing.T) {
		ngx := service(t, p, "nginx")
		published := false
		for _, port := range ngx.Ports {
			if port.Target == 8080 && port.Published == "8080" {
				published = true
			}
		}
		if !published {
			t.Errorf("nginx: does not publish 8080:8080: %+v", ngx.Ports)
		}
		mounted := false
		for _, v := range ngx.Volumes {
			if v.Type == types.VolumeTypeBind && v.Source == filepath.Join(absRoot, "deploy", "nginx.conf") &&
				v.Target == "/etc/nginx/nginx.conf" {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("nginx: does not mount deploy/nginx.conf at /etc/nginx/nginx.conf: %+v", ngx.Volumes)
		}
		if d, ok := ngx.DependsOn["gateway"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("nginx: depends_on gateway is %+v, want condition %s", d, types.ServiceConditionHealthy)
		}
		checkNginxConf(t, "gateway:8080", "8080")
	})
}

// checkNginxConf checks deploy/nginx.conf: it listens on listen, balances
// over upstream, and proxies /ws as a WebSocket with the client's Host.
func checkNginxConf(t *testing.T, upstream, listen string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := parseNginx(string(b))
	if err != nil {
		t.Fatalf("deploy/nginx.conf: %v", err)
	}
	https := find(conf, "http")
	if len(https) != 1 {
		t.Fatalf("deploy/nginx.conf: %d http blocks", len(https))
	}
	http := https[0].block

	ups := find(http, "upstream")
	if len(ups) != 1 {
		t.Fatalf("deploy/nginx.conf: %d upstream blocks, want 1", len(ups))
	}
	name := ups[0].args[0]
	if servers := find(ups[0].block, "server", upstream); len(servers) != 1 {
		t.Errorf("deploy/nginx.conf: upstream %s has no server %s", name, upstream)
	}
	// A server marked failed stays marked while its WebSockets are open,
	// which empties the upstream during a rolling restart; failures are
	// skipped per request by proxy_next_upstream instead.
	for _, d := range find(ups[0].block, "server") {
		if !slices.Contains(d.args, "max_fails=0") {
			t.Errorf("deploy/nginx.conf: server %v must have max_fails=0", d.args)
		}
	}
	for _, d := range find(ups[0].block, "sticky") {
		t.Errorf("deploy/nginx.conf: sticky sessions %v; gateways are stateless", d.args)
	}
	for _, d := range find(ups[0].block, "ip_hash") {
		t.Errorf("deploy/nginx.conf: %s makes sessions sticky; gateways are stateless", d.name)
	}

	servers := find(http, "server")
	if len(servers) != 1 {
		t.Fatalf("deploy/nginx.conf: %d server blocks, want 1", len(servers))
	}
	srv := servers[0].block
	if len(find(srv, "listen", listen)) != 1 {
		t.Errorf("deploy/nginx.conf: does not listen on %s", listen)
	}
	if len(find(srv, "proxy_next_upstream", "error")) != 1 {
		t.Errorf("deploy/nginx.conf: no proxy_next_upstream error ...: a dead gateway would fail requests")
	}
	locs := find(srv, "location")
	var ws, rest []directive
	for _, l := range locs {
		switch strings.Join(l.args, " ") {
		case "= /ws", "/ws":
			ws = l.block
		case "/":
			rest = l.block
		}
	}
	if ws == nil || rest == nil {
		t.Fatalf("deploy/nginx.conf: want locations /ws and /, have %+v", locs)
	}
	for which, loc := range map[string][]directive{"/ws": ws, "/": rest} {
		if len(find(loc, "proxy_pass", "http://"+name)) != 1 {
			t.Errorf("deploy/nginx.conf: location %s does not proxy_pass to upstream %s", which, name)
		}
		if h := find(loc, "proxy_set_header", "Host"); len(h) != 1 {
			t.Errorf("deploy/nginx.conf: location %s does not set Host: the gateway's same-origin check needs the client's", which)
		}
	}
	if len(find(ws, "proxy_set_header", "Upgrade", "$http_upgrade")) != 1 {
		t.Error("deploy/nginx.conf: /ws does not pass Upgrade")
	}
	conn := find(ws, "proxy_set_header", "Connection")
	if len(conn) != 1 || !strings.Contains(conn[0].args[1], "upgrade") {
		t.Errorf("deploy/nginx.conf: /ws does not pass Connection: upgrade: %+v", conn)
	}
	if len(find(ws, "proxy_http_version", "1.1"))+len(find(srv, "proxy_http_version", "1.1")) == 0 {
		t.Error("deploy/nginx.conf: /ws is not proxied with HTTP/1.1, which WebSockets need")
	}
	for _, timeout := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
		d := find(ws, timeout)
		if len(d) != 1 {
			t.Errorf("deploy/nginx.conf: /ws has no %s (default 60s)", timeout)
			continue
		}
		if v, err := time.ParseDuration(d[0].args[0]); err != nil || v <= 25*time.Second {
			t.Errorf("deploy/nginx.conf: /ws %s %s is not above the 25s ping interval", timeout, d[0].args[0])
		}
	}
}

// TestDockerComposeConfig asks docker compose itself, where there is one.
func TestDockerComposeConfig(t *testing.T) {
	if err := exec.Command("docker", "compose", "version").Run(); err != nil {
		t.Skip("no docker compose plugin; TestCompose loads the file with compose-go instead")
	}
	cmd := exec.Command("docker", "compose", "-f", "docker-compose.yml", "config", "-q")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker compose config: %v\n%s", err, out)
	}
}

func checkHealthcheck(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
		t.Errorf("%s: no healthcheck (depends_on service_healthy and up --wait need one)", s.Name)
	}
}

func checkURLHost(t *testing.T, key, raw, host string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Errorf("%s: %v", key, err)
		return
	}
	if u.Hostname() != host {
		t.Errorf("%s points at %q, want the %s service", key, u.Hostname(), host)
	}
}

func envOf(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}
