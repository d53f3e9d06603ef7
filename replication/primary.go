package replication

import (
	"context"
	"errors"
	"sync"
	"time"
)

// primary reads the primary database's WAL position over its one
// connection, for pins and for the lag history, with at most one query in
// flight: concurrent writes share reads.
//
// A write asks once its response head has arrived, so the app has
// committed it. It waits for the first read that starts after it asked:
// every transaction committed before a read starts is at or below the
// position that read returns, so that position covers the write. A read
// already running when it asks may have started before the commit, so it
// is not used; the write joins the next one instead, which starts as soon
// as the running one ends.
//
// When other writes are on their way (the caller knows: requests in flight
// to the primary), a read also waits until gather after its first write
// asked before it starts, so that they share it: without the wait, a read
// would serve only the writes that arrived during the read before, and at
// a thousand writes a second and half a millisecond a read, that is one
// read for every two writes. A write with none beside it is never held:
// nobody would join it.
type primary struct {
	conn *conn
	// onRead, if set, is told of every position read, with when it
	// started: the lag history takes the writes' reads too.
	onRead func(at time.Time, lsn LSN)
	// ctx bounds every read; it ends at shutdown.
	ctx context.Context
	wg  *sync.WaitGroup

	mu sync.Mutex
	// running is the read being gathered or in flight, nil if none; next
	// is the one gathering while running is in flight.
	running, next *positionRead
	closed        bool // shutting down: no read starts
}

type positionRead struct {
	done chan struct{}
	// asked is when the first write asked for it; started, when its query
	// began (zero while it gathers).
	asked, started time.Time
	lsn            LSN
	err            error
}

// gather is how long a read waits for the writes on their way.
const gather = 2 * time.Millisecond

// ErrDown is returned, without a query, while the primary database is
// known to be unreachable: a write then costs nothing, and pins by time,
// until the background probe finds the database again.
var ErrDown = errors.New("the primary database is unreachable")

// ErrSlow is returned, without waiting, while a read has gone unanswered
// for slowRead: the database hangs (a host that accepts and never
// answers), and a write would only wait out its budget behind it.
var ErrSlow = errors.New("the primary database is not answering")

// slowRead is how long a read may go unanswered before writes stop
// waiting for reads. Position reads take well under a millisecond on a
// healthy database.
const slowRead = 100 * time.Millisecond

// positionQuery reads the WAL insert position: it is at or beyond the end
// of every commit record inserted, whether the commit was flushed yet or
// not (synchronous_commit=off), which pg_current_wal_lsn(), the write
// position, need not be.
const positionQuery = "SELECT pg_current_wal_insert_lsn()::text"

// position returns a WAL position at or after every commit made before
// the call; others says more writes are on their way. Unless probe is
// set, it fails at once with ErrDown while the database is known to be
// unreachable, and with ErrSlow while a read goes unanswered.
func (p *primary) position(ctx context.Context, probe, others bool) (LSN, error) {
	if !probe && p.conn.down() {
		return 0, ErrDown
	}
	now := time.Now()
	p.mu.Lock()
	var r *positionRead
	switch {
	case p.closed:
		p.mu.Unlock()
		return 0, context.Canceled
	case p.running != nil && p.running.started.IsZero():
		r = p.running // still gathering: it starts after this write asked
	case !probe && p.running != nil && now.Sub(p.running.started) > slowRead:
		p.mu.Unlock()
		return 0, ErrSlow
	case p.running == nil:
		r = &positionRead{done: make(chan struct{}), asked: now}
		if !others {
			r.asked = now.Add(-gather) // nothing to gather for
		}
		p.running = r
		p.wg.Add(1)
		go p.read(r)
	case p.next != nil:
		r = p.next
	default:
		r = &positionRead{done: make(chan struct{}), asked: now}
		p.next = r
	}
	p.mu.Unlock()
	select {
	case <-r.done:
		return r.lsn, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// close lets no read start from now on.
func (p *primary) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// read runs r, then the next read if writes are waiting for one.
func (p *primary) read(r *positionRead) {
	defer p.wg.Done()
	for r != nil {
		if wait := time.Until(r.asked.Add(gather)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-p.ctx.Done():
			}
		}
		p.mu.Lock()
		r.started = time.Now()
		p.mu.Unlock()
		var text *string
		if r.err = p.conn.query(p.ctx, positionQuery, &text); r.err == nil {
			if text == nil {
				r.err = errors.New("replication: no WAL position (is this database in recovery?)")
			} else {
				r.lsn, r.err = ParseLSN(*text)
			}
		}
		if r.err == nil && p.onRead != nil {
			p.onRead(r.started, r.lsn)
		}
		close(r.done)
		p.mu.Lock()
		r, p.next = p.next, nil
		p.running = r
		p.mu.Unlock()
	}
}
