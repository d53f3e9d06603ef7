// Package health tracks whether each upstream can take requests: active
// checks, passive ejection on failures, and the state the router reads on
// every request without taking a lock.
package health

import (
	"net/url"
	"sync/atomic"
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

// Upstream is one backend app and its health. Its methods are safe for
// concurrent use; reads on the request path are single atomic loads.
type Upstream struct {
	// URL is where requests go.
	URL *url.URL
	// Name identifies the upstream in logs and metrics: the URL's host.
	Name string
	Role Role
	// Weight is the upstream's share in weighted round-robin.
	Weight int

	down atomic.Bool
}

// NewUpstream returns a healthy upstream.
func NewUpstream(u *url.URL, role Role, weight int) *Upstream {
	if weight < 1 {
		weight = 1
	}
	return &Upstream{URL: u, Name: u.Host, Role: role, Weight: weight}
}

// Available reports whether the upstream may be sent requests now.
func (u *Upstream) Available() bool { return !u.down.Load() }
