// Package router decides where each request of a split app goes — the
// read-only fleet or the primary — and proxies it there.
package router

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"sync"
	"sync/atomic"
	"time"

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
	// JSONLogs writes the access log as JSON objects instead of logfmt.
	JSONLogs bool
	// LSN, if set, returns the primary database's current WAL position. It
	// is asked once per pin issued, and the position goes into the pin, so
	// a pinned read can go to a follower that has replayed it.
	LSN func(context.Context) (uint64, error)
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
	exchanges          sync.Pool
	onEvent            func(health.Event)
	onRequest          func(stats.Sample)
	lsn                func(context.Context) (uint64, error)
	inflight           atomic.Int64
	primaryReadPercent int
	clientSendTimeout  time.Duration
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

// backend is an upstream and the proxy that sends to it.
type backend struct {
	up    *health.Upstream
	proxy *httputil.ReverseProxy
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
		lsn:                o.LSN,
		primaryReadPercent: o.PrimaryReadPercent,
	}
	if rt.onEvent == nil {
		rt.onEvent = func(health.Event) {}
	}
	if rt.onRequest == nil {
		rt.onRequest = func(stats.Sample) {}
	}
	if o.PrimaryReadLimit > 0 {
		rt.fallbackSlots = make(chan struct{}, o.PrimaryReadLimit)
	}
	if rt.logger == nil {
		rt.logger = slog.Default()
	}
	if rt.admin == nil {
		rt.admin = NewAdmin(AdminOptions{})
	}
	w := o.AccessLog
	if w == nil {
		w = os.Stdout
	}
	rt.accessLog = newAccessLog(w, o.JSONLogs)
	rt.transport = newTransport(o.ConnectTimeout, o.UpstreamTimeout, o.TLSInsecureSkipVerify)
	rt.transport.sendTimeout = o.UpstreamSendTimeout
	rt.clientSendTimeout = o.ClientSendTimeout
	rt.lsnPinTTL = max(o.LSNPinTTL, o.PinTTL)
	rt.replayReadErrors = o.ReplayReadErrors
	if o.ReplayLearnTTL > 0 {
		rt.learned = newLearnedRoutes(o.ReplayLearnTTL)
	}
	health.ShareEjections(o.Replicas)
	errorLog := slog.NewLogLogger(rt.logger.Handler(), slog.LevelDebug)
	newBackend := func(up *health.Upstream) *backend {
		b := &backend{up: up}
		b.proxy = &httputil.ReverseProxy{
			Rewrite:      rt.rewriteFor(up, o.PreserveHost),
			Transport:    rt.transport,
			BufferPool:   bufferPool{},
			ErrorHandler: rt.proxyError,
			ErrorLog:     errorLog,
		}
		if up.Role == health.Replica {
			b.proxy.ModifyResponse = rt.replicaResponse
		} else {
			b.proxy.ModifyResponse = dropReplayHeader
		}
		return b
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
func (rt *Router) LearnedRoutes() []LearnedRoute { return rt.learned.snapshot() }

// Inflight returns the proxied requests being served now.
func (rt *Router) Inflight() int64 { return rt.inflight.Load() }

// Close releases idle upstream connections.
func (rt *Router) Close() { rt.transport.CloseIdleConnections() }

func newTransport(connectTimeout, upstreamTimeout time.Duration, insecureSkipVerify bool) *transport {
	return &transport{
		// Dialled directly: HTTP_PROXY in the environment never reroutes
		// requests to the upstreams.
		dialer:                &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second},
		tlsConfig:             &tls.Config{InsecureSkipVerify: insecureSkipVerify},
		tlsHandshakeTimeout:   connectTimeout,
		responseHeaderTimeout: upstreamTimeout,
		// Many idle connections per upstream, so that bursts do not pay for
		// new TCP and TLS handshakes; dropped after 90 s unused.
		maxIdlePerHost: 512,
		idleTimeout:    90 * time.Second,
	}
}

// bufferPool lends ReverseProxy 32 KiB copy buffers, so streaming a large
// body costs one reused buffer, not fresh garbage per request.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// rewriteFor builds the outbound request for one upstream.
func (rt *Router) rewriteFor(up *health.Upstream, preserveHost bool) func(*httputil.ProxyRequest) {
	return func(pr *httputil.ProxyRequest) {
		pr.SetURL(up.URL)
		if preserveHost {
			pr.Out.Host = pr.In.Host
		}
		// ReverseProxy strips inbound X-Forwarded-* before Rewrite. Behind a
		// front router (Heroku's) those values are the real client's, so
		// they are copied back on purpose: For is appended to, Proto, Port
		// and Host are kept as the front router set them. SetXForwarded
		// alone would claim the client spoke plain http to us.
		in := pr.In.Header
		if v := in["X-Forwarded-For"]; len(v) > 0 {
			pr.Out.Header["X-Forwarded-For"] = v
		}
		pr.SetXForwarded()
		if v := in["X-Forwarded-Proto"]; len(v) > 0 {
			pr.Out.Header["X-Forwarded-Proto"] = v
		}
		if v := in["X-Forwarded-Host"]; len(v) > 0 {
			pr.Out.Header["X-Forwarded-Host"] = v
		}
		rt.pinner.Strip(pr.Out.Header)
		pr.Out.Header.Del(PinTokenHeader)
	}
}

// ServeHTTP routes and proxies one request in three steps, as one loop:
// decide once, into a plan (the first backend); send, and on failure let
// the failure policy (failover.go) record the evidence and name the next
// backend, or none; then answer.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isAdminPath(r.URL.Path) {
		rt.admin.ServeHTTP(w, r)
		return
	}
	if status, desc := checkRequest(r); status != 0 {
		w.Header().Set("Connection", "close")
		http.Error(w, http.StatusText(status)+": "+desc, status)
		return
	}
	if len(r.TransferEncoding) > 0 {
		// net/http drops a Content-Length that came with Transfer-Encoding
		// and reads the body as chunked, then serves whatever follows on the
		// connection: the shape of request smuggling (RFC 9112 §6.1). The
		// router cannot see whether both came, so it closes every
		// connection that carried a chunked request once that request is
		// answered: nothing pipelined behind it is ever read.
		w.Header().Set("Connection", "close")
	} else if r.ProtoAtLeast(1, 0) && !r.ProtoAtLeast(1, 1) {
		// An HTTP/1.0 request with Transfer-Encoding is faulty, and its
		// connection must close after it (RFC 9112 §6.1). net/http drops the
		// header before the router could see it, so every HTTP/1.0
		// connection closes after one request: nothing pipelined behind
		// such a request is read.
		w.Header().Set("Connection", "close")
	}
	if r.Method == http.MethodConnect {
		w.Header().Set("Allow", "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE")
		http.Error(w, "405 Method Not Allowed: the router does not tunnel CONNECT", http.StatusMethodNotAllowed)
		return
	}
	rt.inflight.Add(1)
	ex := rt.newExchange(w, r)
	defer rt.finish(ex)

	b, refused := rt.plan(ex)
	for b != nil {
		rt.send(ex, b)
		if ex.failure == nil {
			return
		}
		b, refused = rt.failover(ex)
	}
	rt.answer(ex, refused)
}

// plan decides where the request goes first, or the answer when nowhere
// can take it.
func (rt *Router) plan(ex *exchange) (*backend, verdict) {
	r := ex.req
	pin, pinned := rt.pinner.FromRequest(r)
	if !pinned {
		pin, pinned = rt.pinner.Verify(r.Header.Get(PinTokenHeader))
	}
	ex.pinned, ex.pinLSN = pinned, pin.LSN
	in := Input{
		Method:       r.Method,
		Path:         r.URL.Path,
		Upgrade:      isUpgrade(r.Header),
		Pinned:       ex.pinned,
		PrimaryUp:    rt.primary.up.Available(),
		PrimaryShare: rt.primaryReadPercent > 0 && rand.IntN(100) < rt.primaryReadPercent,
	}
	// Only a read can go to a replica. For one, pick the replica with the
	// decision's inputs, so that the decision never names a replica that
	// has left rotation since; a write leaves the round-robin alone.
	var caughtUp, replica *backend
	var learned *learnedRoute
	if IsSafe(r.Method) || rt.rules.ReadPaths.Match(r.Method, r.URL.Path) {
		if pin.LSN > 0 {
			caughtUp = rt.replicas.pickCaughtUp(pin.LSN, nil)
		}
		if !pinned || caughtUp == nil {
			replica = rt.replicas.pick(nil)
		}
		if !pinned && IsSafe(r.Method) {
			learned = rt.learned.find(r.Method, r.URL.Path)
		}
	}
	in.CaughtUp, in.Learned = caughtUp != nil, learned != nil
	in.ReplicaUp = replica != nil || caughtUp != nil
	ex.decision = rt.rules.Decide(in)
	if ex.decision.Reason == ReasonLearned {
		learned.served.Add(1)
	}

	var b *backend
	switch {
	case ex.decision.Refuse:
		if ex.decision.Reason == ReasonPrimaryDown {
			return nil, verdictNoPrimary
		}
		return nil, verdict{http.StatusServiceUnavailable, codeUnavailable, "no upstream available", "5"}
	case ex.decision.Reason == ReasonCaughtUp:
		b = caughtUp
	case ex.decision.Role == health.Replica:
		if b = replica; b == nil {
			b = caughtUp
		}
	default:
		b = rt.primary
	}
	if ex.decision.Reason == ReasonNoReplica {
		if v, ok := rt.admitFallback(ex); !ok {
			return nil, v
		}
	}
	if b.up.Role == health.Replica && r.ContentLength > 0 && r.ContentLength <= replayBodyLimit {
		if f := bufferBody(ex); f != nil {
			ex.backend, ex.failure = b, f
			return rt.failover(ex)
		}
	}
	return b, verdict{}
}

// send makes one attempt on b. A failure is left in ex.failure.
func (rt *Router) send(ex *exchange, b *backend) {
	if ex.backend != nil && ex.req.GetBody != nil {
		ex.req.Body, _ = ex.req.GetBody()
	}
	ex.backend, ex.attemptStart = b, time.Now()
	b.up.Begin()
	defer b.up.End()
	b.proxy.ServeHTTP(ex, ex.req)
}

// answer writes the router's own answer, when no upstream's came through.
// A client that has gone gets none: its connection is cut, so that a
// failed request can never read as an empty 200.
func (rt *Router) answer(ex *exchange, v verdict) {
	if v.status == statusClientClosed || ex.req.Context().Err() != nil {
		ex.status, ex.code, ex.desc = statusClientClosed, codeClientGone, verdictClientGone.desc
		panic(http.ErrAbortHandler)
	}
	if v.retryAfter != "" {
		ex.rw.Header().Set("Retry-After", v.retryAfter)
	}
	if v.status == http.StatusBadRequest {
		ex.rw.Header().Set("Connection", "close")
	}
	rt.fail(ex, v.status, v.code, v.desc)
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
		case <-ex.req.Context().Done():
			return verdictClientGone, false
		}
	}
	ex.holdsSlot = true
	return verdict{}, true
}

// finish records the exchange and returns it to the pool. A response
// that the router began but could not finish ends in a panic with
// http.ErrAbortHandler, so that the server cuts the client's connection:
// the client sees an error, never a short body as whole. Then the line is
// logged as an error, the blame placed (the client, or the upstream that
// stopped mid-body) and the panic goes on.
func (rt *Router) finish(ex *exchange) {
	if ex.holdsSlot {
		<-rt.fallbackSlots
	}
	if v := recover(); v != nil {
		if ex.code == "" {
			if ex.clientErr != nil || ex.req.Context().Err() != nil {
				ex.failed = health.Client
				ex.code, ex.desc = codeClientGone, "client left mid-response"
				if isTimeout(ex.clientErr) {
					ex.desc = "client stopped reading for CLIENT_SEND_TIMEOUT"
				}
			} else {
				ex.failed = health.Aborted
				ex.code, ex.desc = codeUpstreamAborted, "upstream connection ended mid-response; client connection closed"
			}
			if ex.backend != nil {
				rt.recordFailure(ex.backend, &failure{ex.failed, errMidBody})
			}
		}
		rt.record(ex)
		panic(v)
	}
	ex.clearSendDeadline()
	if ex.status == 0 && ex.decision.Reason == ReasonUpgrade && ex.code == "" {
		// The connection was hijacked for the upgrade; ReverseProxy wrote
		// the 101 itself.
		ex.status = http.StatusSwitchingProtocols
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

// record logs a finished exchange and reports it to OnRequest.
func (rt *Router) record(ex *exchange) {
	rt.inflight.Add(-1)
	service := time.Since(ex.start)
	rt.accessLog.write(ex, service)
	s := stats.Sample{
		Method:    ex.req.Method,
		Upstream:  "none",
		Reason:    string(ex.decision.Reason),
		Read:      IsSafe(ex.req.Method),
		Pinned:    ex.pinned,
		PinIssued: ex.pinIssued,
		Status:    ex.status,
		Code:      ex.code,
		Retries:   ex.retries,
		Service:   service,
	}
	if ex.backend != nil {
		s.Upstream = ex.backend.up.Role.String()
	}
	rt.onRequest(s)
}
