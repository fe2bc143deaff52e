package cluster_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleychat/parley/internal/cluster"
)

// deployNginxConf is deploy/nginx.conf, seen from this package's directory.
const deployNginxConf = "../../deploy/nginx.conf"

// TestDeployNginxConf keeps deploy/nginx.conf equal to the template rendered
// for docker compose, so that the nginx tested by the local cluster and the
// one deployed cannot drift. PARLEY_UPDATE_NGINX_CONF=1 rewrites the file.
func TestDeployNginxConf(t *testing.T) {
	want, err := cluster.RenderNginx(cluster.ComposeNginxConfig())
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("PARLEY_UPDATE_NGINX_CONF") == "1" {
		if err := os.WriteFile(deployNginxConf, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", deployNginxConf)
	}
	got, err := os.ReadFile(deployNginxConf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not internal/cluster/nginx.conf.tmpl rendered for compose; edit the template, then run\n"+
			"  PARLEY_UPDATE_NGINX_CONF=1 go test ./internal/cluster -run TestDeployNginxConf\n%s",
			deployNginxConf, firstDiff(string(got), string(want)))
	}
}

// TestRenderNginxLocal checks what differs in a local rendering, and that
// nginx accepts it.
func TestRenderNginxLocal(t *testing.T) {
	dir := t.TempDir()
	cfg := cluster.NginxConfig{
		Origin:          []string{"test"},
		WorkerProcesses: "1",
		PIDFile:         filepath.Join(dir, "nginx.pid"),
		TempDir:         dir,
		Listen:          "127.0.0.1:18080",
		Upstreams:       []string{"127.0.0.1:18081", "127.0.0.1:18082"},
	}
	b, err := cluster.RenderNginx(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, want := range []string{
		"\n        server 127.0.0.1:18081 max_fails=0;\n        server 127.0.0.1:18082 max_fails=0;\n",
		"\n        listen 127.0.0.1:18080;\n",
		"\n    proxy_temp_path       " + dir + "/proxy_temp;\n",
		"\npid " + cfg.PIDFile + ";\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("rendered config lacks %q", want)
		}
	}
	for _, unwanted := range []string{"resolver", " resolve ", "\nuser "} {
		if strings.Contains(conf, unwanted) {
			t.Errorf("rendered config has %q, which only compose needs", unwanted)
		}
	}
	if t.Failed() {
		t.Log(conf)
	}

	nginx, err := exec.LookPath("nginx")
	if err != nil {
		nginx = "/usr/sbin/nginx"
		if _, err := os.Stat(nginx); err != nil {
			t.Skip("nginx is not installed")
		}
	}
	path := filepath.Join(dir, "nginx.conf")
	if os.Geteuid() == 0 {
		cfg.User = "root"
		if b, err = cluster.RenderNginx(cfg); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(nginx, "-t", "-q", "-p", dir+"/", "-c", path, "-e", "stderr").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

func TestRenderNginxRejectsIncomplete(t *testing.T) {
	if _, err := cluster.RenderNginx(cluster.NginxConfig{}); err == nil {
		t.Fatal("RenderNginx of an empty config succeeded")
	}
}

// firstDiff describes the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n  have: %s\n  want: %s", i+1, gl, wl)
		}
	}
	return "(they differ in line endings only)"
}
