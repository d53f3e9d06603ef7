package router

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/replication"
	"github.com/splitapp/router/stats"
)

// statusClientClosed is logged, never sent, when the client went away.
const statusClientClosed = 499

// exchange is one request's journey through the router, from the decision
// to the last byte of the response. Exchanges are pooled; the strings in
// one are views of the request's bytes and live as long as the request.
type exchange struct {
	ctx       *fasthttp.RequestCtx
	rt        *Router
	start     time.Time
	method    string
	path      string
	requestID string
	idBuf     [36]byte // a generated request id
	ip        []byte   // the client's address, once asked for
	ipBuf     [48]byte
	head      requestHead
	answer    answerHead
	decision  Decision
	backend   *backend
	pinned    bool
	pinLSN    uint64 // the pin's WAL position, 0 if none
	pinIssued bool
	// pinReason is what the issued pin carries (stats.PinWAL), or why it
	// is a time pin.
	pinReason string
	// pinCookie is set when the request carries the pin cookie, valid or
	// not: the app never sees it.
	pinCookie bool
	status    int
	bytes     int64
	connect   time.Duration

	code string // error code, empty on success
	desc string

	// failure is the current attempt's, nil while it has not failed;
	// failed is the class of the last failed attempt, for the log.
	failure *failure
	failed  health.Class
	retries int
	// attemptStart is when the current attempt began. A read a read-only
	// app handed back names it, its status and time in the log.
	attemptStart   time.Time
	replayedFrom   *backend
	replayedStatus int
	replayedTime   time.Duration
	// begun is the backend whose response is being relayed: its
	// in-flight count drops when the exchange is finished.
	begun *backend
	// closeClient is set when the client's connection must close after
	// this response.
	closeClient bool
	// sendDeadlineAt is when the client connection's write deadline was
	// last moved, for CLIENT_SEND_TIMEOUT; zero if never.
	sendDeadlineAt time.Time
	// route and routeCleaned are the path as an app may route the raw
	// target and the cleaned path, when they can differ from path
	// (appRoute); their buffers are reused.
	route, routeCleaned []byte
	// scratch and num are reused buffers for building header values.
	scratch []byte
	num     [20]byte
	// holdsSlot is set while the request holds a PRIMARY_READ_LIMIT slot.
	holdsSlot bool
	// counted is set while the request counts in the router's in-flight
	// requests.
	counted bool

	// body is the request body when it is kept for a replay.
	body     []byte
	buffered bool
	// bodyDeadlineAt is when the client connection's read deadline was
	// last moved, for CLIENT_BODY_TIMEOUT; zero if never.
	bodyDeadlineAt time.Time
	// relay carries the response body from the upstream to the client.
	relay relay
	// alive is the client connection's liveness check, made once per
	// pooled exchange.
	alive liveness
}

func (rt *Router) newExchange(ctx *fasthttp.RequestCtx) *exchange {
	ex, _ := rt.exchanges.Get().(*exchange)
	if ex == nil {
		ex = &exchange{rt: rt}
		ex.relay.ex = ex
		ex.alive.init()
	}
	// The server read the clock as the request's head came in.
	ex.ctx, ex.start = ctx, ctx.Time()
	ex.method = view(ctx.Method())
	ex.path = view(ctx.Path())
	return ex
}

// identify names the request: by the front router's X-Request-Id, or a new
// id.
func (ex *exchange) identify() {
	ex.requestID = view(ex.head.requestID)
	if !validRequestID(ex.requestID) {
		newRequestID(&ex.idBuf)
		ex.requestID = view(ex.idBuf[:])
	}
}

func (rt *Router) release(ex *exchange) {
	body, scratch, alive := ex.body[:0], ex.scratch[:0], ex.alive
	route, routeCleaned := ex.route[:0], ex.routeCleaned[:0]
	answer, head := ex.answer, ex.head
	answer.reset()
	head.reset()
	*ex = exchange{rt: rt, body: body, scratch: scratch, alive: alive, answer: answer, head: head, route: route,
		routeCleaned: routeCleaned}
	ex.relay.ex = ex
	rt.exchanges.Put(ex)
}

// view returns b as a string without copying. The string is valid while b
// is: for request bytes, until the request is finished.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// clientGone reports whether the client has left: it closed or half-closed
// its connection.
func (ex *exchange) clientGone() bool { return !ex.alive.check(ex.ctx.Conn()) }

// pin sets the pin cookie on a response from the primary when the request
// was a write, or when the app asks for one with "X-Router-Pin: <duration>".
// "X-Router-Pin: skip" suppresses it. The header is the router's to consume:
// the client never sees it.
func (ex *exchange) pin() {
	h := &ex.ctx.Response.Header
	directive := view(ex.answer.pin)
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
	h.Set(PinTokenHeader, token)
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
	if ex.ctx.IsTLS() {
		return true
	}
	// Schemes compare case-insensitively (RFC 9110 §4.2.3); behind a chain
	// of proxies the first value is the client's.
	proto, _, _ := strings.Cut(view(ex.head.forwardedProto), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

// fail writes a short plain-text error naming the request id, in place of
// anything an upstream sent. It never includes Go error text or upstream
// addresses.
func (rt *Router) fail(ex *exchange, status int, code, desc string) {
	ex.status, ex.code, ex.desc = status, code, desc
	resp := &ex.ctx.Response
	resp.Reset()
	if ex.closeClient {
		resp.Header.SetConnectionClose()
	}
	resp.SetStatusCode(status)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.Header.Set("X-Content-Type-Options", "nosniff")
	resp.Header.Set("X-Request-Id", ex.requestID)
	for _, s := range [...]string{http.StatusText(status), ": ", desc, " (request_id=", ex.requestID, ")\n"} {
		resp.AppendBodyString(s)
	}
	ex.bytes = int64(len(resp.Body()))
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

// newRequestID writes a random UUID-shaped id into s. The bits come from
// math/rand/v2's generator (ChaCha8, seeded by the runtime): ids that
// never repeat in practice, at a fraction of crypto/rand's cost per
// request. A request id names a request in logs; it is no secret.
func newRequestID(s *[36]byte) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
}

// clientIP returns the client connection's address without its port. It
// is worked out once per request: the log line and X-Forwarded-For both
// need it.
func (ex *exchange) clientIP() []byte {
	if ex.ip == nil {
		if a, ok := ex.ctx.RemoteAddr().(*net.TCPAddr); ok {
			ex.ip = a.AddrPort().Addr().Unmap().AppendTo(ex.ipBuf[:0])
		} else {
			ex.ip = append(ex.ipBuf[:0], ex.ctx.RemoteAddr().String()...)
		}
	}
	return ex.ip
}
