package router

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/splitapp/router/health"
	"github.com/splitapp/router/stats"
)

// AdminOptions configures the /_router/ endpoints.
type AdminOptions struct {
	// Token guards metrics, status and profiles. If empty, those answer
	// 404: nothing about the deployment is exposed by default.
	Token string
	// Metrics serves the Prometheus exposition. If nil, 404.
	Metrics http.Handler
	// Upstreams and Window feed the status page.
	Upstreams []*health.Upstream
	Window    *stats.Window
	// Started is when the router started, shown on the status page.
	Started time.Time
}

// NewAdmin returns the handler for the router's own paths under /_router/.
// They are answered by the router and never proxied.
func NewAdmin(o AdminOptions) http.Handler {
	r := chi.NewRouter()
	r.Get("/_router/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	r.Group(func(r chi.Router) {
		r.Use(requireToken(o.Token))
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
func requireToken(token string) func(http.Handler) http.Handler {
	// Comparing fixed-length digests keeps the comparison constant-time
	// whatever the length of the guess.
	want := sha256.Sum256([]byte(token))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if token == "" {
				http.Error(w, "404 Not Found: no such router endpoint", http.StatusNotFound)
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
				w.Header().Set("WWW-Authenticate", `Basic realm="router", charset="UTF-8"`)
				http.Error(w, "401 Unauthorized: send ADMIN_TOKEN as a bearer token or basic-auth password", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
