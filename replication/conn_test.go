package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestUnreachableDatabaseBacksOff: a refused connection is reported once,
// with its cause, and not tried again until its backoff has passed.
func TestUnreachableDatabaseBacksOff(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var states []State
	db := Database{Name: "primary", Variable: "PRIMARY_DATABASE_URL", URL: fmt.Sprintf("postgres://u:secret@%s/db?sslmode=disable", addr)}
	c, err := newConn(db, "split-app-router", time.Second, func(s State) { states = append(states, s) })
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = c.query(context.Background(), "SELECT 1", &n)
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Cause != CauseRefused {
		t.Fatalf("query on a closed port: %v, want an UnreachableError with cause refused", err)
	}
	if len(states) != 1 || states[0].Up || states[0].Cause != CauseRefused || !c.down() {
		t.Fatalf("states %+v, want one change to down (refused)", states)
	}
	start := time.Now()
	err = c.query(context.Background(), "SELECT 1", &n)
	if !errors.Is(err, errBackingOff) || time.Since(start) > 100*time.Millisecond {
		t.Errorf("second query within the backoff: %v after %s, want errBackingOff at once", err, time.Since(start))
	}
	if len(states) != 1 {
		t.Errorf("states %+v, want no second report of the same failure", states)
	}
	if got := states[0].Err; len(got) == 0 || strings.Contains(got, "secret") {
		t.Errorf("state error %q, want one without the password", got)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]Cause{
		context.DeadlineExceeded:                         CauseTimeout,
		fmt.Errorf("dial: %w", context.DeadlineExceeded): CauseTimeout,
		errors.New("something else"):                     CauseOther,
	} {
		if got := classify(err); got != want {
			t.Errorf("classify(%v) = %s, want %s", err, got, want)
		}
	}
}
