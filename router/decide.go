package router

import (
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/pathrule"
	"github.com/splitapp/router/stats"
)

// Input is everything a routing decision depends on.
type Input struct {
	Method string
	Path   string
	// Upgrade is set for requests asking to switch protocols (WebSocket).
	Upgrade bool
	// Pinned is set when the request carries a valid, unexpired pin.
	Pinned bool
	// PrimaryUp and ReplicaUp say whether the primary, and at least one
	// replica, can take requests now.
	PrimaryUp bool
	ReplicaUp bool
	// PrimaryShare is set for the reads READ_SHARE keeps on the primary.
	PrimaryShare bool
	// CaughtUp is set when the pin carries a WAL position and an available
	// replica's follower has replayed it.
	CaughtUp bool
	// Learned is set for a read of a method and path that a read-only app
	// handed back to the primary lately (REPLAY_LEARN_TTL).
	Learned bool
}

// Decision is where a request goes.
type Decision struct {
	// Role is the side that serves the request. It is meaningless when
	// Refuse is set.
	Role   health.Role
	Reason stats.Reason
	// Pin is set when the response should carry a fresh pin: a write.
	Pin bool
	// Refuse is set when no upstream can serve the request: answer 503.
	Refuse bool
}

// IsSafe reports whether a method only reads (RFC 9110 §9.2.1) for the
// purpose of routing. TRACE is left out: no app wants it from a replica.
func IsSafe(method string) bool {
	return method == "GET" || method == "HEAD" || method == "OPTIONS"
}

// Rules holds the configured path rules.
type Rules struct {
	// PrimaryPaths always go to the primary.
	PrimaryPaths pathrule.Set
	// ReadPaths are read-only whatever their method.
	ReadPaths pathrule.Set
}

// Decide routes one request. It is a pure function of its input, so every
// rule is table-tested without a network.
func (rules Rules) Decide(in Input) Decision {
	switch {
	case rules.PrimaryPaths.Match(in.Method, in.Path):
		return toPrimary(in, stats.ReasonPathRule, false)
	case rules.ReadPaths.Match(in.Method, in.Path):
		return read(in)
	case in.Upgrade:
		return toPrimary(in, stats.ReasonUpgrade, false)
	case !IsSafe(in.Method):
		return toPrimary(in, stats.ReasonWrite, true)
	}
	return read(in)
}

func toPrimary(in Input, reason stats.Reason, pin bool) Decision {
	if !in.PrimaryUp {
		return Decision{Reason: stats.ReasonPrimaryDown, Refuse: true}
	}
	return Decision{Role: health.Primary, Reason: reason, Pin: pin}
}

func read(in Input) Decision {
	switch {
	case in.Pinned && in.CaughtUp && !in.Learned:
		// A route the read-only app handed back lately would be handed
		// back again: it stays on the primary with the pin.
		return Decision{Role: health.Replica, Reason: stats.ReasonCaughtUp}
	case in.Pinned && in.PrimaryUp:
		return Decision{Role: health.Primary, Reason: stats.ReasonPinned}
	case in.Pinned && in.ReplicaUp:
		// Availability over read-your-writes while the primary is down.
		return Decision{Role: health.Replica, Reason: stats.ReasonPrimaryDown}
	case in.Learned && in.PrimaryUp:
		return Decision{Role: health.Primary, Reason: stats.ReasonLearned}
	case in.ReplicaUp && in.PrimaryShare && in.PrimaryUp:
		return Decision{Role: health.Primary, Reason: stats.ReasonShare}
	case in.ReplicaUp:
		return Decision{Role: health.Replica, Reason: stats.ReasonRead}
	case in.PrimaryUp:
		return Decision{Role: health.Primary, Reason: stats.ReasonNoReplica}
	}
	return Decision{Reason: stats.ReasonAllDown, Refuse: true}
}

// routingPath chooses which view of a request's path Decide sees:
// fasthttp's cleaned path, or one of alts, the path as an app may route it
// (see appRoute; an empty one is no view). The safer one wins: a view that
// matches PRIMARY_PATHS sends the request to the primary, and READ_PATHS
// applies only when every view matches it. Routing a read to the primary
// costs the primary a little; routing a write to a read-only app fails it.
func (rules Rules) routingPath(method, cleaned string, alts ...string) string {
	if rules.PrimaryPaths.Match(method, cleaned) {
		return cleaned
	}
	for _, alt := range alts {
		if alt != "" && rules.PrimaryPaths.Match(method, alt) {
			return alt
		}
	}
	for _, alt := range alts {
		if alt != "" && !rules.ReadPaths.Match(method, alt) {
			return alt
		}
	}
	return cleaned
}
