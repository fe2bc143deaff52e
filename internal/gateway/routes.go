package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// contentSecurityPolicy lets the browser client load only its own files and
// talk only to its own origin; no inline script or style can run, so a
// message text that slips into markup still cannot execute.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler returns the gateway's HTTP API.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", g.serveWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", g.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/rooms", g.serveRooms)
	mux.HandleFunc("GET /api/rooms/{room}/messages", g.serveMessages)
	mux.HandleFunc("POST /api/rooms/{room}/messages", g.servePost)
	mux.HandleFunc("GET /api/rooms/{room}/presence", g.servePresence)
	if g.statsAPI != nil {
		mux.Handle("GET /api/stats", g.statsAPI)
	}
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		http.ServeFileFS(w, r, g.web, "stats.html")
	})
	files := http.FileServerFS(g.web)
	mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		files.ServeHTTP(w, r)
	}))
	return g.commonHeaders(mux)
}

// commonHeaders sets the headers every response carries: the security ones,
// and which gateway answered (useful behind a load balancer).
func (g *Gateway) commonHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("X-Parley-Gateway", g.opts.ID)
		next.ServeHTTP(w, r)
	})
}

// serveReady answers 200 when this gateway can take clients: not draining,
// and the broker and store reachable. Load balancers and Kubernetes route by
// it.
func (g *Gateway) serveReady(w http.ResponseWriter, r *http.Request) {
	status := map[string]string{"gateway": g.opts.ID, "broker": "ok", "store": "ok"}
	ready := true
	if g.draining.Load() {
		status["gateway"] += " (draining)"
		ready = false
	}
	if err := g.broker.Ready(); err != nil {
		status["broker"], ready = err.Error(), false
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if err := g.store.Ping(ctx); err != nil {
		status["store"], ready = err.Error(), false
	}
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(status)
}
