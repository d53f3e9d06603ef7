package router

import (
	"errors"
	"github.com/splitapp/router/stats"
	"net/http"
	"time"

	"github.com/splitapp/router/health"
)

// This file is the failure policy: what a failed attempt means, whom it
// counts against, and where the request goes next. It is the only place,
// after the plan, where a request's route changes.
//
//	class         retried?                                counts against the app
//	connect       reads: another replica, then the primary  a replica is ejected at once
//	stale_conn    any request, on a new connection          no (a pooling race)
//	reset         reads, as connect                         EJECT_AFTER_FAILURES in a row
//	timeout       never: one 504 after one UPSTREAM_TIMEOUT  EJECT_AFTER_FAILURES in a row
//	bad_response  never: 502                                EJECT_AFTER_FAILURES in a row
//	aborted       never: the response had begun             EJECT_AFTER_FAILURES in a row
//	client        never: 400, 408, or 499 and the connection cut  never
//
// The primary is never ejected passively (see health.RecordFailure).

// failure is a failed attempt: its class and the error behind it.
type failure struct {
	class health.Class
	err   error
}

func (f *failure) Error() string { return f.class.String() + ": " + f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// errMidBody stands for a response body cut short, by the upstream or the
// client.
var errMidBody = errors.New("connection ended mid-response")

// verdict is the router's own answer to a request no upstream answered.
type verdict struct {
	status     int
	code, desc string
	retryAfter string
}

var (
	verdictTimeout     = verdict{http.StatusGatewayTimeout, stats.CodeUpstreamTimeout, "upstream did not answer in time", ""}
	verdictUnreachable = verdict{http.StatusBadGateway, stats.CodeUpstreamError, "upstream unreachable or connection broken", ""}
	verdictMalformed   = verdict{http.StatusBadGateway, stats.CodeUpstreamBadResponse, "upstream sent a malformed response", ""}
	verdictHeadTooBig  = verdict{http.StatusBadGateway, stats.CodeUpstreamBadResponse, "upstream sent a response head over 64 KB", ""}
	verdictBadBody     = verdict{http.StatusBadRequest, stats.CodeClientError, "request body malformed", ""}
	verdictBodyTimeout = verdict{http.StatusRequestTimeout, stats.CodeClientTimeout, "request body stalled for CLIENT_BODY_TIMEOUT", ""}
	verdictClientGone  = verdict{statusClientClosed, stats.CodeClientGone, "client left before the response", ""}
	verdictNoPrimary   = verdict{http.StatusServiceUnavailable, stats.CodeUnavailable, "primary unavailable", "5"}
	verdictBusy        = verdict{http.StatusServiceUnavailable, stats.CodeUnavailable, "primary busy with fallback reads", "1"}
)

// failover handles a failed attempt on ex.backend: it records the evidence
// and returns the backend to try next or, with none, the answer to give.
func (rt *Router) failover(ex *exchange) (*backend, verdict) {
	f := ex.failure
	ex.failure = nil
	var replay *replayRequest
	if errors.As(f.err, &replay) {
		// Not the replica's failure: the app wrote, or would have. The
		// route is learned, so the next such read goes to the primary at
		// once.
		ex.replayedFrom, ex.replayedStatus, ex.replayedTime = ex.backend, replay.status, time.Since(ex.attemptStart)
		if replay.readError {
			if ev, changed := ex.backend.up.RecordResponse(replay.status); changed {
				rt.onEvent(ev)
			}
		}
		rt.learned.learn(ex.method, ex.path)
		if !rt.primary.up.Available() {
			return nil, verdictNoPrimary
		}
		ex.decision.Role, ex.decision.Reason, ex.decision.Pin = health.Primary, stats.ReasonReplay, true
		return rt.primary, verdict{}
	}
	ex.failed = f.class
	rt.recordFailure(ex.backend, f)

	switch f.class {
	case health.Client:
		var be *clientBodyError
		switch {
		case errors.As(f.err, &be) && be.malformed():
			return nil, verdictBadBody
		case be != nil && isTimeout(be.err):
			return nil, verdictBodyTimeout
		}
		return nil, verdictClientGone
	case health.Timeout:
		// A slow endpoint is slow everywhere: trying it elsewhere would
		// multiply its load and the client's wait.
		return nil, verdictTimeout
	case health.BadResponse:
		if errors.Is(f.err, errResponseHeadTooLarge) {
			return nil, verdictHeadTooBig
		}
		return nil, verdictMalformed
	}
	// Connect, StaleConn, Reset: the request may not have been served.
	next, refused := rt.retryTarget(ex)
	if next == nil {
		if refused.status != 0 {
			return nil, refused
		}
		return nil, verdictUnreachable
	}
	ex.retries++
	return next, verdict{}
}

// recordFailure counts a failure against b and reports any ejection.
func (rt *Router) recordFailure(b *backend, f *failure) {
	if ev, changed := b.up.RecordFailure(f.class, f.err.Error()); changed {
		rt.onEvent(ev)
	}
}

// maxRetries bounds the attempts of one read: another replica, then the
// primary.
const maxRetries = 2

// retryTarget returns where a read that may not have been served should go
// next, or nil. Only safe methods without a body are repeated: for those,
// sending twice cannot do harm, and nothing reached the client yet. A read
// that failed on a replica goes to another replica once, then to the
// primary; a pinned read released to a follower goes only to another
// follower that has the write, or to the primary; a pinned read whose
// primary failed goes to a replica, as it would while the primary is down.
// When the spillover guard keeps the read off the primary, refused is its
// answer.
func (rt *Router) retryTarget(ex *exchange) (next *backend, refused verdict) {
	h := &ex.ctx.Request.Header
	if ex.retries >= maxRetries || !IsSafe(ex.method) || requestBodyLength(h) != 0 || ex.head.isUpgrade() {
		return nil, verdict{}
	}
	switch {
	case ex.decision.Reason == stats.ReasonCaughtUp:
		if b := rt.replicas.pickCaughtUp(ex.pinLSN, ex.backend); b != nil && ex.retries == 0 {
			return b, verdict{}
		}
		if rt.primary.up.Available() {
			return rt.primary, verdict{}
		}
	case ex.backend.up.Role == health.Replica:
		if ex.retries == 0 {
			if b := rt.replicas.pick(ex.backend); b != nil {
				return b, verdict{}
			}
		}
		if rt.primary.up.Available() {
			if v, ok := rt.admitFallback(ex); !ok {
				return nil, v
			}
			return rt.primary, verdict{}
		}
	case ex.decision.Reason == stats.ReasonPinned:
		if b := rt.replicas.pick(nil); b != nil {
			ex.decision.Reason = stats.ReasonPrimaryDown
			return b, verdict{}
		}
	}
	return nil, verdict{}
}
