// Command router sits in front of a split app as its web process: reads go
// to the read-only app (whose database is a follower), writes go to the
// primary, and a signed pin cookie sends a client's reads to the primary for
// a while after it writes, so users see their own writes.
//
//	router          serve, configured by the environment (see README.md)
//	router demo     serve in front of a built-in demo app; no configuration
//	router stats    summarize routing log lines read on stdin
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/splitapp/router/admin"
	"github.com/splitapp/router/config"
	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/logwriter"
	"github.com/splitapp/router/metrics"
	"github.com/splitapp/router/replication"
	"github.com/splitapp/router/router"
	"github.com/splitapp/router/stats"
)

func main() {
	tuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "":
		cfg, err := config.Load(environ)
		if err != nil {
			fmt.Fprintf(stderr, "router: invalid configuration:\n%s\n", indent(err.Error()))
			return 2
		}
		return serve(ctx, cfg, stdout, nil)
	case "demo":
		return runDemo(ctx, environ, stdout, stderr)
	case "stats":
		return runStats(ctx, args[1:], stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "router: unknown command %q\n%s\n", cmd, usage)
	return 2
}

const usage = `usage: router [demo | stats]

  router         serve, configured by the environment (see README.md)
  router demo    serve in front of a built-in demo app; needs no configuration
  router stats   read routing log lines on stdin and print a summary every few seconds
                 (heroku logs -t -p web | bin/router stats [-every 5s])`

// tuneGC sets the garbage collector's defaults for a proxy, unless GOGC or
// GOMEMLIMIT say otherwise. Each request leaves short-lived garbage and the
// live heap is small, so collecting at 200% growth instead of 100% halves
// GC work (measured: 0.37x to 0.43x HAProxy's throughput at c64) for about
// 10 MB more memory. Inside a memory-limited container (a dyno), a soft
// limit at 75% of it makes the collector work harder before the kernel
// would kill the process.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit := cgroupMemoryLimit(); limit > 0 {
			debug.SetMemoryLimit(limit / 4 * 3)
		}
	}
}

// cgroupMemoryLimit returns the container's memory limit in bytes, or 0.
func cgroupMemoryLimit() int64 {
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err == nil && n > 0 && n < 1<<50 {
			return n
		}
	}
	return 0
}

// newLogger returns the logger for the router's own messages: logfmt (or
// JSON) with at= first, as Heroku's lines are, and no timestamp (the
// platform adds one).
func newLogger(w io.Writer, json bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			switch {
			case len(groups) > 0:
			case a.Key == slog.TimeKey:
				return slog.Attr{}
			case a.Key == slog.LevelKey:
				return slog.String("at", strings.ToLower(a.Value.String()))
			}
			return a
		},
	}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

// serve runs the router until ctx is done, then drains in-flight requests
// for up to SHUTDOWN_TIMEOUT. It calls onListening, if set, once the port is
// bound and before serving, with the log output so its text stays in order.
func serve(ctx context.Context, cfg config.Config, stdout io.Writer, onListening func(port int, out io.Writer)) int {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config.Load
	// Request lines and the router's own messages share one batching
	// writer: one write system call per batch, not per request, and the
	// lines keep their order.
	logOut := logwriter.New(stdout, logwriter.Options{})
	defer logOut.Close()
	stdout = logOut
	logger := newLogger(stdout, cfg.LogFormat == "json", level)
	pinner, err := cookie.New(cookie.Options{Name: cfg.CookieName, Keys: cfg.CookieKeys})
	if err != nil {
		logger.Error("starting", "err", err)
		return 1
	}
	ups := newUpstreams(cfg, logger)

	// Every background loop stops on every way out, and is waited for.
	var background sync.WaitGroup
	bgCtx, stopBackground := context.WithCancel(context.Background())
	defer func() {
		stopBackground()
		background.Wait()
	}()

	tracker, err := startReplication(bgCtx, &background, cfg, ups)
	if err != nil {
		logger.Error("cannot use the database URLs", "err", err)
		return 1
	}
	rt, m, metricsHandler := newRouter(cfg, parts{out: stdout, logger: logger, pinner: pinner, ups: ups, tracker: tracker})
	defer rt.Close()

	checker := health.NewChecker(health.CheckerOptions{
		Upstreams: ups.all,
		Path:      cfg.HealthCheckPath,
		Interval:  cfg.HealthCheckInterval,
		Timeout:   cfg.HealthCheckTimeout,
		OnEvent:   ups.logEvent,
		OnCheck:   m.ObserveCheck,
		Transport: health.NewTransport(cfg.HealthCheckTimeout, cfg.HealthCheckInterval, cfg.TLSInsecureSkipVerify),
	})
	background.Go(func() { checker.Run(bgCtx) })

	if cfg.MetricsAddr != "" {
		if err := serveMetrics(bgCtx, &background, cfg.MetricsAddr, metricsHandler, logger); err != nil {
			logger.Error("cannot listen for metrics", "addr", cfg.MetricsAddr, "err", err)
			return 1
		}
	}
	srv, ln, err := newServer(cfg, rt, logger)
	if err != nil {
		logger.Error("cannot listen", "port", cfg.Port, "err", err)
		return 1
	}
	port := ln.Addr().(*net.TCPAddr).Port
	logger.Info("listening", "port", port, "primary", cfg.PrimaryURL.Host, "replicas", len(ups.replicas), "pin_ttl", cfg.PinTTL.String())
	if onListening != nil {
		onListening(port, stdout)
	}
	return serveUntil(ctx, srv, ln, cfg.ShutdownTimeout, logger)
}

// parts are what the router is built from besides its configuration.
type parts struct {
	out     io.Writer // the access log
	logger  *slog.Logger
	pinner  *cookie.Pinner
	ups     *upstreams
	tracker *replication.Tracker // nil without the database URLs
}

// newRouter builds the router with its metrics, its status pages and, when
// the database URLs are set, its replication tracker; it returns the
// metrics too, and their handler, for the health checker and METRICS_ADDR.
func newRouter(cfg config.Config, p parts) (*router.Router, *metrics.Metrics, http.Handler) {
	var currentLSN func(context.Context, bool) (uint64, error)
	var databases func() []replication.State
	if p.tracker != nil {
		currentLSN, databases = p.tracker.PrimaryPosition, p.tracker.States
	}
	registry := prometheus.NewRegistry()
	window := stats.NewWindow(5*time.Minute, nil)
	var rt *router.Router
	m := metrics.New(registry, metrics.Options{
		Upstreams: p.ups.all,
		Inflight:  func() int64 { return rt.Inflight() },
		Databases: databases,
	})
	metricsHandler := promhttp.HandlerFor(registry, promhttp.HandlerOpts{})
	rt = router.New(router.Options{
		Primary:               p.ups.primary,
		Replicas:              p.ups.replicas,
		Pinner:                p.pinner,
		PinTTL:                cfg.PinTTL,
		Rules:                 router.Rules{PrimaryPaths: cfg.PrimaryPaths, ReadPaths: cfg.ReadPaths},
		UpstreamTimeout:       cfg.UpstreamTimeout,
		UpstreamSendTimeout:   cfg.UpstreamSendTimeout,
		ClientSendTimeout:     cfg.ClientSendTimeout,
		ClientBodyTimeout:     cfg.ClientBodyTimeout,
		TLSInsecureSkipVerify: cfg.TLSInsecureSkipVerify,
		ConnectTimeout:        cfg.ConnectTimeout,
		PreserveHost:          cfg.PreserveHost,
		AccessLog:             p.out,
		JSONLogs:              cfg.LogFormat == "json",
		Logger:                p.logger,
		OnEvent:               p.ups.logEvent,
		Balance:               cfg.Balance,
		PrimaryReadPercent:    100 - cfg.ReadShare,
		PrimaryReadLimit:      cfg.PrimaryReadLimit,
		LSN:                   currentLSN,
		OnPinnedWait:          wakeFor(p.tracker),
		LSNPinTTL:             cfg.LSNPinTTL,
		ReplayReadErrors:      cfg.ReplayReadErrors,
		ReplayLearnTTL:        cfg.ReplayLearnTTL,
		OnPanic:               m.Panicked,
		OnRequest: func(s stats.Sample) {
			m.Observe(s)
			window.Add(s)
		},
		Admin: admin.New(admin.Options{
			Token:         cfg.AdminToken,
			Metrics:       metricsHandler,
			Upstreams:     p.ups.all,
			Window:        window,
			Started:       time.Now(),
			Logger:        p.logger,
			OnAuthFailure: m.AdminAuthFailed,
			Learned:       func() []stats.LearnedRoute { return rt.LearnedRoutes() },
			Databases:     databases,
		}),
	})
	return rt, m, metricsHandler
}
