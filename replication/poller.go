package replication

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

var passwordRE = regexp.MustCompile(`(postgres(?:ql)?://[^:/@\s]+):[^@\s]*@`)

// Position is one follower's replication state as of a poll.
type Position struct {
	// Replayed is the last WAL position the follower has applied: reads
	// there see every write at or below it.
	Replayed LSN
	// Lag is how long ago the primary was first seen past Replayed,
	// measured on this process' clock; zero when caught up.
	Lag time.Duration
	// LagBytes is the WAL the follower has yet to apply.
	LagBytes uint64
	// Err is set when the follower could not be polled; the other fields
	// are then meaningless.
	Err error
}

// PollerOptions configures a Poller.
type PollerOptions struct {
	// PrimaryURL and FollowerURLs are postgres:// URLs.
	PrimaryURL   string
	FollowerURLs []string
	// Interval between polls. If zero, 100ms.
	Interval time.Duration
	// Timeout bounds each query and connection attempt. If zero, the
	// larger of 1s and Interval.
	Timeout time.Duration
	// OnPosition is called after every poll with each follower's position,
	// in FollowerURLs order.
	OnPosition func(follower int, p Position)
	// History is how far back the lag can be measured. If zero, 5 minutes.
	History time.Duration
}

// Poller reads the primary's position and every follower's replay position
// each Interval, over one connection each, reconnecting after failures.
type Poller struct {
	o       PollerOptions
	history []sample // primary positions seen, oldest first
}

type sample struct {
	at  time.Time
	lsn LSN
}

// NewPoller returns a Poller; Run starts it.
func NewPoller(o PollerOptions) *Poller {
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = max(time.Second, o.Interval)
	}
	if o.History <= 0 {
		o.History = 5 * time.Minute
	}
	return &Poller{o: o}
}

// Run polls until ctx is done, then closes its connections.
func (p *Poller) Run(ctx context.Context) {
	primary := &conn{url: p.o.PrimaryURL, timeout: p.o.Timeout}
	followers := make([]*conn, len(p.o.FollowerURLs))
	for i, u := range p.o.FollowerURLs {
		followers[i] = &conn{url: u, timeout: p.o.Timeout}
	}
	defer func() {
		primary.close()
		for _, f := range followers {
			f.close()
		}
	}()
	ticker := time.NewTicker(p.o.Interval)
	defer ticker.Stop()
	for {
		p.pollOnce(ctx, primary, followers)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (p *Poller) pollOnce(ctx context.Context, primary *conn, followers []*conn) {
	now := time.Now()
	if lsn, err := primary.lsn(ctx, "SELECT pg_current_wal_lsn()::text"); err == nil {
		p.record(now, lsn)
	}
	positions := make([]Position, len(followers))
	var wg sync.WaitGroup
	for i, f := range followers {
		wg.Go(func() {
			// On a follower, the replay position; on a database that is not
			// in recovery (a promoted follower), its own position.
			replayed, err := f.lsn(ctx, `SELECT CASE WHEN pg_is_in_recovery()
				THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text`)
			positions[i] = p.position(now, replayed, err)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for i, pos := range positions {
		if p.o.OnPosition != nil {
			p.o.OnPosition(i, pos)
		}
	}
}

// record keeps the primary's position history, dropping what is older than
// History and repeats of the latest position.
func (p *Poller) record(now time.Time, lsn LSN) {
	if n := len(p.history); n > 0 && p.history[n-1].lsn >= lsn {
		return
	}
	p.history = append(p.history, sample{now, lsn})
	cut := 0
	for cut < len(p.history)-1 && now.Sub(p.history[cut].at) > p.o.History {
		cut++
	}
	p.history = p.history[cut:]
}

// position derives lag from the history: the follower is as far behind as
// the first primary position it has not replayed is old.
func (p *Poller) position(now time.Time, replayed LSN, err error) Position {
	if err != nil {
		return Position{Err: err}
	}
	pos := Position{Replayed: replayed}
	for _, s := range p.history {
		if s.lsn > replayed {
			pos.Lag = now.Sub(s.at)
			break
		}
	}
	if n := len(p.history); n > 0 && p.history[n-1].lsn > replayed {
		pos.LagBytes = p.history[n-1].lsn - replayed
	}
	return pos
}

// conn is one polling connection, opened on demand and reopened after a
// failure.
type conn struct {
	url     string
	timeout time.Duration
	c       *pgx.Conn
}

func (c *conn) lsn(ctx context.Context, query string) (LSN, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if c.c == nil {
		cfg, err := pgx.ParseConfig(c.url)
		if err != nil {
			return 0, redact(err)
		}
		cfg.RuntimeParams["application_name"] = "split-app-router"
		if c.c, err = pgx.ConnectConfig(ctx, cfg); err != nil {
			c.c = nil
			return 0, redact(err)
		}
	}
	var text *string
	if err := c.c.QueryRow(ctx, query).Scan(&text); err != nil {
		c.close()
		return 0, redact(err)
	}
	if text == nil {
		return 0, errors.New("replication: no replay position (is WAL replay paused?)")
	}
	return ParseLSN(*text)
}

func (c *conn) close() {
	if c.c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		c.c.Close(ctx)
		cancel()
		c.c = nil
	}
}
