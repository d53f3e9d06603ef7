package replication

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Database is one database the router reads positions from.
type Database struct {
	// Name labels it in logs, metrics and the status page: "primary", or
	// the name of the replica whose follower it is.
	Name string
	// Variable is the setting its URL came from (PRIMARY_DATABASE_URL,
	// REPLICA_DATABASE_URLS, or the variable either names), so that a
	// warning says what to fix.
	Variable string
	// URL is a postgres:// URL.
	URL string
}

// Cause says why a database cannot be reached, in words an operator acts
// on.
type Cause string

const (
	CauseAuthentication     Cause = "authentication"       // wrong user or password: the credentials rotated?
	CauseRefused            Cause = "refused"              // nothing listens at the host and port
	CauseTimeout            Cause = "timeout"              // no answer within the bound
	CauseTooManyConnections Cause = "too_many_connections" // max_connections reached
	CauseOther              Cause = "other"                // see the error
)

// State is a database's reachability, as of its last attempt.
type State struct {
	Database Database
	// Known is false until the first attempt has ended.
	Known bool
	Up    bool
	// Cause and Err say why it is down; Err never holds a password.
	Cause Cause
	Err   string
	// Since is when the database became up or down.
	Since time.Time
}

// conn is the router's one connection to one database, opened on demand,
// reopened after a failure with jittered exponential backoff, and never
// used by two goroutines at once (its owner's discipline: the primary's
// reads are one at a time, a follower's polls are one loop). Every call is
// bounded by timeout and by the context, which shutdown cancels.
type conn struct {
	db       Database
	cfg      *pgx.ConnConfig
	timeout  time.Duration
	onChange func(State)

	c       *pgx.Conn
	retryAt time.Time
	backoff time.Duration
	lastErr error

	mu    sync.Mutex
	state State
}

// Backoff between connection attempts: from backoffMin, doubling to
// backoffMax. A refused password goes to backoffMax at once: it will not
// be right on the next try, and every try is a failed login in the
// database's log.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
)

func newConn(db Database, appName string, timeout time.Duration, onChange func(State)) (*conn, error) {
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		return nil, errors.New(db.Variable + ": " + redact(err.Error()))
	}
	cfg.RuntimeParams["application_name"] = appName
	// No statement cache: two fixed queries, and a reconnect should not
	// replay preparation.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	if onChange == nil {
		onChange = func(State) {}
	}
	return &conn{db: db, cfg: cfg, timeout: timeout, onChange: onChange, state: State{Database: db}}, nil
}

// errBackingOff is returned, wrapped, while a failed database waits for its
// next attempt.
var errBackingOff = errors.New("waiting to retry")

// query runs one row-returning query, connecting first if need be.
func (c *conn) query(ctx context.Context, sql string, dest ...any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.c == nil {
		if time.Now().Before(c.retryAt) {
			return &UnreachableError{c.State().Cause, errBackingOff, c.lastErr}
		}
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		pc, err := pgx.ConnectConfig(cctx, c.cfg)
		cancel()
		if err != nil {
			return c.failed(ctx, err, true)
		}
		c.c = pc
	}
	qctx, cancel := context.WithTimeout(ctx, c.timeout)
	err := c.c.QueryRow(qctx, sql).Scan(dest...)
	cancel()
	if err != nil {
		c.close()
		return c.failed(ctx, err, false)
	}
	c.backoff = 0
	c.set(State{Database: c.db, Known: true, Up: true})
	return nil
}

// failed records a failure and when to try again. A query that failed on
// an open connection is retried at the next call; a failed connection
// attempt waits its backoff.
func (c *conn) failed(ctx context.Context, err error, connecting bool) error {
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: not the database's fault
	}
	cause := classify(err)
	switch {
	case cause == CauseAuthentication:
		c.backoff = backoffMax
	case !connecting:
		c.backoff = 0
	case c.backoff == 0:
		c.backoff = backoffMin
	default:
		c.backoff = min(2*c.backoff, backoffMax)
	}
	if c.backoff > 0 {
		// Jittered, so that many router processes do not retry in step.
		c.retryAt = time.Now().Add(c.backoff/2 + rand.N(c.backoff/2+1))
	}
	c.lastErr = errors.New(redact(err.Error()))
	c.set(State{Database: c.db, Known: true, Cause: cause, Err: c.lastErr.Error()})
	return &UnreachableError{cause, c.lastErr, nil}
}

// set stores a new state, and reports it when it changes between up and
// down.
func (c *conn) set(s State) {
	c.mu.Lock()
	changed := !c.state.Known || c.state.Up != s.Up || !s.Up && c.state.Cause != s.Cause
	if changed {
		s.Since = time.Now()
	} else {
		s.Since = c.state.Since
	}
	c.state = s
	c.mu.Unlock()
	if changed {
		c.onChange(s)
	}
}

// State returns the database's state.
func (c *conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// down reports whether the database is known to be unreachable.
func (c *conn) down() bool {
	s := c.State()
	return s.Known && !s.Up
}

func (c *conn) close() {
	if c.c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c.c.Close(ctx)
	cancel()
	c.c = nil
}

// UnreachableError is a database that could not be reached, and why.
type UnreachableError struct {
	Cause Cause
	Err   error
	// Last is the error of the last attempt, while the next one waits.
	Last error
}

func (e *UnreachableError) Error() string {
	if e.Last != nil {
		return string(e.Cause) + ": " + e.Err.Error() + " (last: " + e.Last.Error() + ")"
	}
	return string(e.Cause) + ": " + e.Err.Error()
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// classify names the cause of a failed connection or query.
func classify(err error) Cause {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return CauseAuthentication
		case "53300": // too_many_connections
			return CauseTooManyConnections
		}
		return CauseOther
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return CauseRefused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return CauseTimeout
	}
	return CauseOther
}

var passwordRE = regexp.MustCompile(`(postgres(?:ql)?://[^:/@\s]+):[^@\s]*@`)

// redact keeps passwords out of messages about connection strings: pgx's
// errors can quote the URL.
func redact(s string) string { return passwordRE.ReplaceAllString(s, "$1:xxxxx@") }
