// Package pgapp is the tiny app the router's Postgres tests deploy twice:
// once on the primary database and once on a streaming standby, as a split
// app is. It also shows the app side of replays in Go: a read that turns out
// to write answers "X-Router-Replay: primary" instead of failing.
//
//	POST /notes       store the body as a note; answers its id
//	GET  /notes/{id}  the note, or 404 if this database does not have it yet
//	GET  /touch       a read that writes (a visit counter), like Devise's trackable
//	GET  /health      ok
package pgapp

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Schema creates the app's tables on the primary.
const Schema = `
CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL);
CREATE TABLE IF NOT EXISTS visits (n bigint NOT NULL);
INSERT INTO visits SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM visits);`

// Handler serves the app on db. name goes into X-Served-By.
func Handler(db *pgxpool.Pool, name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /notes", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<10))
		var id int64
		if err := db.QueryRow(r.Context(), "INSERT INTO notes (body) VALUES ($1) RETURNING id", string(body)).Scan(&id); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, id)
	})
	mux.HandleFunc("GET /notes/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		var body string
		err := db.QueryRow(r.Context(), "SELECT body FROM notes WHERE id = $1", id).Scan(&body)
		if errors.Is(err, pgx.ErrNoRows) {
			http.Error(w, "no such note (yet)", http.StatusNotFound)
			return
		}
		if err != nil {
			fail(w, err)
			return
		}
		io.WriteString(w, body)
	})
	mux.HandleFunc("GET /touch", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		if err := db.QueryRow(r.Context(), "UPDATE visits SET n = n + 1 RETURNING n").Scan(&n); err != nil {
			fail(w, err)
			return
		}
		fmt.Fprintf(w, "visit %d", n)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		mux.ServeHTTP(w, r)
	})
}

// fail answers a database error. On a follower, a write fails with
// read_only_sql_transaction (SQLSTATE 25006): the app asks the router to
// replay the request on the primary instead.
func fail(w http.ResponseWriter, err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25006" {
		w.Header().Set("X-Router-Replay", "primary")
		http.Error(w, "read-only database; replay on the primary", http.StatusServiceUnavailable)
		return
	}
	http.Error(w, "database error", http.StatusInternalServerError)
}
