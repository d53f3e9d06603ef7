package router

import (
	"bytes"
	"io"
	"net/http"
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

// replicaResponse is the replicas' ModifyResponse: a response that asks for
// a replay, or a read error when REPLAY_READ_ERRORS is on, is discarded if
// the request can be sent again, and failover sends the request to the
// primary.
func (rt *Router) replicaResponse(resp *http.Response) error {
	out := resp.Request
	v := resp.Header.Get(replayHeader)
	if v != "" {
		resp.Header.Del(replayHeader)
		if v == "primary" && (out.ContentLength == 0 || out.GetBody != nil) {
			return &replayRequest{status: resp.StatusCode}
		}
		return nil
	}
	// A retry of a safe method is what RFC 9110 §9.2.2 permits; only
	// bodiless GET and HEAD, which every framework treats as reads.
	if rt.replayReadErrors && resp.StatusCode >= 500 && (out.Method == http.MethodGet || out.Method == http.MethodHead) &&
		out.ContentLength == 0 && len(out.TransferEncoding) == 0 && !isUpgrade(out.Header) {
		return &replayRequest{status: resp.StatusCode, readError: true}
	}
	return nil
}

// dropReplayHeader is the primary's ModifyResponse: a replay happens at
// most once, and the header is the router's to consume.
func dropReplayHeader(resp *http.Response) error {
	resp.Header.Del(replayHeader)
	return nil
}

// replayBodyLimit is the largest request body kept in memory so that a read
// with a body (a READ_PATHS POST) can be replayed on the primary.
const replayBodyLimit = 64 << 10

// bufferBody reads a small request body into memory so that it can be sent
// again on a replay. A body the client broke comes back as a failure.
func bufferBody(ex *exchange) *failure {
	body, err := io.ReadAll(io.LimitReader(ex.req.Body, replayBodyLimit+1))
	if err == nil && int64(len(body)) != ex.req.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return &failure{health.Client, &clientBodyError{err}}
	}
	ex.req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	ex.req.Body, _ = ex.req.GetBody()
	return nil
}
