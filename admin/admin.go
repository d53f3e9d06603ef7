// Package admin serves the router's own paths under /_router/: the health
// answer, and behind ADMIN_TOKEN the Prometheus metrics, the status page
// and Go's profiles. It reads the upstreams' health, the request counts and
// the databases' state; it knows nothing of how requests are routed.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/splitapp/router/health"
	"github.com/splitapp/router/replication"
	"github.com/splitapp/router/stats"
)

// Options configures the /_router/ endpoints.
type Options struct {
	// Token guards metrics, status and profiles. If empty, those answer
	// 404, saying that ADMIN_TOKEN turns them on: nothing about the
	// deployment is exposed by default.
	Token string
	// Metrics serves the Prometheus exposition. If nil, 404.
	Metrics http.Handler
	// Upstreams and Window feed the status page.
	Upstreams []*health.Upstream
	Window    *stats.Window
	// Started is when the router started, shown on the status page.
	Started time.Time
	// Logger receives one line per client per second of failed
	// authentication. If nil, slog.Default().
	Logger *slog.Logger
	// OnAuthFailure, if set, is told of every failed authentication.
	OnAuthFailure func()
	// Learned, if set, lists the routes replayed on the primary.
	Learned func() []stats.LearnedRoute
	// Databases, if set (the database URLs are), returns each database's
	// state.
	Databases func() []replication.State
}

// New returns the handler for the router's own paths under /_router/.
// They are answered by the router and never proxied.
func New(o Options) http.Handler {
	r := chi.NewRouter()
	r.Get("/_router/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	r.Group(func(r chi.Router) {
		r.Use(requireToken(o.Token, newAuthFailureLog(o.Logger, o.OnAuthFailure)))
		if o.Metrics != nil {
			r.Get("/_router/metrics", o.Metrics.ServeHTTP)
		}
		if o.Window != nil {
			r.Get("/_router/status", statusHandler(o))
		}
		r.HandleFunc("/_router/debug/pprof/*", func(w http.ResponseWriter, r *http.Request) {
			// pprof.Index serves named profiles by path after /debug/pprof/.
			name := strings.TrimPrefix(r.URL.Path, "/_router/debug/pprof/")
			switch name {
			case "cmdline":
				pprof.Cmdline(w, r)
			case "profile":
				pprof.Profile(w, r)
			case "symbol":
				pprof.Symbol(w, r)
			case "trace":
				pprof.Trace(w, r)
			case "":
				pprof.Index(w, r)
			default:
				pprof.Handler(name).ServeHTTP(w, r)
			}
		})
	})
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "404 Not Found: no such router endpoint", http.StatusNotFound)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "405 Method Not Allowed", http.StatusMethodNotAllowed)
	})
	return r
}

// requireToken admits requests that carry the admin token as a bearer token
// or as the password of HTTP basic auth (any user name), so both Prometheus
// and a browser can authenticate. Without a token configured, the guarded
// endpoints do not exist.
func requireToken(token string, failed *authFailureLog) func(http.Handler) http.Handler {
	// Comparing fixed-length digests keeps the comparison constant-time
	// whatever the length of the guess.
	want := sha256.Sum256([]byte(token))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if token == "" {
				// The endpoint exists; it is off until a token guards it.
				http.Error(w, "404 Not Found: "+r.URL.Path+" is turned off; set ADMIN_TOKEN (16 bytes or more, e.g. $(openssl rand -hex 24)) to turn it on", http.StatusNotFound)
				return
			}
			var given string
			if _, pass, ok := r.BasicAuth(); ok {
				given = pass
			} else if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
				given = strings.TrimSpace(v)
			}
			got := sha256.Sum256([]byte(given))
			if given == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				failed.record(clientAddr(r.Header["X-Forwarded-For"], r.RemoteAddr), r.URL.Path)
				w.Header().Set("WWW-Authenticate", `Basic realm="router", charset="UTF-8"`)
				http.Error(w, "401 Unauthorized: send ADMIN_TOKEN as a bearer token or basic-auth password", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// authFailureLog reports failed admin authentication: every failure is
// counted, and each client gets at most one log line a second, carrying how
// many failures it stands for. Guessing a random 16-byte token is hopeless,
// so there is no rate limit; the line and the counter make an attempt
// visible without letting it flood the log.
type authFailureLog struct {
	logger    *slog.Logger
	onFailure func()
	now       func() time.Time

	mu      sync.Mutex
	clients map[string]*authFailures
}

type authFailures struct {
	logged  time.Time // when the client's last line was written
	pending int       // failures since then
}

// maxAuthClients bounds the clients remembered between lines; past it the
// memory is cleared, at worst logging a line early.
const maxAuthClients = 4096

func newAuthFailureLog(logger *slog.Logger, onFailure func()) *authFailureLog {
	if logger == nil {
		logger = slog.Default()
	}
	if onFailure == nil {
		onFailure = func() {}
	}
	return &authFailureLog{logger: logger, onFailure: onFailure, now: time.Now, clients: map[string]*authFailures{}}
}

func (l *authFailureLog) record(client, path string) {
	l.onFailure()
	now := l.now()
	l.mu.Lock()
	c := l.clients[client]
	if c == nil {
		if len(l.clients) >= maxAuthClients {
			clear(l.clients)
		}
		c = &authFailures{}
		l.clients[client] = c
	}
	c.pending++
	if now.Sub(c.logged) < time.Second {
		l.mu.Unlock()
		return
	}
	n := c.pending
	c.logged, c.pending = now, 0
	l.mu.Unlock()
	l.logger.Warn("admin authentication failed", "client", client, "path", path, "failures", n)
}

// clientAddr names a client the way the access log's fwd= field does: the
// X-Forwarded-For chain the front router sent, or the peer's address when
// there was none.
func clientAddr(xff []string, remoteAddr string) string {
	if len(xff) > 0 {
		return xff[0]
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}
