package router

import (
	"errors"
	"time"

	"github.com/splitapp/router/health"
	"github.com/splitapp/router/http1"
	"github.com/splitapp/router/stats"
)

// attempt makes one attempt on b: the request goes there and the response
// head comes back. It returns the connection the response body is to be
// read from, or nil with the failure left in ex.failure for failover.
func (rt *Router) attempt(ex *exchange, b *backend) *http1.Conn {
	ex.AttemptStart = ex.Start
	if ex.backend != nil {
		ex.AttemptStart = time.Now() // a retry or a replay
	}
	ex.backend = b
	if b.up.Role == health.Replica && ex.BodyLength > 0 && ex.BodyLength <= http1.MaxBufferedBody && !ex.Buffered() {
		// A read with a body (READ_PATHS) is kept, so that a read-only app
		// can hand it back to the primary.
		if err := rt.proxy.BufferBody(&ex.Stream); err != nil {
			ex.failure = err
			return nil
		}
	}
	ex.ForwardUpgrade = ex.decision.Reason == stats.ReasonUpgrade
	b.up.Begin()
	c, err := rt.proxy.RoundTrip(&ex.Stream, b.target, false)
	if err != nil && err.Class == health.StaleConn {
		// Nothing reached the app: say so, and send on a new connection.
		ex.failed = err.Class
		rt.recordFailure(b, err.Class, err.Err)
		c, err = rt.proxy.RoundTrip(&ex.Stream, b.target, true)
	}
	if err == nil && b.up.Role == health.Replica {
		if replay := rt.replicaResponse(ex); replay != nil {
			// The answer is discarded unread, and its connection with it.
			c.Close()
			err = &http1.Error{Class: health.NoFailure, Err: replay}
		}
	}
	if err != nil {
		b.up.End()
		ex.failure = err
		return nil
	}
	ex.begun = b
	resp := &ex.Ctx.Response
	ex.status = resp.StatusCode()
	if ex.closeClient {
		resp.Header.SetConnectionClose()
	}
	ex.pin()
	return c
}

// deliver passes the response on to the client. The exchange is finished
// here when the response is whole, or once its streamed body or tunnel
// has ended (delivered).
func (rt *Router) deliver(ex *exchange, c *http1.Conn) {
	if streaming, err := rt.proxy.Deliver(&ex.Stream, c); !streaming {
		rt.finish(ex, err)
	}
}

// delivered is told when a response body that streamed, or a tunnel, has
// ended, with the error that cut it short. A panic there (fasthttp reads
// the body outside the handler's recover) is logged and the exchange
// abandoned, as recovered does.
func (rt *Router) delivered(ex *exchange, err error) {
	var p *http1.PanicError
	if errors.As(err, &p) {
		rt.panicked(ex, p.Where, p.Value, p.Stack)
		rt.abandon(ex)
		return
	}
	rt.finish(ex, err)
}
