// Package gatewaytest runs a whole gateway in the test process: the embedded
// broker and store (or ones a test passes in), the hub, the gateway and an
// httptest server, started in the order run() starts them and stopped in the
// order it stops them when the test ends. Gateway tests, benchmarks and the
// load generator's tests share it.
package gatewaytest

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleychat/parley/internal/auth"
	"github.com/parleychat/parley/internal/broker"
	"github.com/parleychat/parley/internal/gateway"
	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/presence"
	"github.com/parleychat/parley/internal/store"
)

// Config says what to run; the zero value of each field means the embedded
// default named.
type Config struct {
	Options gateway.Options
	Hub     hub.Config
	Broker  broker.Broker         // nil: a broker.Memory
	Store   store.Store           // nil: a store.Memory
	Auth    gateway.Authenticator // nil: auth.Guest
	// Presence nil means an in-memory presence store with a one-minute TTL.
	Presence presence.Store
	// Log sends the gateway's log (debug and up) to the test log, so a
	// failing test shows what the gateway saw; false discards it, as
	// benchmarks want.
	Log bool
}

// Gateway is a running gateway.
type Gateway struct {
	*gateway.Gateway
	// URL is the httptest server's base URL (http://127.0.0.1:port).
	URL   string
	Store store.Store
}

// Start runs a gateway until the test ends; then it drains it (a drain that
// does not finish fails the test), closes the server, and waits for every
// goroutine it started.
func Start(tb testing.TB, cfg Config) *Gateway {
	tb.Helper()
	if cfg.Broker == nil {
		cfg.Broker = &broker.Memory{}
	}
	if cfg.Store == nil {
		cfg.Store = store.NewMemory(store.Retention{}, nil)
	}
	if cfg.Auth == nil {
		cfg.Auth = auth.Guest{}
	}
	if cfg.Presence == nil {
		cfg.Presence = presence.NewMemory(time.Minute, nil)
	}
	if cfg.Options.ID == "" {
		cfg.Options.ID = "gw-test"
	}
	var out io.Writer = io.Discard
	if cfg.Log {
		out = testWriter{tb}
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := hub.New(cfg.Hub, cfg.Store, log)
	g := gateway.New(gateway.Deps{
		Logger: log, Hub: h, Store: cfg.Store, Broker: cfg.Broker, Auth: cfg.Auth, Presence: cfg.Presence,
		Web:      fstest.MapFS{"index.html": {Data: []byte("<!doctype html><title>Parley</title>")}},
		Registry: prometheus.NewRegistry(),
	}, cfg.Options)
	srv := httptest.NewServer(g.Handler())

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.Run(ctx) })
	wg.Go(func() { _ = cfg.Broker.Consume(ctx, h) })
	wg.Go(func() { g.Run(ctx) })
	tb.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		if err := g.Drain(dctx); err != nil {
			tb.Errorf("drain: %v", err)
		}
		srv.Close()
		cancel()
		wg.Wait()
	})
	return &Gateway{Gateway: g, URL: srv.URL, Store: cfg.Store}
}

// testWriter sends log lines to the test log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
