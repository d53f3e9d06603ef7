package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
)

// Error codes in the log line's code= field.
const (
	codeUpstreamError       = "upstream_error"        // the upstream could not be reached or broke the connection
	codeUpstreamTimeout     = "upstream_timeout"      // no response headers within UPSTREAM_TIMEOUT
	codeUpstreamAborted     = "upstream_aborted"      // the upstream died mid-response
	codeUpstreamBadResponse = "upstream_bad_response" // the response head was malformed or too large
	codeClientGone          = "client_gone"           // the client went away before the response
	codeClientError         = "client_error"          // the client's request body was malformed
	codeUnavailable         = "unavailable"           // no upstream could take the request
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

	// failure is the current attempt's, nil while it has not failed;
	// failed is the class of the last failed attempt, for the log.
	failure *failure
	failed  health.Class
	retries int
	// clientErr is the error writing to the client, if any.
	clientErr error
	// attemptStart is when the current attempt began. A read a read-only
	// app handed back names it, its status and time in the log.
	attemptStart   time.Time
	replayedFrom   *backend
	replayedStatus int
	replayedTime   time.Duration
	// sendDeadlineAt is when the client connection's write deadline was
	// last moved, for CLIENT_SEND_TIMEOUT; zero if never.
	sendDeadlineAt time.Time
	// holdsSlot is set while the request holds a PRIMARY_READ_LIMIT slot.
	holdsSlot bool
}

func (rt *Router) newExchange(w http.ResponseWriter, r *http.Request) *exchange {
	ex, _ := rt.exchanges.Get().(*exchange)
	if ex == nil {
		ex = &exchange{rt: rt}
		ex.trace.GetConn = func(string) { ex.getConn = time.Now() }
		ex.trace.GotConn = func(httptrace.GotConnInfo) { ex.connect = time.Since(ex.getConn) }
		ex.trace.WroteRequest = func(info httptrace.WroteRequestInfo) {
			// The transport reports a dead pooled connection it replaced.
			if f, ok := info.Err.(*failure); ok && ex.backend != nil {
				ex.failed = f.class
				ex.rt.recordFailure(ex.backend, f)
			}
		}
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
// the pin cookie. The router's own headers never reach the client, in an
// interim 1xx response either.
func (ex *exchange) WriteHeader(code int) {
	if code < 200 {
		h := ex.rw.Header()
		delete(h, "X-Router-Pin")
		delete(h, replayHeader)
		delete(h, PinTokenHeader)
	} else if ex.status == 0 {
		ex.status = code
		ex.pin()
	}
	ex.rw.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (ex *exchange) Write(p []byte) (int, error) {
	if ex.status == 0 {
		ex.WriteHeader(http.StatusOK)
	}
	if d := ex.rt.clientSendTimeout; d > 0 {
		ex.extendSendDeadline(d)
	}
	n, err := ex.rw.Write(p)
	ex.bytes += int64(n)
	if err != nil {
		ex.clientErr = err
	}
	return n, err
}

// extendSendDeadline keeps the client connection's write deadline d ahead,
// so a client that stops reading is cut off after d without progress. The
// deadline moves at most every d/16, which keeps the clock and the poller
// off the path of most writes.
func (ex *exchange) extendSendDeadline(d time.Duration) {
	now := time.Now()
	if now.Sub(ex.sendDeadlineAt) < d/16 {
		return
	}
	if ex.setWriteDeadline(now.Add(d)) {
		ex.sendDeadlineAt = now
	}
}

// clearSendDeadline lifts the write deadline, so it cannot outlive the
// exchange on a kept-alive connection.
func (ex *exchange) clearSendDeadline() {
	if ex.sendDeadlineAt.IsZero() {
		return
	}
	ex.setWriteDeadline(time.Time{})
	ex.sendDeadlineAt = time.Time{}
}

// setWriteDeadline sets the client connection's write deadline, and
// reports whether the ResponseWriter could.
func (ex *exchange) setWriteDeadline(t time.Time) bool {
	c, ok := ex.rw.(interface{ SetWriteDeadline(time.Time) error })
	if ok {
		c.SetWriteDeadline(t)
	}
	return ok
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
	lsn := ex.rt.currentLSN(ex.req.Context())
	if lsn > 0 && !steered {
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
	if r.TLS != nil {
		return true
	}
	// Schemes compare case-insensitively (RFC 9110 §4.2.3); behind a chain
	// of proxies the first value is the client's.
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
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
