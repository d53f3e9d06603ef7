package router

import (
	"errors"
	"net/http"
	"time"

	"github.com/splitapp/router/health"
	"github.com/splitapp/router/http1"
	"github.com/splitapp/router/stats"
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
	verdictAllDown     = verdict{http.StatusServiceUnavailable, stats.CodeUnavailable, "no upstream available", "5"}
	verdictBusy        = verdict{http.StatusServiceUnavailable, stats.CodeUnavailable, "primary busy with fallback reads", "1"}
)

// failover handles a failed attempt on ex.backend: it records the evidence
// and returns the backend to try next or, with none, the answer to give.
func (rt *Router) failover(ex *exchange) (*backend, verdict) {
	f := ex.failure
	ex.failure = nil
	var replay *replayRequest
	if errors.As(f.Err, &replay) {
		// Not the replica's failure: the app wrote, or would have. The
		// route is learned, so the next such read goes to the primary at
		// once.
		ex.replayedFrom, ex.replayedStatus, ex.replayedTime = ex.backend, replay.status, time.Since(ex.AttemptStart)
		if replay.readError {
			rt.recordResponse(ex.backend, replay.status)
		}
		rt.learned.learn(ex.method, ex.path)
		if !rt.primary.up.Available() {
			return nil, verdictNoPrimary
		}
		ex.decision.Role, ex.decision.Reason, ex.decision.Pin = health.Primary, stats.ReasonReplay, true
		return rt.primary, verdict{}
	}
	ex.failed = f.Class
	rt.recordFailure(ex.backend, f.Class, f.Err)

	switch f.Class {
	case health.Client:
		var be *http1.BodyError
		switch {
		case errors.As(f.Err, &be) && be.Malformed():
			return nil, verdictBadBody
		case be != nil && be.Stalled():
			return nil, verdictBodyTimeout
		}
		return nil, verdictClientGone
	case health.Timeout:
		// A slow endpoint is slow everywhere: trying it elsewhere would
		// multiply its load and the client's wait.
		return nil, verdictTimeout
	case health.BadResponse:
		if errors.Is(f.Err, http1.ErrResponseHeadTooLarge) {
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
	if ex.decision.Reason == stats.ReasonPinned && next.up.Role == health.Replica {
		// The primary failed a pinned read: availability over
		// read-your-writes, as while the primary is down.
		ex.decision.Reason = stats.ReasonPrimaryDown
	}
	ex.retries++
	return next, verdict{}
}

// respond writes the router's own answer, when no upstream's came through.
// A client that has gone gets none: its connection is cut, so that a
// failed request can never read as an empty 200.
func (rt *Router) respond(ex *exchange, v verdict) {
	if v.status == statusClientClosed {
		ex.status, ex.code, ex.desc = statusClientClosed, stats.CodeClientGone, verdictClientGone.desc
		ex.Ctx.Conn().Close()
		return
	}
	if v.status == http.StatusBadRequest || v.status == http.StatusRequestTimeout {
		// What is left of the client's body can no longer be told from a
		// next request.
		ex.closeClient = true
	}
	rt.writeError(ex, v.status, v.code, v.desc)
	if v.retryAfter != "" {
		ex.Ctx.Response.Header.Set("Retry-After", v.retryAfter)
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
	if ex.retries >= maxRetries || !IsSafe(ex.method) || ex.BodyLength != 0 || ex.Upgrading {
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
			return b, verdict{}
		}
	}
	return nil, verdict{}
}
