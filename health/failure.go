package health

import (
	"strconv"
	"sync"
	"time"
)

// Class says why an attempt to reach an upstream failed, and so whose fault
// it was. The transport that saw the failure names it; the router never
// reads error strings.
type Class uint8

const (
	// NoFailure is the zero Class.
	NoFailure Class = iota
	// Connect: the dial was refused or timed out, or the TLS handshake
	// failed. Nothing was sent.
	Connect
	// StaleConn: a reused connection failed before any byte of the request
	// was written to it. Nothing was sent, so any request may go again.
	StaleConn
	// Reset: the connection broke after the request was sent and before
	// the response head arrived.
	Reset
	// Timeout: no response head within UPSTREAM_TIMEOUT of the whole
	// request having been sent, or the upstream stopped reading the
	// request for UPSTREAM_SEND_TIMEOUT.
	Timeout
	// BadResponse: the response head was malformed or too large.
	BadResponse
	// Aborted: the upstream died in the middle of the response body.
	Aborted
	// Client: the client's body or connection failed. Never the
	// upstream's fault.
	Client

	numClasses
)

var classNames = [numClasses]string{"", "connect", "stale_conn", "reset", "timeout", "bad_response", "aborted", "client"}

func (c Class) String() string {
	if c >= numClasses {
		return "unknown"
	}
	return classNames[c]
}

// Classes lists every failure class, for metrics.
func Classes() []Class {
	out := make([]Class, 0, numClasses-1)
	for c := Connect; c < numClasses; c++ {
		out = append(out, c)
	}
	return out
}

// gatewayFailure reports whether a failure is evidence against a healthy
// upstream only when it repeats: one slow endpoint, one crashed request or
// one malformed answer says little about the app as a whole.
func (c Class) gatewayFailure() bool {
	return c == Reset || c == Timeout || c == BadResponse || c == Aborted
}

// RecordFailure notes a failed attempt and returns the ejection it caused,
// if any. The evidence decides, as Envoy's outlier detection does:
//   - Connect ejects a replica at once: nothing is listening.
//   - Reset, Timeout, BadResponse and Aborted eject a replica after
//     EjectAfterFailures of them in a row with no success in between,
//     and never more than half of the replicas at once (see ShareEjections).
//   - StaleConn (a pooling race) and Client (not the app) never eject.
//   - The primary is never ejected passively: there is nothing to fail
//     over to, so an ejection would only turn writes that could succeed
//     into 503s. Active checks take it out (HEALTH_FALL).
func (u *Upstream) RecordFailure(c Class, cause string) (Event, bool) {
	if c == NoFailure || c >= numClasses {
		return Event{}, false
	}
	u.failures[c].Add(1)
	if c == Client {
		return Event{}, false
	}
	u.lastFailure.Store(uint32(c))
	u.setLastError(c.String() + ": " + cause)
	if u.Role == Primary {
		return Event{}, false
	}
	switch {
	case c == Connect:
		return u.eject(c.String()+": "+cause, false)
	case c.gatewayFailure():
		if int(u.gatewayFailures.Add(1)) < u.policy.EjectAfterFailures {
			return Event{}, false
		}
		return u.eject(strconv.Itoa(u.policy.EjectAfterFailures)+" failures in a row, the last "+c.String()+": "+cause, true)
	}
	return Event{}, false
}

// Failures returns how many attempts failed with class c.
func (u *Upstream) Failures(c Class) uint64 {
	if c >= numClasses {
		return 0
	}
	return u.failures[c].Load()
}

// ejectionShare caps passive ejections across a set of upstreams: at most
// half of them (at least one) may be ejected for gateway failures at once.
// Beyond that a failing member stays in rotation, so a fault that hits
// every replica alike (a slow database, a bad deploy) spreads its load
// across all of them instead of piling every read onto the few left, which
// is Envoy's max_ejection_percent and panic threshold at work.
type ejectionShare struct {
	mu      sync.Mutex
	members []*Upstream
	max     int
}

// ShareEjections puts upstreams under one ejection cap: at most half of
// them (and at least one) may be ejected for gateway failures at the same
// time. Connection failures are not capped: a refused connection is no
// judgement call.
func ShareEjections(upstreams []*Upstream) {
	s := &ejectionShare{members: upstreams, max: max(1, len(upstreams)/2)}
	for _, u := range upstreams {
		u.share = s
	}
}

// full reports whether ejecting u would put more than the cap out at now.
func (s *ejectionShare) full(u *Upstream, now int64) bool {
	out := 0
	for _, m := range s.members {
		if m != u && m.ejectedUntil.Load() > now {
			out++
		}
	}
	return out >= s.max
}

// backoff is how long the ejection after streak consecutive ones lasts.
func (p *Policy) backoff(streak int32) time.Duration {
	d := p.EjectFor
	for i := int32(0); i < streak && d < p.EjectMax; i++ {
		d *= 2
	}
	return min(d, p.EjectMax)
}
