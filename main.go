// Command router sits in front of a split app as its web process: reads go
// to the read-only app (whose database is a follower), writes go to the
// primary, and a signed pin cookie sends a client's reads to the primary for
// a while after it writes, so users see their own writes.
//
//	router          serve, configured by the environment (see README.md)
//	router demo     serve in front of a built-in demo app; no configuration
package main

import (
	"context"
	"errors"
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
	"golang.org/x/net/netutil"

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
	policy := &health.Policy{
		Fall:          cfg.HealthFall,
		Rise:          cfg.HealthRise,
		EjectFor:      cfg.EjectDuration,
		EjectAfter5xx: cfg.EjectAfter5xx,
		MaxLag:        cfg.MaxReplicaLag,
	}
	primary := health.NewUpstream(cfg.PrimaryURL, health.Primary, 1, policy)
	replicas := make([]*health.Upstream, len(cfg.Replicas))
	for i, r := range cfg.Replicas {
		replicas[i] = health.NewUpstream(r.URL, health.Replica, r.Weight, policy)
	}
	upstreams := append([]*health.Upstream{primary}, replicas...)
	// Names label logs and metrics; two upstreams on one host (an app listed
	// twice, or the primary and a replica behind one address) get "#2", "#3".
	seenNames := map[string]int{}
	for _, u := range upstreams {
		if seenNames[u.Name]++; seenNames[u.Name] > 1 {
			u.Name += "#" + strconv.Itoa(seenNames[u.Name])
		}
	}
	logEvent := func(ev health.Event) {
		level, msg := slog.LevelWarn, "upstream "+ev.Kind
		switch ev.Kind {
		case "up", "caught up", "replication known":
			level = slog.LevelInfo
		}
		attrs := []any{"backend", ev.Upstream.Name, "role", ev.Upstream.Role.String(), "cause", ev.Cause}
		if ev.For > 0 {
			attrs = append(attrs, "for", ev.For.String())
		}
		logger.Log(context.Background(), level, msg, attrs...)
	}

	registry := prometheus.NewRegistry()
	window := stats.NewWindow(5*time.Minute, nil)
	var rt *router.Router
	m := metrics.New(registry, metrics.Options{
		Upstreams:   upstreams,
		Inflight:    func() int64 { return rt.Inflight() },
		Replication: cfg.PrimaryDatabaseURL != "",
	})
	var background sync.WaitGroup
	// Stop every background loop on every way out, and wait for them.
	bgCtx, stopBackground := context.WithCancel(context.Background())
	defer func() {
		stopBackground()
		background.Wait()
	}()
	var currentLSN func(context.Context) (uint64, error)
	if cfg.PrimaryDatabaseURL != "" {
		primaryDB, err := replication.NewPrimary(cfg.PrimaryDatabaseURL)
		if err != nil {
			logger.Error("cannot use PRIMARY_DATABASE_URL", "err", err)
			return 1
		}
		defer primaryDB.Close()
		currentLSN = primaryDB.CurrentLSN
		// One poll per distinct follower; one URL may serve every replica.
		var followerURLs []string
		followerOf := make([]int, len(replicas))
		seen := map[string]int{}
		for i := range replicas {
			u := cfg.FollowerURL(i)
			if _, ok := seen[u]; !ok {
				seen[u] = len(followerURLs)
				followerURLs = append(followerURLs, u)
			}
			followerOf[i] = seen[u]
		}
		poller := replication.NewPoller(replication.PollerOptions{
			PrimaryURL:   cfg.PrimaryDatabaseURL,
			FollowerURLs: followerURLs,
			Interval:     cfg.LagPollInterval,
			History:      max(5*time.Minute, 2*cfg.MaxReplicaLag),
			OnPosition: func(follower int, pos replication.Position) {
				for i, f := range followerOf {
					if f != follower {
						continue
					}
					if ev, changed := replicas[i].RecordReplication(pos.Replayed, pos.Lag, pos.LagBytes, pos.Err); changed {
						logEvent(ev)
					}
				}
			},
		})
		background.Go(func() { poller.Run(bgCtx) })
	}
	metricsHandler := promhttp.HandlerFor(registry, promhttp.HandlerOpts{})
	rt = router.New(router.Options{
		Primary:               primary,
		Replicas:              replicas,
		Pinner:                pinner,
		PinTTL:                cfg.PinTTL,
		Rules:                 router.Rules{PrimaryPaths: cfg.PrimaryPaths, ReadPaths: cfg.ReadPaths},
		UpstreamTimeout:       cfg.UpstreamTimeout,
		TLSInsecureSkipVerify: cfg.TLSInsecureSkipVerify,
		ConnectTimeout:        cfg.ConnectTimeout,
		PreserveHost:          cfg.PreserveHost,
		AccessLog:             stdout,
		JSONLogs:              cfg.LogFormat == "json",
		Logger:                logger,
		OnEvent:               logEvent,
		Balance:               cfg.Balance,
		PrimaryReadPercent:    100 - cfg.ReadShare,
		PrimaryReadLimit:      cfg.PrimaryReadLimit,
		LSN:                   currentLSN,
		OnRequest: func(s stats.Sample) {
			m.Observe(s)
			window.Add(s)
		},
		Admin: router.NewAdmin(router.AdminOptions{
			Token:     cfg.AdminToken,
			Metrics:   metricsHandler,
			Upstreams: upstreams,
			Window:    window,
			Started:   time.Now(),
		}),
	})
	defer rt.Close()

	checker := health.NewChecker(health.CheckerOptions{
		Upstreams: upstreams,
		Path:      cfg.HealthCheckPath,
		Interval:  cfg.HealthCheckInterval,
		Timeout:   cfg.HealthCheckTimeout,
		OnEvent:   logEvent,
		OnCheck:   m.ObserveCheck,
		Transport: health.NewTransport(cfg.HealthCheckTimeout, cfg.HealthCheckInterval, cfg.TLSInsecureSkipVerify),
	})
	background.Go(func() { checker.Run(bgCtx) })

	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			logger.Error("cannot listen for metrics", "addr", cfg.MetricsAddr, "err", err)
			return 1
		}
		msrv := &http.Server{Handler: metricsOnly(metricsHandler), ReadHeaderTimeout: 10 * time.Second}
		logger.Info("serving metrics", "addr", mln.Addr().String())
		background.Go(func() { msrv.Serve(mln) })
		background.Go(func() {
			<-bgCtx.Done()
			msrv.Close()
		})
	}

	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.Port))
	if err != nil {
		logger.Error("cannot listen", "port", cfg.Port, "err", err)
		return 1
	}
	port := ln.Addr().(*net.TCPAddr).Port
	// Beyond MAX_CONNECTIONS, new connections wait in the kernel's accept
	// queue instead of each costing the router memory.
	ln = netutil.LimitListener(ln, cfg.MaxConnections)
	srv := &http.Server{
		Handler: rt,
		// Heroku's router has already read the request; a client that
		// trickles headers (slowloris) is cut off.
		ReadHeaderTimeout: cfg.RequestHeaderTimeout,
		// A request head larger than this gets 431 from net/http; the
		// router checks single lines against Heroku's 8 KB itself.
		MaxHeaderBytes: router.MaxHeaderBlock,
		// Heroku's router keeps idle connections to a dyno for 90 s; closing
		// them sooner races its reuse and shows up as H13/H18 errors.
		IdleTimeout: 100 * time.Second,
		ErrorLog:    slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	logger.Info("listening", "port", port, "primary", cfg.PrimaryURL.Host, "replicas", len(replicas), "pin_ttl", cfg.PinTTL.String())
	if onListening != nil {
		onListening(port, stdout)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		logger.Error("server stopped", "err", err)
		return 1
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Shutdown closes the listener at once, so new connections are refused,
	// and waits for in-flight requests.
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("requests still in flight at SHUTDOWN_TIMEOUT; closing them", "err", err)
		srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Error("server stopped", "err", err)
	}
	logger.Info("stopped")
	return 0
}

// metricsOnly serves /metrics and /_router/metrics on METRICS_ADDR, a
// private address where no token is asked for.
func metricsOnly(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /_router/metrics", h)
	return mux
}
