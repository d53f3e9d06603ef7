package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/splitapp/router/config"
	"github.com/splitapp/router/http1"
	"github.com/splitapp/router/router"
)

// newServer binds PORT and returns the server for the proxied traffic.
func newServer(cfg config.Config, rt *router.Router, logger *slog.Logger) (*http1.Server, net.Listener, error) {
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.Port))
	if err != nil {
		return nil, nil, err
	}
	srv := http1.NewServer(rt.Handle, http1.ServerOptions{
		// Heroku's router has already read the request; a client that
		// trickles headers (slowloris) is cut off.
		RequestHeaderTimeout: cfg.RequestHeaderTimeout,
		// Heroku's router keeps idle connections to a dyno for 90 s; closing
		// them sooner races its reuse and shows up as H13/H18 errors.
		IdleTimeout: 100 * time.Second,
		Logger:      logger,
		// Upgraded connections carry no request a drain could wait for,
		// and their clients reconnect to another process sooner for being
		// told at once.
		OnShutdown: func() { rt.CloseTunnels() },
	})
	// Beyond MAX_CONNECTIONS, new connections wait in the kernel's accept
	// queue instead of each costing the router memory.
	return srv, http1.LimitListener(ln, cfg.MaxConnections), nil
}

// serveMetrics serves /metrics without a token on METRICS_ADDR, a private
// address, until ctx is done.
func serveMetrics(ctx context.Context, background *sync.WaitGroup, addr string, h http.Handler, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: metricsOnly(h), ReadHeaderTimeout: 10 * time.Second}
	logger.Info("serving metrics", "addr", ln.Addr().String())
	background.Go(func() { srv.Serve(ln) })
	background.Go(func() {
		<-ctx.Done()
		srv.Close()
	})
	return nil
}

// metricsOnly serves /metrics and /_router/metrics on METRICS_ADDR, a
// private address where no token is asked for.
func metricsOnly(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /_router/metrics", h)
	return mux
}

// serveUntil serves until ctx is done, then shuts down: the listener closes
// at once, so new connections are refused, and in-flight requests have
// until timeout to finish; the process then exits, closing what is left.
func serveUntil(ctx context.Context, srv *http1.Server, ln net.Listener, timeout time.Duration, logger *slog.Logger) int {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		logger.Error("server stopped", "err", err)
		return 1
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", timeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("requests still in flight at SHUTDOWN_TIMEOUT; closing them", "err", err)
		return 0
	}
	if err := <-served; err != nil {
		logger.Error("server stopped", "err", err)
	}
	logger.Info("stopped")
	return 0
}
