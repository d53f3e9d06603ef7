// Package router decides where each request of a split app goes — the
// read-only fleet or the primary — and proxies it there.
package router

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/stats"
)

// Options configures a Router.
type Options struct {
	Primary  *health.Upstream
	Replicas []*health.Upstream
	Pinner   *cookie.Pinner
	// PinTTL is how long a client stays pinned to the primary after a write.
	PinTTL time.Duration
	Rules  Rules
	// UpstreamTimeout bounds the wait for an upstream's response headers
	// once the request is sent; then the client gets 504.
	UpstreamTimeout time.Duration
	// ConnectTimeout bounds dialling an upstream, TLS handshake included.
	ConnectTimeout time.Duration
	// UpstreamSendTimeout bounds a stall while sending a request to an
	// upstream (an app that neither reads nor answers): the attempt fails
	// as a timeout. Zero: no bound.
	UpstreamSendTimeout time.Duration
	// ClientSendTimeout bounds a stall while sending a response to a client
	// that does not read it: the client's connection is cut. Zero: no
	// bound.
	ClientSendTimeout time.Duration
	// ClientBodyTimeout bounds a stall while reading a request body from
	// a client: the request gets 408 and its connection is closed. Zero:
	// no bound.
	ClientBodyTimeout time.Duration
	// TLSInsecureSkipVerify turns off certificate verification for HTTPS
	// upstreams. Only for upstreams reached over a private network.
	TLSInsecureSkipVerify bool
	// PreserveHost sends the client's Host header upstream instead of the
	// upstream URL's host.
	PreserveHost bool
	// AccessLog receives one logfmt line per proxied request. If nil,
	// os.Stdout.
	AccessLog io.Writer
	// Logger receives the router's own messages. If nil, slog.Default().
	Logger *slog.Logger
	// Admin serves paths under /_router/. If nil, only /_router/health
	// answers.
	Admin http.Handler
	// OnEvent, if set, is told of every passive ejection.
	OnEvent func(health.Event)
	// OnRequest, if set, is told of every proxied request once it is done;
	// metrics and the status page count them.
	OnRequest func(stats.Sample)
	// OnPanic, if set, is told of every request whose handling panicked.
	OnPanic func()
	// JSONLogs writes the access log as JSON objects instead of logfmt.
	JSONLogs bool
	// LSN, if set, returns the primary database's current WAL position. It
	// is asked once per pin issued, and the position goes into the pin, so
	// a pinned read can go to a follower that has replayed it; others says
	// more requests are in flight to the primary, whose pins one read may
	// serve. An error that is replication.ErrDown says the database is
	// known to be unreachable.
	LSN func(ctx context.Context, others bool) (uint64, error)
	// OnPinnedWait, if set, is told when a pinned read finds no follower
	// that has replayed its write yet: positions are read faster.
	OnPinnedWait func()
	// Balance is "least_outstanding" to send each read to the replica with
	// the fewest requests in flight per weight; otherwise weighted
	// round-robin.
	Balance string
	// PrimaryReadPercent is the percentage of reads kept on the primary
	// while replicas are up (reason primary_share): 100 - READ_SHARE. Zero
	// sends every read to the replicas.
	PrimaryReadPercent int
	// PrimaryReadLimit caps concurrent fallback reads on the primary (reads
	// that would go to a replica if one were up). Zero: no cap.
	PrimaryReadLimit int
	// LSNPinTTL is how long a write's pin lasts when it carries a WAL
	// position: until a follower has replayed the position, which is the
	// truth, rather than PinTTL, which is a guess at the lag. Zero: PinTTL.
	LSNPinTTL time.Duration
	// ReplayReadErrors replays on the primary a bodiless GET or HEAD that a
	// read-only app answered with a 5xx.
	ReplayReadErrors bool
	// ReplayLearnTTL is how long, after a replay, reads of the same method
	// and path go straight to the primary (reason learned). Zero: never.
	ReplayLearnTTL time.Duration
}

// Router is an http.Handler that splits traffic between the primary and the
// replicas. It keeps no per-client state: the pin lives in the client's
// signed cookie, so any number of router processes can run side by side.
type Router struct {
	primary            *backend
	replicas           *replicaPool
	pinner             *cookie.Pinner
	pinTTL             time.Duration
	rules              Rules
	admin              http.Handler
	accessLog          *accessLog
	logger             *slog.Logger
	transport          *transport
	preserveHost       bool
	exchanges          sync.Pool
	onEvent            func(health.Event)
	onRequest          func(stats.Sample)
	onPanic            func()
	lsn                func(context.Context, bool) (uint64, error)
	onPinnedWait       func()
	inflight           atomic.Int64
	primaryReadPercent int
	clientSendTimeout  time.Duration
	clientBodyTimeout  time.Duration
	lsnPinTTL          time.Duration
	replayReadErrors   bool
	learned            *learnedRoutes
	tunnels            tunnels
	// fallbackSlots is a semaphore of PrimaryReadLimit slots; nil when the
	// spillover guard is off.
	fallbackSlots chan struct{}
}

// fallbackWait is how long a fallback read waits for a slot on the primary
// before it gets 503: long enough to ride out a burst, short enough that
// clients are not left hanging.
const fallbackWait = time.Second

// backend is an upstream and where its requests go.
type backend struct {
	up  *health.Upstream
	key connKey
	// prefix is the upstream URL's path, put before each request's path;
	// empty for a URL without one.
	prefix string
}

// New returns a Router.
func New(o Options) *Router {
	rt := &Router{
		pinner:             o.Pinner,
		pinTTL:             o.PinTTL,
		rules:              o.Rules,
		admin:              o.Admin,
		logger:             o.Logger,
		onEvent:            o.OnEvent,
		onRequest:          o.OnRequest,
		onPanic:            o.OnPanic,
		lsn:                o.LSN,
		onPinnedWait:       o.OnPinnedWait,
		primaryReadPercent: o.PrimaryReadPercent,
		preserveHost:       o.PreserveHost,
	}
	if rt.onEvent == nil {
		rt.onEvent = func(health.Event) {}
	}
	if rt.onRequest == nil {
		rt.onRequest = func(stats.Sample) {}
	}
	if rt.onPanic == nil {
		rt.onPanic = func() {}
	}
	if rt.onPinnedWait == nil {
		rt.onPinnedWait = func() {}
	}
	if o.PrimaryReadLimit > 0 {
		rt.fallbackSlots = make(chan struct{}, o.PrimaryReadLimit)
	}
	if rt.logger == nil {
		rt.logger = slog.Default()
	}
	if rt.admin == nil {
		rt.admin = healthOnly
	}
	w := o.AccessLog
	if w == nil {
		w = os.Stdout
	}
	rt.accessLog = newAccessLog(w, o.JSONLogs)
	rt.transport = newTransport(o.ConnectTimeout, o.UpstreamTimeout, o.TLSInsecureSkipVerify)
	rt.transport.sendTimeout = o.UpstreamSendTimeout
	rt.clientSendTimeout = o.ClientSendTimeout
	rt.clientBodyTimeout = o.ClientBodyTimeout
	rt.lsnPinTTL = max(o.LSNPinTTL, o.PinTTL)
	rt.replayReadErrors = o.ReplayReadErrors
	if o.ReplayLearnTTL > 0 {
		rt.learned = newLearnedRoutes(o.ReplayLearnTTL)
	}
	health.ShareEjections(o.Replicas)
	newBackend := func(up *health.Upstream) *backend {
		return &backend{
			up:     up,
			key:    connKey{up.URL.Scheme, up.URL.Host},
			prefix: strings.TrimSuffix(up.URL.EscapedPath(), "/"),
		}
	}
	rt.primary = newBackend(o.Primary)
	members := make([]*backend, len(o.Replicas))
	for i, up := range o.Replicas {
		members[i] = newBackend(up)
	}
	rt.replicas = newReplicaPool(members, o.Balance == "least_outstanding")
	return rt
}

// LearnedRoutes lists the reads replayed on the primary lately, most
// replayed first.
func (rt *Router) LearnedRoutes() []stats.LearnedRoute { return rt.learned.snapshot() }

// Inflight returns the proxied requests being served now.
func (rt *Router) Inflight() int64 { return rt.inflight.Load() }

// Close releases idle upstream connections.
func (rt *Router) Close() { rt.transport.CloseIdleConnections() }

// CloseTunnels closes every upgraded connection (WebSocket), and any that
// opens from now on, and returns how many were open. Shutdown calls it:
// such a connection has no end a drain could wait for.
func (rt *Router) CloseTunnels() int { return rt.tunnels.closeAll() }

func newTransport(connectTimeout, upstreamTimeout time.Duration, insecureSkipVerify bool) *transport {
	return &transport{
		// Dialled directly: HTTP_PROXY in the environment never reroutes
		// requests to the upstreams.
		dialer: &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second},
		tlsConfig: &tls.Config{
			InsecureSkipVerify: insecureSkipVerify,
			// Sessions are resumed: a new connection to an app (after it
			// restarted, or once the pool went idle) costs an abbreviated
			// handshake, not a full one with its signature and
			// certificate check. One entry per app's host name.
			ClientSessionCache: tls.NewLRUClientSessionCache(tlsSessionCacheSize),
			// Classical key exchange, as HAProxy and nginx (OpenSSL 3.0)
			// offer it: Go's default post-quantum hybrid (X25519MLKEM768)
			// added about a millisecond to every new connection on this
			// project's VM, client and app side together, which is most
			// of a resumed handshake.
			CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
		},
		tlsHandshakeTimeout:   connectTimeout,
		responseHeaderTimeout: upstreamTimeout,
		// Many idle connections per upstream, so that bursts do not pay for
		// new TCP and TLS handshakes; dropped after 90 s unused.
		maxIdlePerHost: 512,
		idleTimeout:    90 * time.Second,
	}
}

// healthOnly answers the router's own paths when no admin handler is
// given: /_router/health, and nothing else.
var healthOnly = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_router/health" {
		w.Write([]byte("ok\n"))
		return
	}
	http.Error(w, "404 Not Found: no such router endpoint", http.StatusNotFound)
})

// tlsSessionCacheSize bounds the TLS sessions kept: one per HTTPS app's
// host, and a router has a handful of apps.
const tlsSessionCacheSize = 64

// serve routes and proxies one request in three steps, as one loop:
// decide once, into a plan (the first backend); send, and on failure let
// the failure policy (failover.go) record the evidence and name the next
// backend, or none; then answer. The exchange is finished when the last
// byte of the response is out, which for a streamed body is after serve
// has returned.
func (rt *Router) serve(ctx *fasthttp.RequestCtx) {
	ex := rt.newExchange(ctx)
	defer func() {
		if v := recover(); v != nil {
			rt.recovered(ex, v)
		}
	}()
	if status, desc := scanRequest(ctx, &ex.head); status != 0 {
		// The head cannot be trusted to say where the request ends:
		// nothing after it on the connection is read.
		ex.identify()
		ex.closeClient = true
		rt.fail(ex, status, stats.CodeClientError, desc)
		rt.release(ex)
		return
	}
	h := &ctx.Request.Header
	if h.ContentLength() == -1 {
		// A chunked request may have come with a Content-Length as well,
		// the shape of request smuggling (RFC 9112 §6.1): nothing
		// pipelined behind it is read. (fasthttp refuses HTTP/1.0 with
		// Transfer-Encoding itself.)
		ctx.SetConnectionClose()
	}
	if string(h.RequestURI()) == "*" {
		// A server-wide OPTIONS (scanRequest refused * with any other
		// method) asks about the router, which answers it.
		ctx.Response.Header.Set("Allow", allowedMethods)
		rt.release(ex)
		return
	}
	if h.IsConnect() {
		ctx.Response.Header.Set("Allow", allowedMethods)
		ctx.Error("405 Method Not Allowed: the router does not tunnel CONNECT", http.StatusMethodNotAllowed)
		rt.release(ex)
		return
	}
	if requestBodyLength(h) != 0 {
		// The head timeout is over: a body streams at the client's pace,
		// within CLIENT_BODY_TIMEOUT of no progress.
		if rt.clientBodyTimeout > 0 {
			ex.extendBodyDeadline()
		} else {
			ctx.Conn().SetReadDeadline(time.Time{})
		}
	}
	rt.inflight.Add(1)
	ex.counted = true
	ex.identify()
	ex.closeClient = ctx.Response.Header.ConnectionClose()

	b, refused := rt.plan(ex)
	injectPanic(ctx, "serve")
	for b != nil {
		rt.send(ex, b)
		if ex.failure == nil {
			if !ex.relay.streaming {
				rt.finish(ex, ex.relay.err())
			}
			return
		}
		b, refused = rt.failover(ex)
	}
	rt.answer(ex, refused)
	rt.finish(ex, nil)
}

// allowedMethods is the Allow header of the router's own answers.
const allowedMethods = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"

// plan decides where the request goes first, or the answer when nowhere
// can take it.
func (rt *Router) plan(ex *exchange) (*backend, verdict) {
	h := &ex.ctx.Request.Header
	pin, pinned := rt.pinFromCookies(ex)
	if !pinned {
		if token := ex.head.pinToken; len(token) > 0 {
			pin, pinned = rt.pinner.Verify(view(token))
		}
	}
	ex.pinned, ex.pinLSN = pinned, pin.LSN
	path := ex.path
	if len(rt.rules.PrimaryPaths)+len(rt.rules.ReadPaths) > 0 {
		// Apps may route the raw target otherwise than fasthttp cleaned
		// it: a parameter-stripped or escaped-slash view of it, and of the
		// cleaned path (an escaped ';' is a literal one there).
		ex.route = appRoute(rawPath(ex.ctx), ex.route)
		ex.routeCleaned = appRoute(ex.path, ex.routeCleaned)
		path = rt.rules.routingPath(ex.method, ex.path, view(ex.route), view(ex.routeCleaned))
	}
	in := Input{
		Method:       ex.method,
		Path:         path,
		Upgrade:      ex.head.isUpgrade(),
		Pinned:       ex.pinned,
		PrimaryUp:    rt.primary.up.Available(),
		PrimaryShare: rt.primaryReadPercent > 0 && rand.IntN(100) < rt.primaryReadPercent,
	}
	// Only a read can go to a replica. For one, pick the replica with the
	// decision's inputs, so that the decision never names a replica that
	// has left rotation since; a write leaves the round-robin alone.
	var caughtUp, replica *backend
	var learned *learnedRoute
	if IsSafe(ex.method) || rt.rules.ReadPaths.Match(ex.method, path) {
		if pin.LSN > 0 {
			if caughtUp = rt.replicas.pickCaughtUp(pin.LSN, nil); caughtUp == nil {
				rt.onPinnedWait()
			}
		}
		if !pinned || caughtUp == nil {
			replica = rt.replicas.pick(nil)
		}
		if IsSafe(ex.method) {
			learned = rt.learned.find(ex.method, ex.path)
		}
	}
	in.CaughtUp, in.Learned = caughtUp != nil, learned != nil
	in.ReplicaUp = replica != nil || caughtUp != nil
	ex.decision = rt.rules.Decide(in)
	if ex.decision.Reason == stats.ReasonLearned {
		learned.served.Add(1)
	}

	var b *backend
	switch {
	case ex.decision.Refuse:
		if ex.decision.Reason == stats.ReasonPrimaryDown {
			return nil, verdictNoPrimary
		}
		return nil, verdict{http.StatusServiceUnavailable, stats.CodeUnavailable, "no upstream available", "5"}
	case ex.decision.Reason == stats.ReasonCaughtUp:
		b = caughtUp
	case ex.decision.Role == health.Replica:
		if b = replica; b == nil {
			b = caughtUp
		}
	default:
		b = rt.primary
	}
	if ex.decision.Reason == stats.ReasonNoReplica {
		if v, ok := rt.admitFallback(ex); !ok {
			return nil, v
		}
	}
	if n := h.ContentLength(); b.up.Role == health.Replica && n > 0 && n <= replayBodyLimit {
		if f := bufferBody(ex); f != nil {
			ex.backend, ex.failure = b, f
			return rt.failover(ex)
		}
	}
	return b, verdict{}
}

// pinFromCookies returns the pin in the request's cookies. Every cookie of
// the name is tried: a junk one placed first (a sibling subdomain's, or a
// stale path's) must not hide a valid pin behind it. A request without the
// cookie costs no allocation.
func (rt *Router) pinFromCookies(ex *exchange) (cookie.Pin, bool) {
	name := rt.pinner.Name()
	for k, v := range ex.ctx.Request.Header.Cookies() {
		if view(k) != name {
			continue
		}
		ex.pinCookie = true
		if pin, ok := rt.pinner.Verify(view(v)); ok {
			return pin, true
		}
	}
	return cookie.Pin{}, false
}

// answer writes the router's own answer, when no upstream's came through.
// A client that has gone gets none: its connection is cut, so that a
// failed request can never read as an empty 200.
func (rt *Router) answer(ex *exchange, v verdict) {
	if v.status == statusClientClosed {
		ex.status, ex.code, ex.desc = statusClientClosed, stats.CodeClientGone, verdictClientGone.desc
		ex.ctx.Conn().Close()
		return
	}
	if v.status == http.StatusBadRequest || v.status == http.StatusRequestTimeout {
		// What is left of the client's body can no longer be told from a
		// next request.
		ex.closeClient = true
	}
	rt.fail(ex, v.status, v.code, v.desc)
	if v.retryAfter != "" {
		ex.ctx.Response.Header.Set("Retry-After", v.retryAfter)
	}
}

// admitFallback applies the spillover guard to a read that falls back to
// the primary: when PRIMARY_READ_LIMIT such reads are in flight it waits
// briefly for a slot, then refuses with 503. Without replicas configured
// there is no fallback and no limit. When it refuses, v is the answer.
func (rt *Router) admitFallback(ex *exchange) (v verdict, ok bool) {
	if rt.fallbackSlots == nil || len(rt.replicas.members) == 0 || ex.holdsSlot {
		return verdict{}, true
	}
	select {
	case rt.fallbackSlots <- struct{}{}:
	default:
		timer := time.NewTimer(fallbackWait)
		defer timer.Stop()
		select {
		case rt.fallbackSlots <- struct{}{}:
		case <-timer.C:
			return verdictBusy, false
		}
	}
	ex.holdsSlot = true
	return verdict{}, true
}

// finish records the exchange once its response is out, or has failed,
// and returns it to the pool. err is the error that cut the response body
// short: the upstream's, or the client's. A response cut short leaves the
// client's connection closed, so the client sees an error, never a short
// body as whole; the line is logged as an error and the blame placed.
func (rt *Router) finish(ex *exchange, err error) {
	if ex.holdsSlot {
		<-rt.fallbackSlots
	}
	if ex.begun != nil {
		ex.begun.up.End()
	}
	if ex.backend != nil && ex.code == "" {
		switch {
		case err == nil:
		case ex.relay.upErr != nil:
			ex.failed = health.Aborted
			ex.code, ex.desc = stats.CodeUpstreamAborted, "upstream connection ended mid-response; client connection closed"
			rt.recordFailure(ex.backend, &failure{ex.failed, errMidBody})
		default:
			ex.failed = health.Client
			ex.code, ex.desc = stats.CodeClientGone, "client left mid-response"
			if isTimeout(err) {
				ex.desc = "client stopped reading for CLIENT_SEND_TIMEOUT"
			}
			rt.recordFailure(ex.backend, &failure{ex.failed, errMidBody})
		}
	}
	if ex.code == "" && ex.status != 0 && ex.backend != nil {
		// The whole response came through: the upstream answered.
		if ev, changed := ex.backend.up.RecordResponse(ex.status); changed {
			rt.onEvent(ev)
		}
	}
	rt.record(ex)
	rt.release(ex)
}

// recovered handles a panic while serving ex. It is a bug, but one
// request's: fasthttp's server does not recover, and the process would
// take every other request down with it, as net/http's server does not. The
// panic is logged with the request id and its stack and counted, the
// client's connection is closed, and the exchange abandoned: nothing half
// done goes back to a pool.
func (rt *Router) recovered(ex *exchange, v any) {
	rt.logger.Error("panic serving a request; connection closed", "request_id", ex.requestID,
		"method", ex.method, "path", ex.path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	rt.onPanic()
	ex.ctx.SetConnectionClose()
	ex.ctx.Conn().Close()
	rt.abandon(ex)
}

// abandon gives back what an exchange holds, without logging it or
// pooling it.
func (rt *Router) abandon(ex *exchange) {
	if pc := ex.relay.pc; pc != nil {
		pc.conn.Close()
		ex.relay.pc = nil
	}
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
	service := end.Sub(ex.start)
	rt.accessLog.write(ex, service)
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
