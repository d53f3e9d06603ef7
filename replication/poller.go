package replication

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Position is one follower's replication state as of a poll.
type Position struct {
	// Replayed is the last WAL position the follower has applied: reads
	// there see every write at or below it.
	Replayed LSN
	// Lag is how far behind the follower is, in time, measured on this
	// process' clock; zero when caught up. LagKnown is false when it
	// cannot be told (see Tracker); Lag is then meaningless.
	Lag      time.Duration
	LagKnown bool
	// LagBytes is the WAL the follower has yet to apply, when known.
	LagBytes uint64
	// Err is set when the follower could not be polled; the other fields
	// are then meaningless.
	Err error
}

// Options configures a Tracker.
type Options struct {
	Primary   Database
	Followers []Database
	// AppName is the application_name of every connection, so that
	// pg_stat_activity tells the router's from the app's.
	AppName string
	// Interval is how often positions are read while a client waits for
	// a follower, or has just written. If zero, 100ms.
	Interval time.Duration
	// IdleInterval is how often they are read otherwise, for the lag. If
	// zero, the larger of Interval and 1s.
	IdleInterval time.Duration
	// Timeout bounds each connection attempt and query. If zero, 2s.
	Timeout time.Duration
	// History is how far back the lag can be measured. If zero, 5 minutes.
	History time.Duration
	// OnPosition is called after every poll of a follower, with its index
	// in Followers.
	OnPosition func(follower int, p Position)
	// OnState is called when a database becomes reachable or unreachable.
	OnState func(State)
}

// Tracker reads replication positions over one connection per database:
// the primary's WAL position after writes (coalesced, see primary) and at
// intervals for the lag, and each follower's replay position. It polls
// fast while there is demand (a write, or a pinned read a follower cannot
// take yet: see Wake), and slowly otherwise.
type Tracker struct {
	o         Options
	primary   *primary
	followers []*conn
	history   history
	// receive keeps each follower's received positions, for its lag when
	// the primary's are not known.
	receive []history

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	demand atomic.Int64 // when demand was last seen, Unix nanoseconds
	wake   atomic.Pointer[chan struct{}]
	soon   atomic.Bool // a poll after a write is scheduled
}

// New returns a Tracker; Run starts its polls. It connects to nothing
// yet: a database that cannot be reached does not stop the router.
func New(o Options) (*Tracker, error) {
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.IdleInterval <= 0 {
		o.IdleInterval = max(o.Interval, time.Second)
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.History <= 0 {
		o.History = 5 * time.Minute
	}
	if o.OnPosition == nil {
		o.OnPosition = func(int, Position) {}
	}
	t := &Tracker{o: o, history: history{keep: o.History}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	pc, err := newConn(o.Primary, o.AppName, o.Timeout, o.OnState)
	if err != nil {
		return nil, err
	}
	t.primary = &primary{conn: pc, ctx: t.ctx, wg: &t.wg, onRead: t.history.record}
	for _, db := range o.Followers {
		fc, err := newConn(db, o.AppName, o.Timeout, o.OnState)
		if err != nil {
			return nil, err
		}
		t.followers = append(t.followers, fc)
		t.receive = append(t.receive, history{keep: o.History})
	}
	ch := make(chan struct{})
	t.wake.Store(&ch)
	return t, nil
}

// PrimaryPosition returns the primary's WAL position for a pin: at or
// after every commit made before the call. others says more writes are on
// their way, whose pins the same read can serve (see primary). It fails
// at once (ErrDown) while the primary database is known to be
// unreachable.
func (t *Tracker) PrimaryPosition(ctx context.Context, others bool) (LSN, error) {
	t.Wake()
	lsn, err := t.primary.position(ctx, false, others)
	if err == nil && t.soon.CompareAndSwap(false, true) {
		// The client reads next, often within moments: the followers are
		// asked again as soon as a streaming follower has likely replayed
		// the write, not at their next tick, so the pin is released for
		// that read.
		time.AfterFunc(replaySoon, func() {
			t.soon.Store(false)
			t.wakeAll()
		})
	}
	return lsn, err
}

// replaySoon is how long after a write the followers are polled: a
// streaming follower replays a commit within milliseconds.
const replaySoon = 5 * time.Millisecond

// Wake tells the tracker a client waits for a follower to replay its
// write: positions are read every Interval for a while.
func (t *Tracker) Wake() {
	now := time.Now().UnixNano()
	last := t.demand.Swap(now)
	if time.Duration(now-last) > t.o.Interval {
		// Polls may be waiting out the idle interval: cut it short.
		t.wakeAll()
	}
}

// wakeAll has every poll loop poll now.
func (t *Tracker) wakeAll() {
	ch := make(chan struct{})
	if old := t.wake.Swap(&ch); old != nil {
		close(*old)
	}
}

// demandWindow is how long after the last demand polls stay fast.
const demandWindow = 10 * time.Second

func (t *Tracker) interval() time.Duration {
	if time.Since(time.Unix(0, t.demand.Load())) < demandWindow {
		return t.o.Interval
	}
	return t.o.IdleInterval
}

// States returns every database's state, the primary first.
func (t *Tracker) States() []State {
	out := []State{t.primary.conn.State()}
	for _, f := range t.followers {
		out = append(out, f.State())
	}
	return out
}

// Run polls until ctx is done, then closes the connections. It returns
// once every database call has ended.
func (t *Tracker) Run(ctx context.Context) {
	stop := context.AfterFunc(ctx, t.cancel)
	defer stop()
	var loops sync.WaitGroup
	loops.Go(func() { t.every(func() { t.samplePrimary() }) })
	for i := range t.followers {
		loops.Go(func() { t.every(func() { t.pollFollower(i) }) })
	}
	loops.Wait()
	t.primary.close()
	t.wg.Wait()
	t.primary.conn.close()
	for _, f := range t.followers {
		f.close()
	}
}

// every runs poll now and then at the current interval until shutdown.
func (t *Tracker) every(poll func()) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wake := *t.wake.Load()
		select {
		case <-t.ctx.Done():
			return
		case <-timer.C:
		case <-wake:
			timer.Stop()
		}
		poll()
		timer.Reset(t.interval())
	}
}

// samplePrimary reads the primary's position into the history (every read
// goes there, see primary.onRead), unless writes' reads have just done
// so. It probes a database known to be down, within its backoff: this is
// how the router finds it again.
func (t *Tracker) samplePrimary() {
	if at, ok := t.history.latest(); ok && time.Since(at) < t.o.Interval && !t.primary.conn.down() {
		return // writes' reads keep the history current
	}
	t.primary.position(t.ctx, true, false)
}

// followerQuery reads a follower's replay position (its own position once
// promoted) and the position it has received, which the lag is measured
// against when the primary's is not known.
const followerQuery = `SELECT
	(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text,
	(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text`

func (t *Tracker) pollFollower(i int) {
	now := time.Now()
	var replayedText, receivedText *string
	err := t.followers[i].query(t.ctx, followerQuery, &replayedText, &receivedText)
	if t.ctx.Err() != nil {
		return
	}
	var pos Position
	switch {
	case err != nil:
		pos.Err = err
	case replayedText == nil:
		pos.Err = errors.New("replication: no replay position (is WAL replay paused?)")
	default:
		pos = t.position(i, now, *replayedText, receivedText)
	}
	t.o.OnPosition(i, pos)
}

// primaryFresh is how recent the primary's last position must be for the
// lag to be measured against it.
func (t *Tracker) primaryFresh(now time.Time) bool {
	at, ok := t.history.latest()
	return ok && !t.primary.conn.down() && now.Sub(at) <= 3*t.o.IdleInterval
}

// position derives a follower's lag. With the primary's recent positions,
// the follower is as far behind as the oldest primary position it has not
// replayed is old. Without them (the primary database unreachable), the
// same measure runs on the positions the follower itself has received: it
// counts from when WAL reached the follower, which on a streaming follower
// is within moments of its writing, and an idle primary leaves nothing
// received and unreplayed, so no lag. A follower that has never received
// WAL by streaming has no lag to tell.
func (t *Tracker) position(i int, now time.Time, replayedText string, receivedText *string) Position {
	replayed, err := ParseLSN(replayedText)
	if err != nil {
		return Position{Err: err}
	}
	pos := Position{Replayed: replayed}
	if receivedText != nil {
		if received, err := ParseLSN(*receivedText); err == nil {
			t.receive[i].record(now, received)
		}
	}
	source := &t.history
	if !t.primaryFresh(now) {
		source = &t.receive[i]
		if _, ok := source.latest(); !ok {
			return pos
		}
	}
	pos.Lag, pos.LagBytes = source.lag(now, replayed)
	pos.LagKnown = true
	return pos
}

// history is a series of WAL positions, each with when it was first seen,
// oldest first, kept for its keep.
type history struct {
	keep    time.Duration
	mu      sync.Mutex
	samples []sample
	// seen is when the latest position was last read.
	seen time.Time
}

type sample struct {
	at  time.Time
	lsn LSN
}

func (h *history) record(now time.Time, lsn LSN) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = now
	if n := len(h.samples); n > 0 && h.samples[n-1].lsn >= lsn {
		return
	}
	h.samples = append(h.samples, sample{now, lsn})
	cut := 0
	for cut < len(h.samples)-1 && now.Sub(h.samples[cut].at) > h.keep {
		cut++
	}
	h.samples = h.samples[cut:]
}

// latest is when the latest position was last read.
func (h *history) latest() (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen, len(h.samples) > 0
}

// lag is how long ago the first position past replayed was first seen,
// and how far the latest is past replayed.
func (h *history) lag(now time.Time, replayed LSN) (time.Duration, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lag time.Duration
	for _, s := range h.samples {
		if s.lsn > replayed {
			lag = max(now.Sub(s.at), 0)
			break
		}
	}
	var bytes uint64
	if n := len(h.samples); n > 0 && h.samples[n-1].lsn > replayed {
		bytes = h.samples[n-1].lsn - replayed
	}
	return lag, bytes
}
