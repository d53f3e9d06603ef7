// Package health tracks whether each upstream can take requests: active
// checks with rise/fall thresholds (as HAProxy does), passive ejection of
// replicas on failed requests with a growing ejection time (as Envoy does),
// and the
// state the router reads on every request without taking a lock. Passive
// ejection weighs typed evidence (see Class and RecordFailure), and never
// takes out the primary.
package health

import (
	"net/url"
	"sync/atomic"
	"time"
)

// Role says which side of the split app an upstream is.
type Role uint8

const (
	// Primary is the app whose database takes writes.
	Primary Role = iota
	// Replica is a read-only app whose database is a follower.
	Replica
)

func (r Role) String() string {
	if r == Primary {
		return "primary"
	}
	return "replica"
}

// Policy holds the thresholds every upstream shares.
type Policy struct {
	// Fall is how many consecutive failed checks take an upstream out.
	// If zero, 2.
	Fall int
	// Rise is how many consecutive passed checks bring it back. If zero, 2.
	Rise int
	// EjectFor is how long the first passive ejection lasts; each
	// consecutive one doubles it, up to EjectMax. If zero, 5s.
	EjectFor time.Duration
	// EjectMax caps the ejection time. If zero, the larger of 1m and
	// EjectFor.
	EjectMax time.Duration
	// EjectAfterFailures ejects a replica after that many gateway
	// failures (Reset, Timeout, BadResponse, Aborted) in a row with no
	// success in between. If zero, 5: Envoy's consecutive_gateway_failure.
	EjectAfterFailures int
	// EjectAfter5xx ejects a replica after that many consecutive 5xx
	// responses. Zero turns it off.
	EjectAfter5xx int
	// MaxLag takes a replica whose follower is further behind out of the
	// read rotation until it catches up. Zero turns it off.
	MaxLag time.Duration
	// Now returns the current time. If nil, time.Now; tests set a fake.
	Now func() time.Time
}

func (p *Policy) withDefaults() *Policy {
	q := *p
	if q.Fall <= 0 {
		q.Fall = 2
	}
	if q.Rise <= 0 {
		q.Rise = 2
	}
	if q.EjectFor <= 0 {
		q.EjectFor = 5 * time.Second
	}
	if q.EjectAfterFailures <= 0 {
		q.EjectAfterFailures = 5
	}
	if q.EjectMax <= 0 {
		q.EjectMax = max(time.Minute, q.EjectFor)
	}
	if q.Now == nil {
		q.Now = time.Now
	}
	return &q
}

// Upstream is one backend app and its health. Its methods are safe for
// concurrent use; Available, on every request's path, is atomic loads.
type Upstream struct {
	// URL is where requests go.
	URL *url.URL
	// Name identifies the upstream in logs and metrics: the URL's host.
	Name string
	Role Role
	// Weight is the upstream's share in weighted round-robin.
	Weight int

	policy *Policy
	// share caps passive ejections across the replicas; nil: no cap.
	share *ejectionShare

	// checkedDown is set while active checks hold the upstream out.
	checkedDown atomic.Bool
	// ejectedUntil is when a passive ejection ends, in Unix nanoseconds;
	// zero when not ejected.
	ejectedUntil atomic.Int64
	// ejectStreak counts consecutive ejections, for the backoff.
	ejectStreak atomic.Int32
	fails       atomic.Int32 // consecutive failed checks
	passes      atomic.Int32 // consecutive passed checks
	errors5xx   atomic.Int32 // consecutive 5xx responses
	// gatewayFailures counts gateway failures since the last success.
	gatewayFailures atomic.Int32
	inflight        atomic.Int64

	// Replication state of the follower behind a replica, when known.
	replayed  atomic.Uint64 // WAL position replayed
	lagNanos  atomic.Int64
	lagBytes  atomic.Uint64
	lagged    atomic.Bool // out of rotation for lag beyond MaxLag
	pollError atomic.Bool
	measured  atomic.Bool // a poll has succeeded

	ejections    atomic.Uint64
	failures     [numClasses]atomic.Uint64
	lastFailure  atomic.Uint32 // a Class
	lastError    atomic.Pointer[string]
	lastCheck    atomic.Int64 // Unix nanoseconds
	checkLatency atomic.Int64 // nanoseconds
	// lastCheckStatus is the status of the last check's answer; 0 without
	// one.
	lastCheckStatus atomic.Int32
}

// NewUpstream returns an upstream that is available until a check or a
// failure says otherwise, so a cold start does not send every read to the
// primary.
func NewUpstream(u *url.URL, role Role, weight int, policy *Policy) *Upstream {
	if weight < 1 {
		weight = 1
	}
	if policy == nil {
		policy = &Policy{}
	}
	return &Upstream{URL: u, Name: u.Host, Role: role, Weight: weight, policy: policy.withDefaults()}
}

// Available reports whether the upstream may be sent requests now.
func (u *Upstream) Available() bool {
	if u.checkedDown.Load() || u.lagged.Load() {
		return false
	}
	until := u.ejectedUntil.Load()
	if until == 0 {
		return true
	}
	if u.policy.Now().UnixNano() < until {
		return false
	}
	// The ejection is over: clear it once so later calls skip the clock.
	u.ejectedUntil.CompareAndSwap(until, 0)
	return true
}

// Event is a change of an upstream's state, for logs and metrics.
type Event struct {
	Upstream *Upstream
	Kind     EventKind
	// For is how long an ejection lasts.
	For time.Duration
	// Cause is the failure behind the change.
	Cause string
	// CheckStatus and CheckPath are the status a failing health check
	// got, and the path it asked for, when it got an answer.
	CheckStatus int
	CheckPath   string
}

// EventKind names a change of an upstream's state.
type EventKind string

const (
	EventDown               EventKind = "down"                // checks took it out
	EventUp                 EventKind = "up"                  // checks, or a check during an ejection, brought it back
	EventEjected            EventKind = "ejected"             // failed requests took a replica out for a while
	EventLagging            EventKind = "lagging"             // its follower is further behind than MaxLag
	EventCaughtUp           EventKind = "caught up"           // its follower is back within MaxLag
	EventReplicationUnknown EventKind = "replication unknown" // its follower cannot be polled
	EventReplicationKnown   EventKind = "replication known"   // its follower answers again
)

// Back reports whether the change brings the upstream back, or its
// follower's state: the news is good.
func (k EventKind) Back() bool {
	return k == EventUp || k == EventCaughtUp || k == EventReplicationKnown
}

// RecordCheck applies an active check's result and returns the state change
// it caused, if any. A passing check also ends an ejection early: the
// upstream has shown it answers again.
func (u *Upstream) RecordCheck(passed bool, latency time.Duration, cause string) (Event, bool) {
	u.lastCheck.Store(u.policy.Now().UnixNano())
	u.checkLatency.Store(int64(latency))
	if !passed {
		u.setLastError(cause)
		u.passes.Store(0)
		if int(u.fails.Add(1)) >= u.policy.Fall && u.checkedDown.CompareAndSwap(false, true) {
			return Event{Upstream: u, Kind: EventDown, Cause: cause}, true
		}
		return Event{}, false
	}
	u.fails.Store(0)
	passes := int(u.passes.Add(1))
	if u.checkedDown.Load() {
		if passes >= u.policy.Rise && u.checkedDown.CompareAndSwap(true, false) {
			u.ejectedUntil.Store(0)
			u.ejectStreak.Store(0)
			return Event{Upstream: u, Kind: EventUp, Cause: "health checks pass"}, true
		}
		return Event{}, false
	}
	if until := u.ejectedUntil.Load(); until != 0 && u.ejectedUntil.CompareAndSwap(until, 0) {
		u.ejectStreak.Store(0)
		if u.policy.Now().UnixNano() < until {
			return Event{Upstream: u, Kind: EventUp, Cause: "health check passed during ejection"}, true
		}
	}
	return Event{}, false
}

// Eject takes a replica out now, for EjectFor, doubling with each
// consecutive ejection up to EjectMax. A failure while already ejected (a
// request that started before) does not extend it. The primary is never
// ejected passively; for it, Eject only notes the cause.
func (u *Upstream) Eject(cause string) (Event, bool) {
	u.setLastError(cause)
	if u.Role == Primary {
		return Event{}, false
	}
	return u.eject(cause, false)
}

// eject is Eject without the bookkeeping. With capped set, the ejection is
// refused when it would put more than the shared cap out.
//
// The ejection window is claimed with one compare-and-swap, and the streak
// grows only for the winner: however many failures arrive at once, the
// first ejection lasts exactly EjectFor. A CAS lost to Available clearing
// an expired ejection is tried again, so no failure is dropped.
func (u *Upstream) eject(cause string, capped bool) (Event, bool) {
	if capped && u.share != nil {
		u.share.mu.Lock()
		defer u.share.mu.Unlock()
	}
	for {
		now := u.policy.Now().UnixNano()
		until := u.ejectedUntil.Load()
		if until != 0 && now < until {
			return Event{}, false
		}
		if capped && u.share != nil && u.share.full(u, now) {
			return Event{}, false
		}
		d := u.policy.backoff(u.ejectStreak.Load())
		if !u.ejectedUntil.CompareAndSwap(until, now+int64(d)) {
			continue
		}
		u.ejectStreak.Add(1)
		u.ejections.Add(1)
		u.errors5xx.Store(0)
		u.gatewayFailures.Store(0)
		return Event{Upstream: u, Kind: EventEjected, For: d, Cause: cause}, true
	}
}

// RecordReplication notes a poll of the follower behind this upstream: how
// far it has replayed, and how far behind it is. With MaxLag set, crossing
// it takes the upstream out of rotation, and coming back under it brings it
// back; each crossing is one Event ("lagging", "caught up"). A failed poll
// (err set) changes nothing but is reported once per run of failures.
func (u *Upstream) RecordReplication(replayed uint64, lag time.Duration, lagKnown bool, lagBytes uint64, err error) (Event, bool) {
	if err != nil {
		// The follower may be restarting, and may come back having lost
		// replay it had not flushed: no pin is released to it until a poll
		// says again how far it is.
		u.replayed.Store(0)
		u.lagNanos.Store(lagUnknown)
		u.setLastError("replication poll: " + err.Error())
		if u.pollError.CompareAndSwap(false, true) {
			return Event{Upstream: u, Kind: EventReplicationUnknown, Cause: err.Error()}, true
		}
		return Event{}, false
	}
	polledAgain := u.pollError.CompareAndSwap(true, false)
	u.measured.Store(true)
	u.replayed.Store(replayed)
	if !lagKnown {
		// Nothing to measure against: the lag is unknown, never taken for
		// zero, and the rotation is left as it was.
		u.lagNanos.Store(lagUnknown)
		if polledAgain {
			return Event{Upstream: u, Kind: EventReplicationKnown, Cause: "follower answers again"}, true
		}
		return Event{}, false
	}
	u.lagNanos.Store(int64(lag))
	u.lagBytes.Store(lagBytes)
	if max := u.policy.MaxLag; max > 0 {
		if lag > max && u.lagged.CompareAndSwap(false, true) {
			return Event{Upstream: u, Kind: EventLagging, Cause: "replication lag " + lag.Round(time.Millisecond).String() + " over MAX_REPLICA_LAG"}, true
		}
		if lag <= max && u.lagged.CompareAndSwap(true, false) {
			return Event{Upstream: u, Kind: EventCaughtUp, Cause: "replication lag " + lag.Round(time.Millisecond).String()}, true
		}
	}
	if polledAgain {
		return Event{Upstream: u, Kind: EventReplicationKnown, Cause: "follower answers again"}, true
	}
	return Event{}, false
}

// Replayed returns the WAL position the follower behind this upstream is
// known to have replayed; zero when unknown.
func (u *Upstream) Replayed() uint64 { return u.replayed.Load() }

// lagUnknown is stored as the lag while it cannot be measured.
const lagUnknown = -1

// Lag returns the follower's last measured lag, in time and WAL bytes; ok
// is false while it is unknown (not measured yet, or nothing to measure
// against).
func (u *Upstream) Lag() (lag time.Duration, bytes uint64, ok bool) {
	n := u.lagNanos.Load()
	return time.Duration(max(n, 0)), u.lagBytes.Load(), n != lagUnknown && u.measured.Load()
}

// RecordResponse notes a response's status: any response ends a run of
// gateway failures; a success resets the ejection backoff; with
// EjectAfter5xx set, a run of 5xx ejects a replica.
func (u *Upstream) RecordResponse(status int) (Event, bool) {
	if u.gatewayFailures.Load() != 0 {
		u.gatewayFailures.Store(0)
	}
	if status >= 500 {
		if n := u.policy.EjectAfter5xx; n > 0 && int(u.errors5xx.Add(1)) >= n {
			return u.Eject("consecutive 5xx responses")
		}
		return Event{}, false
	}
	// Loads first: on the hot path, skip the stores (and the cache-line
	// traffic) when there is nothing to reset.
	if u.errors5xx.Load() != 0 {
		u.errors5xx.Store(0)
	}
	if u.ejectStreak.Load() != 0 {
		u.ejectStreak.Store(0)
	}
	return Event{}, false
}

func (u *Upstream) setLastError(cause string) { u.lastError.Store(&cause) }

// Begin and End count requests in flight, for least-outstanding selection
// and the status page.
func (u *Upstream) Begin() { u.inflight.Add(1) }

// End marks a request begun with Begin as done.
func (u *Upstream) End() { u.inflight.Add(-1) }

// Inflight returns the requests in flight.
func (u *Upstream) Inflight() int64 { return u.inflight.Load() }

// Snapshot is an upstream's state at one moment, for status pages.
type Snapshot struct {
	Name         string
	Role         string
	Available    bool
	CheckedDown  bool
	EjectedUntil time.Time // zero when not ejected
	Ejections    uint64
	LastError    string
	// LastFailure is the class of the last failed request, empty if none
	// failed (client failures are not the upstream's and are left out).
	LastFailure  string
	LastCheck    time.Time // zero before the first check
	CheckLatency time.Duration
	// LastCheckStatus is the last check's answer, 0 without one.
	LastCheckStatus int
	Inflight        int64
	Lagging         bool
	Lag             time.Duration
	LagKnown        bool
	Replayed        uint64
}

// Snapshot returns the upstream's state.
func (u *Upstream) Snapshot() Snapshot {
	s := Snapshot{
		Name:         u.Name,
		Role:         u.Role.String(),
		Available:    u.Available(),
		CheckedDown:  u.checkedDown.Load(),
		Ejections:    u.ejections.Load(),
		CheckLatency: time.Duration(u.checkLatency.Load()),

		LastCheckStatus: int(u.lastCheckStatus.Load()),
		Inflight:        u.inflight.Load(),
		Lagging:         u.lagged.Load(),

		Replayed:    u.replayed.Load(),
		LastFailure: Class(u.lastFailure.Load()).String(),
	}
	s.Lag, _, s.LagKnown = u.Lag()
	if until := u.ejectedUntil.Load(); until != 0 && u.policy.Now().UnixNano() < until {
		s.EjectedUntil = time.Unix(0, until)
	}
	if e := u.lastError.Load(); e != nil {
		s.LastError = *e
	}
	if t := u.lastCheck.Load(); t != 0 {
		s.LastCheck = time.Unix(0, t)
	}
	return s
}
