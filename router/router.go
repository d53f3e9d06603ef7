// Package router decides where each request of a split app goes — the
// read-only fleet or the primary — and proxies it there.
package router

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/http1"
	"github.com/splitapp/router/internal/view"
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

// Router decides where each request of a split app goes, and carries it
// there and its answer back over its Proxy; Handle is its fasthttp
// handler. It keeps no per-client state: the pin lives in the client's
// signed cookie, so any number of router processes can run side by side.
type Router struct {
	primary            *backend
	replicas           *replicaPool
	pinner             *cookie.Pinner
	pinTTL             time.Duration
	rules              Rules
	admin              fasthttp.RequestHandler
	accessLog          *accessLog
	logger             *slog.Logger
	proxy              *http1.Proxy
	exchanges          sync.Pool
	onEvent            func(health.Event)
	onRequest          func(stats.Sample)
	onPanic            func()
	lsn                func(context.Context, bool) (uint64, error)
	onPinnedWait       func()
	inflight           atomic.Int64
	primaryReadPercent int
	lsnPinTTL          time.Duration
	replayReadErrors   bool
	learned            *learnedRoutes
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
	up     *health.Upstream
	target *http1.Target
}

// New returns a Router.
func New(o Options) *Router {
	rt := &Router{
		pinner:             o.Pinner,
		pinTTL:             o.PinTTL,
		rules:              o.Rules,
		logger:             o.Logger,
		onEvent:            o.OnEvent,
		onRequest:          o.OnRequest,
		onPanic:            o.OnPanic,
		lsn:                o.LSN,
		onPinnedWait:       o.OnPinnedWait,
		primaryReadPercent: o.PrimaryReadPercent,
		lsnPinTTL:          max(o.LSNPinTTL, o.PinTTL),
		replayReadErrors:   o.ReplayReadErrors,
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
	admin := o.Admin
	if admin == nil {
		admin = healthOnly
	}
	rt.admin = fasthttpadaptor.NewFastHTTPHandler(admin)
	w := o.AccessLog
	if w == nil {
		w = os.Stdout
	}
	rt.accessLog = newAccessLog(w, o.JSONLogs)
	rt.proxy = http1.New(http1.Options{
		ConnectTimeout:        o.ConnectTimeout,
		ResponseHeaderTimeout: o.UpstreamTimeout,
		UpstreamSendTimeout:   o.UpstreamSendTimeout,
		ClientSendTimeout:     o.ClientSendTimeout,
		ClientBodyTimeout:     o.ClientBodyTimeout,
		TLSInsecureSkipVerify: o.TLSInsecureSkipVerify,
		PreserveHost:          o.PreserveHost,
	})
	if o.ReplayLearnTTL > 0 {
		rt.learned = newLearnedRoutes(o.ReplayLearnTTL)
	}
	health.ShareEjections(o.Replicas)
	newBackend := func(up *health.Upstream) *backend {
		return &backend{up: up, target: http1.NewTarget(up.URL)}
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
func (rt *Router) Close() { rt.proxy.CloseIdleConnections() }

// CloseTunnels closes every upgraded connection (WebSocket), and any that
// opens from now on, and returns how many were open. Shutdown calls it:
// such a connection has no end a drain could wait for.
func (rt *Router) CloseTunnels() int { return rt.proxy.CloseTunnels() }

// healthOnly answers the router's own paths when no admin handler is
// given: /_router/health, and nothing else.
var healthOnly = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_router/health" {
		w.Write([]byte("ok\n"))
		return
	}
	http.Error(w, "404 Not Found: no such router endpoint", http.StatusNotFound)
})

// Handle serves one request: the router's own paths (/_router/) by the
// admin handler, and every other request by proxying it (serve).
func (rt *Router) Handle(ctx *fasthttp.RequestCtx) {
	if !isRouterPath(ctx) {
		rt.serve(ctx)
		return
	}
	if n := ctx.Request.Header.ContentLength(); n > 0 || n == -1 {
		// The adaptor reads a whole body into memory before the token is
		// checked; no endpoint of the router's takes one, so none is read.
		ex := rt.newExchange()
		ex.Ctx, ex.closeClient = ctx, true
		ex.identify()
		rt.writeError(ex, http.StatusRequestEntityTooLarge, stats.CodeClientError,
			"the router's own endpoints take no request body")
		rt.recycle(ex)
		return
	}
	rt.admin(ctx)
}

// serve routes and proxies one request, in one loop: admit it; plan where
// it goes first; attempt the round trip there and, on failure, let the
// failure policy (failover.go) record the evidence and name the next
// backend, or none; then deliver the response, or answer in its place.
// The exchange is finished once the last byte of the response is out,
// which for a streamed body is after serve has returned (delivered).
func (rt *Router) serve(ctx *fasthttp.RequestCtx) {
	ex := rt.newExchange()
	defer func() {
		if v := recover(); v != nil {
			rt.recovered(ex, v)
		}
	}()
	if !rt.admit(ex, ctx) {
		rt.recycle(ex)
		return
	}
	b, refused := rt.plan(ex)
	http1.InjectPanic(ctx, "serve")
	for b != nil {
		if c := rt.attempt(ex, b); c != nil {
			rt.deliver(ex, c)
			return
		}
		b, refused = rt.failover(ex)
	}
	rt.respond(ex, refused)
	rt.finish(ex, nil)
}

// admit starts a request. One whose head cannot be proxied, or that is for
// the router itself (OPTIONS *, CONNECT), is answered here, and false
// returned; any other counts as in flight from now until it is finished.
func (rt *Router) admit(ex *exchange, ctx *fasthttp.RequestCtx) bool {
	status, desc := rt.proxy.Admit(&ex.Stream, ctx)
	ex.method, ex.path = view.String(ctx.Method()), view.String(ctx.Path())
	ex.identify()
	h := &ctx.Request.Header
	switch {
	case status != 0:
		// The head cannot be trusted to say where the request ends:
		// nothing after it on the connection is read.
		ex.closeClient = true
		rt.writeError(ex, status, stats.CodeClientError, desc)
		return false
	case string(h.RequestURI()) == "*":
		// A server-wide OPTIONS (Admit refused * with any other method)
		// asks about the router, which answers it.
		ctx.Response.Header.Set("Allow", allowedMethods)
		return false
	case h.IsConnect():
		rt.writeError(ex, http.StatusMethodNotAllowed, stats.CodeClientError, "the router does not tunnel CONNECT")
		ctx.Response.Header.Set("Allow", allowedMethods)
		return false
	}
	rt.inflight.Add(1)
	ex.counted = true
	ex.closeClient = ctx.Response.Header.ConnectionClose()
	return true
}

// allowedMethods is the Allow header of the router's own answers.
const allowedMethods = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"

// identify names the request: by the front router's X-Request-Id, or a new
// id.
func (ex *exchange) identify() {
	id := ex.Head.RequestID
	if !validRequestID(id) {
		newRequestID(&ex.idBuf)
		id = ex.idBuf[:]
	}
	ex.RequestID = view.String(id)
}

// validRequestID applies Heroku's rule for X-Request-Id: 20 to 200
// characters of A-Z a-z 0-9 + / = -.
func validRequestID(id []byte) bool {
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
