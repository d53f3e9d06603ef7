// Package demo is a tiny split app to try the router with: one notes store
// whose follower sees each write only after a lag, served by a primary app
// (reads and writes the leader) and a read-only app (reads the follower and
// refuses writes, as an app on a Postgres follower does).
package demo

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Store holds notes. The leader sees a note at once; the follower sees it
// once Lag has passed, like a streaming replica that is behind.
type Store struct {
	Lag time.Duration

	mu    sync.RWMutex
	notes []note
}

type note struct {
	text string
	at   time.Time
}

// Add saves a note on the leader and returns how many notes it now has.
func (s *Store) Add(text string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notes = append(s.notes, note{text: text, at: time.Now()})
	return len(s.notes)
}

// Notes returns the notes the leader, or the follower, can see now.
func (s *Store) Notes(follower bool) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	cutoff := time.Now().Add(-s.Lag)
	var out []string
	for _, n := range s.notes {
		if follower && n.at.After(cutoff) {
			break
		}
		out = append(out, n.text)
	}
	return out
}

// App serves the store as the primary app (readOnly false) or the read-only
// app (readOnly true). Every response names its app in X-Served-By.
//
//	GET  /notes   the notes this app's database can see
//	POST /notes   add the request body (or form field "text") as a note
//	GET  /health  ok
func App(s *Store, readOnly bool) http.Handler {
	role := "primary"
	if readOnly {
		role = "replica"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /notes", func(w http.ResponseWriter, r *http.Request) {
		notes := s.Notes(readOnly)
		fmt.Fprintf(w, "%d notes, read from the %s database:\n", len(notes), role)
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	})
	mux.HandleFunc("POST /notes", func(w http.ResponseWriter, r *http.Request) {
		if readOnly {
			// What an app on a follower answers: its database refuses.
			http.Error(w, "ERROR: cannot execute INSERT in a read-only transaction", http.StatusInternalServerError)
			return
		}
		text := r.FormValue("text")
		if text == "" {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<10))
			text = strings.TrimSpace(string(body))
		}
		if text == "" {
			http.Error(w, "send a note as the body or as text=...", http.StatusBadRequest)
			return
		}
		n := s.Add(text)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "saved note %d on the primary\n", n)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "the %s app of the notes demo: try GET /notes and POST /notes\n", role)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", role)
		mux.ServeHTTP(w, r)
	})
}

// Apps is a running primary and read-only app over one store.
type Apps struct {
	Store      *Store
	PrimaryURL string
	ReplicaURL string
	servers    []*http.Server
}

// Start serves both apps on loopback ports chosen by the kernel.
func Start(lag time.Duration) (*Apps, error) {
	apps := &Apps{Store: &Store{Lag: lag}}
	for _, readOnly := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			apps.Close()
			return nil, fmt.Errorf("demo: %w", err)
		}
		srv := &http.Server{Handler: App(apps.Store, readOnly), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		apps.servers = append(apps.servers, srv)
		if readOnly {
			apps.ReplicaURL = "http://" + ln.Addr().String()
		} else {
			apps.PrimaryURL = "http://" + ln.Addr().String()
		}
	}
	return apps, nil
}

// Close stops both apps.
func (a *Apps) Close() {
	for _, s := range a.servers {
		s.Close()
	}
}
