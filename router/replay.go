package router

import (
	"bytes"
	"errors"
	"io"
	"net/http"

	"github.com/splitapp/router/health"
)

// PinTokenHeader carries the pin for clients that keep no cookies: the
// router sets it on every response that pins and honours it on requests.
const PinTokenHeader = "X-Router-Pin-Token"

// replayHeader lets a read-only app hand a request it cannot serve (it
// wrote) back to the router: "X-Router-Replay: primary".
const replayHeader = "X-Router-Replay"

// errReplay tells the failure policy that a replica asked for a replay.
var errReplay = errors.New("replica asked for a replay on the primary")

// replayToPrimary is the replicas' ModifyResponse: a response that asks for
// a replay is discarded, if the request can be sent again, and failover
// sends the request to the primary.
func replayToPrimary(resp *http.Response) error {
	v := resp.Header.Get(replayHeader)
	if v == "" {
		return nil
	}
	resp.Header.Del(replayHeader)
	out := resp.Request
	if v == "primary" && (out.ContentLength == 0 || out.GetBody != nil) {
		return errReplay
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
