package router

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/splitapp/router/health"
	"github.com/splitapp/router/http1"
	"github.com/splitapp/router/stats"
)

// finish records the exchange once its response is out, or has failed,
// and returns it to the pool. err is the error that cut the response body
// short: the app's, or the client's. A response cut short leaves the
// client's connection closed, so the client sees an error, never a short
// body as whole; the line is logged as an error and the blame placed.
func (rt *Router) finish(ex *exchange, err error) {
	if ex.holdsSlot {
		<-rt.fallbackSlots
	}
	if ex.begun != nil {
		ex.begun.up.End()
	}
	if ex.backend != nil && ex.code == "" && err != nil {
		if ex.UpstreamBroke() {
			ex.failed = health.Aborted
			ex.code, ex.desc = stats.CodeUpstreamAborted, "upstream connection ended mid-response; client connection closed"
		} else {
			ex.failed = health.Client
			ex.code, ex.desc = stats.CodeClientGone, "client left mid-response"
			if http1.IsTimeout(err) {
				ex.desc = "client stopped reading for CLIENT_SEND_TIMEOUT"
			}
		}
		rt.recordFailure(ex.backend, ex.failed, errMidBody)
	}
	if ex.code == "" && ex.status != 0 && ex.backend != nil {
		// The whole response came through: the upstream answered.
		rt.recordResponse(ex.backend, ex.status)
	}
	rt.record(ex)
	rt.recycle(ex)
}

// recovered handles a panic while serving ex. It is a bug, but one
// request's: fasthttp's server does not recover, and the process would
// take every other request down with it, as net/http's server does not. The
// panic is logged with the request id and its stack and counted, the
// client's connection is closed, and the exchange abandoned: nothing half
// done goes back to a pool.
func (rt *Router) recovered(ex *exchange, v any) {
	rt.panicked(ex, "serving a request", v, debug.Stack())
	ex.Ctx.SetConnectionClose()
	ex.Ctx.Conn().Close()
	rt.abandon(ex)
}

// panicked logs a panic with the request's id and its stack, and counts it.
func (rt *Router) panicked(ex *exchange, where string, v any, stack []byte) {
	rt.logger.Error("panic "+where+"; connection closed", "request_id", ex.RequestID,
		"method", ex.method, "path", ex.path, "panic", fmt.Sprint(v), "stack", string(stack))
	rt.onPanic()
}

// abandon gives back what an exchange holds, without logging it or
// pooling it.
func (rt *Router) abandon(ex *exchange) {
	if ex.holdsSlot {
		<-rt.fallbackSlots
		ex.holdsSlot = false
	}
	if ex.begun != nil {
		ex.begun.up.End()
		ex.begun = nil
	}
	if ex.counted {
		rt.inflight.Add(-1)
		ex.counted = false
	}
}

// record logs a finished exchange and reports it to OnRequest.
func (rt *Router) record(ex *exchange) {
	rt.inflight.Add(-1)
	ex.counted = false
	end := time.Now()
	service := end.Sub(ex.Start)
	s := stats.Sample{
		Method:    methodName(ex.method),
		Upstream:  stats.UpstreamNone,
		Reason:    ex.decision.Reason,
		Read:      IsSafe(ex.method),
		Pinned:    ex.pinned,
		PinIssued: ex.pinIssued,
		PinReason: ex.pinReason,
		Status:    ex.status,
		Code:      ex.code,
		Retries:   ex.retries,
		Service:   service,
		End:       end,
	}
	if ex.backend != nil {
		s.Upstream = ex.backend.up.Role.String()
	}
	rt.accessLog.write(ex, service)
	rt.onRequest(s)
}

// methodName returns a method for keeping past the request: the constant
// for a standard one, so that counting it allocates nothing.
func methodName(m string) string {
	for _, std := range [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace} {
		if m == std {
			return std
		}
	}
	return strings.Clone(m)
}

// recordFailure counts a failure against b and reports any ejection. It
// and recordResponse are the one place health evidence is recorded.
func (rt *Router) recordFailure(b *backend, class health.Class, err error) {
	if ev, changed := b.up.RecordFailure(class, err.Error()); changed {
		rt.onEvent(ev)
	}
}

// recordResponse counts a response b gave and reports any change it makes.
func (rt *Router) recordResponse(b *backend, status int) {
	if ev, changed := b.up.RecordResponse(status); changed {
		rt.onEvent(ev)
	}
}
