package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/parleychat/parley/internal/auth"
	"github.com/parleychat/parley/internal/broker"
	"github.com/parleychat/parley/internal/broker/amqpbroker"
	"github.com/parleychat/parley/internal/config"
	"github.com/parleychat/parley/internal/gateway"
	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/presence"
	"github.com/parleychat/parley/internal/presence/redispresence"
	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/stats"
	"github.com/parleychat/parley/internal/store"
	"github.com/parleychat/parley/internal/store/redisstore"
	"github.com/parleychat/parley/web"
)

// run wires a gateway from its configuration and serves until ctx ends or
// SIGINT/SIGTERM arrives, then shuts down in order: drain the clients (they
// reconnect elsewhere), stop the HTTP server, stop consuming, let in-flight
// publishes be confirmed, close the broker and store connections.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 1 && args[1] == "token" {
		return runToken(args[2:], getenv, stdout, stderr)
	}
	if len(args) > 1 {
		return fmt.Errorf(`unknown arguments %q: parley is configured by PARLEY_* environment variables (see README.md); "parley token" mints a test token`, args[1:])
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if cfg.GatewayID == "" {
		cfg.GatewayID = defaultGatewayID()
	}
	log = log.With("gateway", cfg.GatewayID)

	// Before any connection is made, so that a bad key stops the start.
	authn, err := auth.New(auth.Config{
		JWT: auth.JWTConfig{
			Secret:        cfg.JWTSecret,
			PublicKeyFile: cfg.JWTPublicKeyFile,
			JWKSURL:       cfg.JWKSURL,
			JWKSRefresh:   cfg.JWKSRefresh,
			Audience:      cfg.JWTAudience,
			Issuer:        cfg.JWTIssuer,
		},
		Guests: cfg.GuestsAllowed(),
	})
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if !cfg.TokensConfigured() && !cfg.GuestsAllowed() {
		log.Warn("PARLEY_GUESTS=false and no token key: every WebSocket handshake will be refused")
	}
	log.Info("authentication", "mode", authn.String())

	ret := store.Retention{MaxLen: cfg.HistoryMaxLen, MaxAge: cfg.HistoryMaxAge}
	var st store.Store
	var pres presence.Store
	if cfg.RedisURL == "" {
		st = store.NewMemory(ret, nil)
		pres = presence.NewMemory(cfg.PresenceTTL, nil)
		log.Info("using the in-memory store: history lives as long as this process")
	} else {
		rs, err := redisstore.New(ctx, redisstore.Config{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Retention: ret})
		if err != nil {
			return fmt.Errorf("connect to redis: %w", err)
		}
		defer rs.Close()
		st = rs
		// Presence shares the history store's connection pool.
		rp, err := redispresence.New(ctx, redispresence.Config{Client: rs.Client(), Prefix: cfg.RedisPrefix, TTL: cfg.PresenceTTL})
		if err != nil {
			return fmt.Errorf("redis presence: %w", err)
		}
		pres = rp
	}

	var br broker.Broker
	closeBroker := func(context.Context) error { return nil }
	if cfg.AMQPURL == "" {
		br = &broker.Memory{}
		log.Info("using the in-process broker: this gateway is on its own")
	} else {
		ab, err := amqpbroker.New(amqpbroker.Config{
			URL: cfg.AMQPURL, Exchange: cfg.AMQPExchange, GatewayID: cfg.GatewayID, Logger: log,
		})
		if err != nil {
			return fmt.Errorf("rabbitmq: %w", err)
		}
		br, closeBroker = ab, ab.Close
	}

	proxies, _ := cfg.TrustedProxyPrefixes() // checked by config.Load
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Cluster statistics: every gateway reports through the broker, and every
	// gateway's hub hands the reports to its aggregator (GET /api/stats).
	agg := stats.NewAggregator(stats.AggregatorConfig{Gateway: cfg.GatewayID, Interval: cfg.StatsInterval, Logger: log})
	h := hub.New(hub.Config{BrokerReady: br.Ready, OnBody: agg.HandleBody}, st, log)
	// The collector counts the gateway's connections, and the gateway feeds
	// the collector: gw is set before the collector first asks (in Run).
	var gw *gateway.Gateway
	collector := stats.NewCollector(stats.CollectorConfig{
		Gateway:     cfg.GatewayID,
		Interval:    cfg.StatsInterval,
		Connections: func() int { return gw.Connections() },
		Rooms:       h.Rooms,
		Publish:     func(ctx context.Context, body []byte) error { return br.Publish(ctx, body, "") },
		Logger:      log,
	})
	gw = gateway.New(gateway.Deps{
		Logger: log, Hub: h, Store: st, Broker: br, Auth: authn, Web: web.Files, Registry: reg, Presence: pres,
		Stats: collector, StatsAPI: agg.Handler(),
	}, gateway.Options{
		ID:               cfg.GatewayID,
		AllowedOrigins:   cfg.AllowedOrigins,
		TrustedProxies:   proxies,
		MaxConnsPerIP:    cfg.MaxConnsPerIP,
		MaxConnsPerUser:  cfg.MaxConnsPerUser,
		HandshakeTimeout: cfg.HandshakeTimeout,
		APIKey:           cfg.APIKey,
		PresenceListMax:  cfg.PresenceListMax,
		PresenceGrace:    cfg.PresenceGrace,
		MaxFrameBytes:    cfg.MaxFrameBytes,
		Limits:           protocol.Limits{MaxTextBytes: cfg.MaxTextBytes},
		SendQueueBytes:   cfg.SendQueueBytes,
		SendRate:         cfg.SendRate,
		SendBurst:        cfg.SendBurst,
		MaxRoomsPerConn:  cfg.MaxRoomsPerConn,
		JoinHistory:      cfg.JoinHistory,
		PingInterval:     cfg.PingInterval,
		PongTimeout:      cfg.PongTimeout,
		WriteTimeout:     cfg.WriteTimeout,
		WriteDelay:       cfg.WriteDelay,
		NoBatchWrites:    !cfg.BatchWrites,
	})

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           gw.Handler(),
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}

	// Background work runs until shutdown is complete, not until the signal:
	// the hub must keep delivering while clients drain.
	bg, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	var wg sync.WaitGroup
	consumeErr := make(chan error, 1)
	wg.Go(func() { h.Run(bg) })
	wg.Go(func() { gw.Run(bg) })
	wg.Go(func() { collector.Run(bg) })
	wg.Go(func() { consumeErr <- br.Consume(bg, h) })
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	fmt.Fprintf(stdout, "parley %s listening on http://%s\n", cfg.GatewayID, ln.Addr())
	log.Info("listening", "addr", ln.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-consumeErr:
		runErr = fmt.Errorf("consume: %w", err)
	}

	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := gw.Drain(sctx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown incomplete", "err", err)
	}
	stopBg()
	wg.Wait()
	if err := closeBroker(sctx); err != nil {
		log.Warn("broker close incomplete", "err", err)
	}
	log.Info("stopped")
	return runErr
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // checked by config.Load
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// defaultGatewayID names a gateway after its host, with a suffix so that
// replicas sharing a host name (or restarts of one) are told apart.
func defaultGatewayID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
