//go:build integration

package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testenv"
)

// TestRun starts a two-gateway cluster the way a human does, checks that
// what it prints works, and stops it the way Ctrl-C does (ctx).
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	env := map[string]string{
		"PARLEY_AMQP_URL":  testenv.AMQPURL(),
		"PARLEY_REDIS_URL": testenv.RedisURL(),
		"PARLEY_SEND_RATE": "50",
	}
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"parley-cluster", "-gateways", "2", "-port", "0", "-dir", t.TempDir(), "-namespace="},
			func(k string) string { return env[k] }, outW, io.Discard)
		_ = outW.Close()
	}()

	lines := bufio.NewScanner(outR)
	var url string
	gateways := 0
	for lines.Scan() {
		t.Log(lines.Text())
		if m := regexp.MustCompile(`^Parley: (http://127\.0\.0\.1:\d+) `).FindStringSubmatch(lines.Text()); m != nil {
			url = m[1]
		}
		if regexp.MustCompile(`^  gw-\d+ +pid \d+ +http://127\.0\.0\.1:\d+ `).MatchString(lines.Text()) {
			gateways++
		}
		if gateways == 2 {
			break
		}
	}
	if url == "" || gateways != 2 {
		stop()
		t.Fatalf("run printed no URL or not 2 gateways (url %q); run: %v", url, <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()

	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s/healthz: %s", url, resp.Status)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after its context ended")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("the cluster still answers after run returned")
	}
}
