package router

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/http1"
	"github.com/splitapp/router/internal/view"
	"github.com/splitapp/router/replication"
	"github.com/splitapp/router/stats"
)

// statusClientClosed is logged, never sent, when the client went away.
const statusClientClosed = 499

// exchange is one request's journey through the router, from the decision
// to the last byte of the response. Exchanges are pooled; the strings in
// one are views of the request's bytes and live as long as the request.
type exchange struct {
	// Stream is the request and its answer as the data plane carries
	// them.
	http1.Stream
	rt    *Router
	idBuf [36]byte // a generated request id
	// route and routeCleaned are the path as an app may route the raw
	// target and the cleaned path, when they can differ from path
	// (appRoute); their buffers are reused.
	route, routeCleaned []byte
	routing
}

// routing is an exchange's own state for one request, zeroed between
// requests.
type routing struct {
	method   string
	path     string
	decision Decision
	backend  *backend
	pinned   bool
	pinLSN   uint64 // the pin's WAL position, 0 if none
	// pinIssued is set when the response carries a new pin; pinReason is
	// what it carries (stats.PinWAL), or why it is a time pin.
	pinIssued bool
	pinReason string
	status    int

	code string // error code, empty on success
	desc string

	// failure is the current attempt's, nil while it has not failed;
	// failed is the class of the last failed attempt, for the log.
	failure *http1.Error
	failed  health.Class
	retries int
	// replayedFrom is the read-only app that handed the request back, with
	// its answer's status and time, for the log.
	replayedFrom   *backend
	replayedStatus int
	replayedTime   time.Duration
	// begun is the backend whose response is being relayed: its
	// in-flight count drops when the exchange is finished.
	begun *backend
	// closeClient is set when the client's connection must close after
	// this response.
	closeClient bool
	// holdsSlot is set while the request holds a PRIMARY_READ_LIMIT slot.
	holdsSlot bool
	// counted is set while the request counts in the router's in-flight
	// requests.
	counted bool
}

func (rt *Router) newExchange() *exchange {
	ex, _ := rt.exchanges.Get().(*exchange)
	if ex == nil {
		ex = &exchange{rt: rt}
		rt.proxy.Init(&ex.Stream, func(err error) { rt.delivered(ex, err) })
	}
	return ex
}

// recycle returns an exchange to the pool, keeping its buffers.
func (rt *Router) recycle(ex *exchange) {
	ex.Stream.Reset()
	ex.route, ex.routeCleaned = ex.route[:0], ex.routeCleaned[:0]
	ex.routing = routing{}
	rt.exchanges.Put(ex)
}

// pin sets the pin cookie on a response from the primary when the request
// was a write, or when the app asks for one with "X-Router-Pin: <duration>".
// "X-Router-Pin: skip" suppresses it. The header is the router's to consume:
// the client never sees it.
func (ex *exchange) pin() {
	h := &ex.Ctx.Response.Header
	directive := view.String(ex.Directives.Pin)
	if ex.backend == nil || ex.backend.up.Role != health.Primary {
		return
	}
	var ttl time.Duration
	if ex.decision.Pin {
		ttl = ex.rt.pinTTL
	}
	steered := false
	switch {
	case directive == "":
	case directive == "skip":
		ttl = 0
	default:
		if d, err := time.ParseDuration(directive); err == nil && d > 0 && d <= cookie.MaxTTL {
			ttl, steered = d, true
		}
	}
	if ttl <= 0 {
		return
	}
	var lsn uint64
	ex.pinReason = stats.PinRequested
	if !steered {
		lsn, ex.pinReason = ex.rt.currentLSN()
	}
	if lsn > 0 {
		// The position is the truth about the write: the pin holds until
		// a follower has replayed it, however long the follower lags, up
		// to LSN_PIN_TTL. PIN_TTL is only a guess at the lag.
		ttl = ex.rt.lsnPinTTL
	}
	token, err := ex.rt.pinner.Sign(ttl, lsn)
	if err != nil {
		ex.rt.logger.Error("signing pin", "err", err)
		return
	}
	h.Add("Set-Cookie", ex.rt.pinner.SetCookieValue(token, ttl, ex.isHTTPS()))
	h.Set(http1.PinTokenHeader, token)
	ex.pinIssued = true
}

// lsnTimeout bounds the wait for the WAL position of each pin: past it the
// pin is a plain time pin and the response goes on.
const lsnTimeout = 100 * time.Millisecond

// currentLSN returns the primary database's WAL position for a pin, asked
// after the primary's response head arrived, so the write has committed;
// or 0 (a time pin) and why, when it is not tracked, is known to be
// unreachable, or cannot be had quickly.
func (rt *Router) currentLSN() (uint64, string) {
	if rt.lsn == nil {
		return 0, stats.PinNoDatabase
	}
	ctx, cancel := context.WithTimeout(context.Background(), lsnTimeout)
	defer cancel()
	// This request is one of the primary's in flight; any other may be a
	// write whose pin the same read can serve.
	lsn, err := rt.lsn(ctx, rt.primary.up.Inflight() > 1)
	switch {
	case err == nil:
		return lsn, stats.PinWAL
	case errors.Is(err, replication.ErrDown):
		return 0, stats.PinDatabaseDown
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, replication.ErrSlow):
		return 0, stats.PinSlow
	}
	rt.logger.Debug("no WAL position for the pin; issuing a time pin", "err", err)
	return 0, stats.PinFailed
}

// isHTTPS reports whether the client reached the router, or the front
// router before it, over HTTPS: the pin cookie is then Secure.
func (ex *exchange) isHTTPS() bool {
	if ex.Ctx.IsTLS() {
		return true
	}
	// Schemes compare case-insensitively (RFC 9110 §4.2.3); behind a chain
	// of proxies the first value is the client's.
	proto, _, _ := strings.Cut(view.String(ex.Head.ForwardedProto), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

// writeError writes the router's own answer: a short plain-text error
// naming the request id, in place of anything an upstream sent. It is the
// one place the router writes one, and it never includes Go error text or
// upstream addresses.
func (rt *Router) writeError(ex *exchange, status int, code, desc string) {
	ex.status, ex.code, ex.desc = status, code, desc
	resp := &ex.Ctx.Response
	resp.Reset()
	if ex.closeClient {
		resp.Header.SetConnectionClose()
	}
	resp.SetStatusCode(status)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.Header.Set("X-Content-Type-Options", "nosniff")
	resp.Header.Set("X-Request-Id", ex.RequestID)
	for _, s := range [...]string{http.StatusText(status), ": ", desc, " (request_id=", ex.RequestID, ")\n"} {
		resp.AppendBodyString(s)
	}
	ex.Bytes = int64(len(resp.Body()))
}
