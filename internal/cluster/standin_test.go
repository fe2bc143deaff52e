//go:build integration

package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a stand-in gateway: run with standInEnv=1 it
// serves what package cluster relies on (/healthz, /readyz, PARLEY_ADDR,
// SIGTERM drains and exits 0) instead of running tests. That tests the
// cluster's process handling fast and without cmd/parley; cluster_test.go
// runs the real gateway too.
const (
	standInEnv = "PARLEY_CLUSTER_TEST_STANDIN"
	// standInFail makes the stand-in exit at once with status 3.
	standInFail = "PARLEY_CLUSTER_TEST_STANDIN_FAIL"
	// standInPIDFile names a file the stand-in writes its pid to.
	standInPIDFile = "PARLEY_CLUSTER_TEST_STANDIN_PIDFILE"
)

func TestMain(m *testing.M) {
	if os.Getenv(standInEnv) == "1" {
		if err := runStandIn(); err != nil {
			fmt.Fprintln(os.Stderr, "stand-in gateway:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runStandIn serves /healthz, /readyz (503 while draining), /whoami (the
// gateway id) and /env?key=PARLEY_... (that variable's value) on
// PARLEY_ADDR until SIGTERM, then drains for at most PARLEY_SHUTDOWN_TIMEOUT.
func runStandIn() error {
	if os.Getenv(standInFail) == "1" {
		fmt.Fprintln(os.Stderr, "stand-in: failing on purpose")
		os.Exit(3)
	}
	if path := os.Getenv(standInPIDFile); path != "" {
		if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("write pid file: %w", err)
		}
	}
	grace := 10 * time.Second
	if v := os.Getenv("PARLEY_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("PARLEY_SHUTDOWN_TIMEOUT: %w", err)
		}
		grace = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	var draining atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(os.Getenv("PARLEY_GATEWAY_ID")))
	})
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		key := r.URL.Query().Get("key")
		if !strings.HasPrefix(key, "PARLEY_") {
			http.Error(w, "PARLEY_* only", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(os.Getenv(key)))
	})
	ln, err := net.Listen("tcp", os.Getenv("PARLEY_ADDR"))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	draining.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
