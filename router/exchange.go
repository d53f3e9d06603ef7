package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"time"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
)

// Error codes in the log line's code= field.
const (
	codeUpstreamError   = "upstream_error"   // the upstream could not be reached or broke the connection
	codeUpstreamTimeout = "upstream_timeout" // no response headers within UPSTREAM_TIMEOUT
	codeUpstreamAborted = "upstream_aborted" // the upstream died mid-response
	codeClientGone      = "client_gone"      // the client went away before the response
	codeUnavailable     = "unavailable"      // no upstream could take the request
)

// statusClientClosed is logged, never sent, when the client went away.
const statusClientClosed = 499

// exchange is one request's journey through the router. It is the
// ResponseWriter ReverseProxy writes to, which is how the pin cookie is set
// on the way out without a context lookup. Exchanges are pooled.
type exchange struct {
	rw        http.ResponseWriter
	req       *http.Request
	rt        *Router
	start     time.Time
	requestID string
	decision  Decision
	backend   *backend
	pinned    bool
	pinLSN    uint64 // the pin's WAL position, 0 if none
	pinIssued bool
	status    int
	bytes     int64

	getConn time.Time
	connect time.Duration
	trace   httptrace.ClientTrace

	code string // error code, empty on success
	desc string

	// next is set by proxyError when a failed read should be tried again
	// there; retries counts the retries made.
	next    *backend
	retries int
	// holdsSlot is set while the request holds a PRIMARY_READ_LIMIT slot.
	holdsSlot bool
}

func (rt *Router) newExchange(w http.ResponseWriter, r *http.Request) *exchange {
	ex, _ := rt.exchanges.Get().(*exchange)
	if ex == nil {
		ex = &exchange{rt: rt}
		ex.trace.GetConn = func(string) { ex.getConn = time.Now() }
		ex.trace.GotConn = func(httptrace.GotConnInfo) { ex.connect = time.Since(ex.getConn) }
	}
	ex.rw, ex.start = w, time.Now()
	ex.requestID = r.Header.Get("X-Request-Id")
	if !validRequestID(ex.requestID) {
		ex.requestID = newRequestID()
		r.Header["X-Request-Id"] = []string{ex.requestID}
	}
	ex.req = r.WithContext(httptrace.WithClientTrace(r.Context(), &ex.trace))
	return ex
}

func (rt *Router) release(ex *exchange) {
	trace := ex.trace
	*ex = exchange{rt: rt, trace: trace}
	rt.exchanges.Put(ex)
}

// Header implements http.ResponseWriter.
func (ex *exchange) Header() http.Header { return ex.rw.Header() }

// WriteHeader implements http.ResponseWriter. On the final status of an
// upstream response it applies the app's X-Router-Pin directive and sets
// the pin cookie.
func (ex *exchange) WriteHeader(code int) {
	if code >= 200 && ex.status == 0 {
		ex.status = code
		if ev, changed := ex.backend.up.RecordResponse(code); changed {
			ex.rt.onEvent(ev)
		}
		ex.pin()
	}
	ex.rw.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (ex *exchange) Write(p []byte) (int, error) {
	if ex.status == 0 {
		ex.WriteHeader(http.StatusOK)
	}
	n, err := ex.rw.Write(p)
	ex.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's Flush and
// Hijack, which streaming and upgrades need.
func (ex *exchange) Unwrap() http.ResponseWriter { return ex.rw }

// pin sets the pin cookie on a response from the primary when the request
// was a write, or when the app asks for one with "X-Router-Pin: <duration>".
// "X-Router-Pin: skip" suppresses it. The header is the router's to consume:
// the client never sees it.
func (ex *exchange) pin() {
	h := ex.rw.Header()
	directive := h.Get("X-Router-Pin")
	if directive != "" {
		delete(h, "X-Router-Pin")
	}
	if ex.backend == nil || ex.backend.up.Role != health.Primary {
		return
	}
	var ttl time.Duration
	if ex.decision.Pin {
		ttl = ex.rt.pinTTL
	}
	switch {
	case directive == "":
	case directive == "skip":
		ttl = 0
	default:
		if d, err := time.ParseDuration(directive); err == nil && d > 0 && d <= cookie.MaxTTL {
			ttl = d
		}
	}
	if ttl <= 0 {
		return
	}
	token, err := ex.rt.pinner.Sign(ttl, ex.rt.currentLSN(ex.req.Context()))
	if err != nil {
		ex.rt.logger.Error("signing pin", "err", err)
		return
	}
	ex.rt.pinner.SetCookie(h, token, ttl, isHTTPS(ex.req))
	h.Set(PinTokenHeader, token)
	ex.pinIssued = true
}

// lsnTimeout bounds the WAL position query made for each pin: past it the
// pin is a plain time pin and the response goes on.
const lsnTimeout = 100 * time.Millisecond

// currentLSN returns the primary database's WAL position, or 0 (a plain
// time pin) when it is not tracked or cannot be had quickly. It is asked
// after the primary's response headers arrived, so the write has committed.
func (rt *Router) currentLSN(ctx context.Context) uint64 {
	if rt.lsn == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, lsnTimeout)
	defer cancel()
	lsn, err := rt.lsn(ctx)
	if err != nil {
		rt.logger.Debug("no WAL position for the pin; issuing a time pin", "err", err)
		return 0
	}
	return lsn
}

// isHTTPS reports whether the client reached the router, or the front
// router before it, over HTTPS: the pin cookie is then Secure.
func isHTTPS(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

// proxyError is ReverseProxy's ErrorHandler: it runs when no response
// headers came back from the upstream. The upstream is ejected; a read that
// can be repeated safely is retried elsewhere; anything else is answered
// with 502 or 504 and never sent again.
func (rt *Router) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := w.(*exchange)
	if errors.Is(err, errReplay) {
		// Not the replica's failure: it wrote, or would have.
		if !rt.primary.up.Available() {
			rt.fail(ex, http.StatusServiceUnavailable, codeUnavailable, "primary unavailable")
			return
		}
		ex.decision.Role, ex.decision.Reason, ex.decision.Pin = health.Primary, ReasonReplay, true
		ex.next = rt.primary
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// Nobody is listening; log it and keep the upstream's record clean.
		ex.status, ex.code, ex.desc = statusClientClosed, codeClientGone, "client closed the connection before the response"
		return
	}
	if ev, changed := ex.backend.up.Eject(err.Error()); changed {
		rt.onEvent(ev)
	}
	if next := rt.retryTarget(ex); next != nil {
		ex.retries++
		ex.next = next
		return
	}
	if ex.status != 0 {
		return // the spillover guard has answered already
	}
	if isTimeout(err) {
		rt.fail(ex, http.StatusGatewayTimeout, codeUpstreamTimeout, "upstream did not answer in time")
		return
	}
	rt.fail(ex, http.StatusBadGateway, codeUpstreamError, "upstream unreachable or connection broken")
}

// maxRetries bounds the attempts of one read: another replica, then the
// primary.
const maxRetries = 2

// retryTarget returns where a failed attempt should be repeated, or nil.
// Only safe methods without a body are repeated: for those, sending twice
// cannot do harm, and nothing reached the client yet. A read that failed on
// a replica goes to another replica once, then to the primary; a pinned
// read released to a follower goes only to another follower that has the
// write, or to the primary; a pinned read whose primary failed goes to a
// replica, as it would while the primary is down.
func (rt *Router) retryTarget(ex *exchange) *backend {
	r := ex.req
	if ex.retries >= maxRetries || !IsSafe(r.Method) || r.ContentLength != 0 || len(r.TransferEncoding) > 0 || isUpgrade(r.Header) {
		return nil
	}
	switch {
	case ex.decision.Reason == ReasonCaughtUp:
		if b := rt.replicas.pickCaughtUp(ex.pinLSN, ex.backend); b != nil && ex.retries == 0 {
			return b
		}
		if rt.primary.up.Available() {
			return rt.primary
		}
	case ex.backend.up.Role == health.Replica:
		if ex.retries == 0 {
			if b := rt.replicas.pick(ex.backend); b != nil {
				return b
			}
		}
		if rt.primary.up.Available() && rt.admitFallback(ex) {
			return rt.primary
		}
	case ex.decision.Reason == ReasonPinned:
		if b := rt.replicas.pick(nil); b != nil {
			ex.decision.Reason = ReasonPrimaryDown
			return b
		}
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refuse answers a request no upstream can take.
func (rt *Router) refuse(ex *exchange) {
	desc := "no upstream available"
	if ex.decision.Reason == ReasonPrimaryDown {
		desc = "primary unavailable"
	}
	ex.rw.Header().Set("Retry-After", "5")
	rt.fail(ex, http.StatusServiceUnavailable, codeUnavailable, desc)
}

// fail writes a short plain-text error naming the request id. It writes to
// the connection directly, bypassing pin handling, and never includes Go
// error text or upstream addresses.
func (rt *Router) fail(ex *exchange, status int, code, desc string) {
	ex.status, ex.code, ex.desc = status, code, desc
	h := ex.rw.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Request-Id", ex.requestID)
	ex.rw.WriteHeader(status)
	n, _ := ex.rw.Write([]byte(http.StatusText(status) + ": " + desc + " (request_id=" + ex.requestID + ")\n"))
	ex.bytes += int64(n)
}

// validRequestID applies Heroku's rule for X-Request-Id: 20 to 200
// characters of A-Z a-z 0-9 + / = -.
func validRequestID(id string) bool {
	if len(id) < 20 || len(id) > 200 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=' || c == '-') {
			return false
		}
	}
	return true
}

// newRequestID returns a random UUID-shaped id.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
