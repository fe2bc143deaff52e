//go:build integration

package cluster_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/cluster"
	"github.com/parleychat/parley/internal/testenv"
)

// TestStandInCluster runs two stand-in gateways (see standin_test.go) behind
// the real nginx: readiness, load balancing, environment, a killed gateway
// being skipped, Restart, a graceful Stop, and Close leaving nothing behind.
func TestStandInCluster(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(ctx, cluster.Options{
		Gateways:   2,
		Binary:     exe,
		AMQPURL:    testenv.AMQPURL(),
		RedisURL:   testenv.RedisURL(),
		Env:        map[string]string{standInEnv: "1", "PARLEY_SEND_RATE": "100", "PARLEY_SHUTDOWN_TIMEOUT": "3s"},
		GatewayEnv: []map[string]string{{"PARLEY_LOG_LEVEL": "debug"}},
		Dir:        t.TempDir(),
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	groups := processGroups(c)
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = c.Close()
		}
	})

	// Every gateway is ready, with the environment it was given.
	for i := range c.Len() {
		mustGet(t, c.GatewayURL(i)+"/readyz", http.StatusOK)
		for key, want := range map[string]string{
			"PARLEY_GATEWAY_ID":    c.GatewayID(i),
			"PARLEY_ADDR":          c.GatewayAddr(i),
			"PARLEY_SEND_RATE":     "100",
			"PARLEY_AMQP_URL":      testenv.AMQPURL(),
			"PARLEY_REDIS_URL":     testenv.RedisURL(),
			"PARLEY_AMQP_EXCHANGE": c.Exchange(),
			"PARLEY_REDIS_PREFIX":  c.RedisPrefix(),
		} {
			if got := mustGet(t, c.GatewayURL(i)+"/env?key="+key, http.StatusOK); got != want {
				t.Errorf("%s: %s=%q, want %q", c.GatewayID(i), key, got, want)
			}
		}
	}
	if got, want := mustGet(t, c.GatewayURL(0)+"/env?key=PARLEY_LOG_LEVEL", http.StatusOK), "debug"; got != want {
		t.Errorf("gw-1: PARLEY_LOG_LEVEL=%q, want %q (GatewayEnv)", got, want)
	}
	if got := mustGet(t, c.GatewayURL(1)+"/env?key=PARLEY_LOG_LEVEL", http.StatusOK); got != "" {
		t.Errorf("gw-2: PARLEY_LOG_LEVEL=%q, want it unset (GatewayEnv[0] is gw-1's only)", got)
	}
	if !strings.HasPrefix(c.Exchange(), "parley.cluster-") || !strings.HasPrefix(c.RedisPrefix(), "parley:cluster-") {
		t.Errorf("exchange %q, prefix %q: want generated ones", c.Exchange(), c.RedisPrefix())
	}

	// nginx answers and spreads requests over both gateways.
	mustGet(t, c.URL()+"/healthz", http.StatusOK)
	if got, want := servedBy(t, c, 20), []string{"gw-1", "gw-2"}; !slices.Equal(got, want) {
		t.Fatalf("requests through nginx were served by %v, want %v", got, want)
	}

	// A killed gateway is skipped: no request through nginx fails.
	pid := c.GatewayPID(0)
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if got := c.GatewayPID(0); got != 0 {
		t.Errorf("GatewayPID(0) = %d after Kill, want 0", got)
	}
	if members, _ := cluster.GroupMembers(pid); len(members) > 0 {
		t.Errorf("killed gateway's processes %v are still there", members)
	}
	if got, want := servedBy(t, c, 20), []string{"gw-2"}; !slices.Equal(got, want) {
		t.Fatalf("with gw-1 killed, requests were served by %v, want %v", got, want)
	}

	// A restarted gateway gets traffic again (once nginx's fail_timeout of 5s
	// has passed).
	if err := c.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	groups = append(groups, c.GatewayPID(0))
	waitFor(t, 15*time.Second, func() bool { return slices.Contains(servedBy(t, c, 4), "gw-1") })

	// SIGTERM: the gateway drains and exits 0; nginx moves on.
	if err := c.Stop(ctx, 1); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got, want := servedBy(t, c, 10), []string{"gw-1"}; !slices.Equal(got, want) {
		t.Fatalf("with gw-2 stopped, requests were served by %v, want %v", got, want)
	}
	if err := c.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	groups = append(groups, c.GatewayPID(1))

	// Close leaves no process, and nothing listening.
	closed = true
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertGone(t, groups)
	if _, err := http.Get(c.URL() + "/healthz"); err == nil {
		t.Error("nginx still answers after Close")
	}
	for _, name := range []string{"gw-1.log", "gw-2.log", "nginx.log", "nginx/nginx.conf"} {
		if _, err := os.Stat(filepath.Join(c.Dir(), name)); err != nil {
			t.Errorf("a given Dir keeps the logs and config: %v", err)
		}
	}
	if b, _ := os.ReadFile(c.GatewayLog(0)); !strings.Contains(string(b), "restarting gw-1") {
		t.Errorf("gw-1's log does not mark the restart:\n%s", b)
	}
}

// TestStartFailure checks that a gateway that cannot start fails Start
// with its log, and that Start stops the gateways it had started.
func TestStartFailure(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "gw-1.pid")
	_, err = cluster.Start(ctx, cluster.Options{
		Gateways: 2,
		Binary:   exe,
		Env:      map[string]string{standInEnv: "1"},
		GatewayEnv: []map[string]string{
			{standInPIDFile: pidFile},
			{standInFail: "1"},
		},
		Dir:  dir,
		Logf: t.Logf,
	})
	if err == nil {
		t.Fatal("Start succeeded with a gateway that exits at once")
	}
	for _, want := range []string{"gw-2 not ready", "exit status 3", "failing on purpose"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start's error lacks %q:\n%v", want, err)
		}
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("gw-1 did not start: %v", err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	assertGone(t, []int{pid})
}

// processGroups returns the process groups a cluster runs: nginx's and each
// gateway's.
func processGroups(c *cluster.Cluster) []int {
	groups := []int{c.NginxPID()}
	for i := range c.Len() {
		groups = append(groups, c.GatewayPID(i))
	}
	return groups
}

// assertGone fails the test if any process of the groups is alive.
func assertGone(t *testing.T, groups []int) {
	t.Helper()
	for _, g := range groups {
		members, err := cluster.GroupMembers(g)
		if err != nil {
			t.Fatal(err)
		}
		if len(members) > 0 {
			t.Errorf("processes %v of group %d outlived the cluster", members, g)
		}
	}
}

// servedBy makes n requests through nginx and returns, sorted, the
// gateways that answered them (all of which must succeed); it checks that
// nginx's X-Upstream-Addr names the gateway that answered.
func servedBy(t *testing.T, c *cluster.Cluster, n int) []string {
	t.Helper()
	addrs := map[string]string{}
	for i := range c.Len() {
		addrs[c.GatewayID(i)] = c.GatewayAddr(i)
	}
	var ids []string
	for range n {
		resp, err := http.Get(c.URL() + "/whoami")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /whoami through nginx: %s %s", resp.Status, body)
		}
		id := string(body)
		// After a retry the header lists every gateway tried; the last one
		// answered.
		tried := strings.Split(resp.Header.Get("X-Upstream-Addr"), ", ")
		if got, want := tried[len(tried)-1], addrs[id]; got != want {
			t.Errorf("X-Upstream-Addr %q for a response from %s (%s)", resp.Header.Get("X-Upstream-Addr"), id, want)
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// mustGet GETs url, checks the status and returns the body.
func mustGet(t *testing.T, url string, status int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %s, want %d: %s", url, resp.Status, status, body)
	}
	return string(body)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
