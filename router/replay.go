package router

import (
	"io"
	"slices"
	"strconv"

	"github.com/splitapp/router/health"
)

// PinTokenHeader carries the pin for clients that keep no cookies: the
// router sets it on every response that pins and honours it on requests.
const PinTokenHeader = "X-Router-Pin-Token"

// replayHeader lets a read-only app hand a request it cannot serve (it
// wrote) back to the router: "X-Router-Replay: primary".
const replayHeader = "X-Router-Replay"

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
	resp := &ex.ctx.Response
	req := &ex.ctx.Request.Header
	status := resp.StatusCode()
	if ex.answer.replay {
		if ex.answer.replayPrimary && (requestBodyLength(req) == 0 || ex.buffered) {
			return &replayRequest{status: status}
		}
		return nil
	}
	// A retry of a safe method is what RFC 9110 §9.2.2 permits; only
	// bodiless GET and HEAD, which every framework treats as reads.
	if rt.replayReadErrors && status >= 500 && (req.IsGet() || req.IsHead()) &&
		requestBodyLength(req) == 0 && !ex.head.isUpgrade() {
		return &replayRequest{status: status, readError: true}
	}
	return nil
}

// replayBodyLimit is the largest request body kept in memory so that a read
// with a body (a READ_PATHS POST) can be replayed on the primary.
const replayBodyLimit = 64 << 10

// bufferBody reads a small request body into memory so that it can be sent
// again on a replay. A body the client broke comes back as a failure.
func bufferBody(ex *exchange) *failure {
	if stream := ex.ctx.RequestBodyStream(); stream != nil {
		ex.body = slices.Grow(ex.body[:0], replayBodyLimit)[:ex.ctx.Request.Header.ContentLength()]
		for read := 0; read < len(ex.body); {
			ex.extendBodyDeadline()
			n, err := stream.Read(ex.body[read:])
			read += n
			if err == io.EOF && read < len(ex.body) {
				err = io.ErrUnexpectedEOF
			}
			if err != nil && read < len(ex.body) {
				return &failure{health.Client, &clientBodyError{err}}
			}
		}
	} else {
		ex.body = append(ex.body[:0], ex.ctx.Request.Body()...)
	}
	ex.buffered = true
	return nil
}
