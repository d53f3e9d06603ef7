package router

import "strconv"

// replayRequest is a read-only app's answer that the router discards to
// send the request to the primary instead: the app asked for it with
// "X-Router-Replay: primary", or (with REPLAY_READ_ERRORS) it failed a
// bodiless GET or HEAD with a 5xx.
type replayRequest struct {
	status    int  // the discarded answer's status
	readError bool // replayed for its 5xx, not at the app's request
}

func (e *replayRequest) Error() string {
	if e.readError {
		return "read-only app failed a read with " + strconv.Itoa(e.status) + "; replaying it on the primary"
	}
	return "read-only app asked for a replay on the primary"
}

// replicaResponse looks at a read-only app's response head: one that asks
// for a replay, or a read error when REPLAY_READ_ERRORS is on, is
// discarded if the request can be sent again, and failover sends the
// request to the primary.
func (rt *Router) replicaResponse(ex *exchange) *replayRequest {
	req := &ex.Ctx.Request.Header
	status := ex.Ctx.Response.StatusCode()
	if ex.Directives.Replay {
		if ex.Directives.ReplayPrimary && (ex.BodyLength == 0 || ex.Buffered()) {
			return &replayRequest{status: status}
		}
		return nil
	}
	// A retry of a safe method is what RFC 9110 §9.2.2 permits; only
	// bodiless GET and HEAD, which every framework treats as reads.
	if rt.replayReadErrors && status >= 500 && (req.IsGet() || req.IsHead()) &&
		ex.BodyLength == 0 && !ex.Upgrading {
		return &replayRequest{status: status, readError: true}
	}
	return nil
}
