package http1

import (
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"
)

// Options configures a Proxy. Zero durations mean no bound.
type Options struct {
	// ConnectTimeout bounds dialling an app, TLS handshake included.
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an app's response head once
	// the request is sent.
	ResponseHeaderTimeout time.Duration
	// UpstreamSendTimeout bounds a stall while sending a request to an app
	// (one that neither reads nor answers).
	UpstreamSendTimeout time.Duration
	// ClientSendTimeout bounds a stall while sending a response to a
	// client that does not read it: the client's connection is cut.
	ClientSendTimeout time.Duration
	// ClientBodyTimeout bounds a stall while reading a request body from a
	// client.
	ClientBodyTimeout time.Duration
	// TLSInsecureSkipVerify turns off certificate verification for HTTPS
	// apps. Only for apps reached over a private network.
	TLSInsecureSkipVerify bool
	// PreserveHost sends the client's Host header to the app instead of
	// the app URL's host.
	PreserveHost bool
	// AfterIdleCheck, if set, runs between the look at an idle connection
	// and its reuse (for a bodiless request, between the look and the
	// write): tests close the connection there.
	AfterIdleCheck func(*Conn)
}

// Proxy carries requests to the apps over HTTP/1.1 and their answers back
// to the clients. One serves every request of a router.
type Proxy struct {
	transport         transport
	clientSendTimeout time.Duration
	clientBodyTimeout time.Duration
	preserveHost      bool
	tunnels           tunnels
}

// tlsSessionCacheSize bounds the TLS sessions kept: one per HTTPS app's
// host, and a router has a handful of apps.
const tlsSessionCacheSize = 64

// New returns a Proxy.
func New(o Options) *Proxy {
	return &Proxy{
		transport: transport{
			// Dialled directly: HTTP_PROXY in the environment never
			// reroutes requests to the apps.
			dialer: &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second},
			tlsConfig: &tls.Config{
				InsecureSkipVerify: o.TLSInsecureSkipVerify,
				// Sessions are resumed: a new connection to an app (after
				// it restarted, or once the pool went idle) costs an
				// abbreviated handshake, not a full one with its signature
				// and certificate check. One entry per app's host name.
				ClientSessionCache: tls.NewLRUClientSessionCache(tlsSessionCacheSize),
				// Classical key exchange, as HAProxy and nginx (OpenSSL
				// 3.0) offer it: Go's default post-quantum hybrid
				// (X25519MLKEM768) added about a millisecond to every new
				// connection on this project's VM, client and app side
				// together, which is most of a resumed handshake.
				CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
			},
			tlsHandshakeTimeout:   o.ConnectTimeout,
			responseHeaderTimeout: o.ResponseHeaderTimeout,
			sendTimeout:           o.UpstreamSendTimeout,
			// Many idle connections per app, so that bursts do not pay for
			// new TCP and TLS handshakes; dropped after 90 s unused.
			maxIdlePerHost: 512,
			idleTimeout:    90 * time.Second,
			afterIdleCheck: o.AfterIdleCheck,
		},
		clientSendTimeout: o.ClientSendTimeout,
		clientBodyTimeout: o.ClientBodyTimeout,
		preserveHost:      o.PreserveHost,
	}
}

// Init ties s to p for good; done is told when a response body that
// streams, or a tunnel, has ended, with the error that cut it short: the
// app's, the client's, or a *PanicError.
func (p *Proxy) Init(s *Stream, done func(error)) {
	s.proxy, s.done = p, done
	s.relay.s = s
}

// Admit starts a request on s: it reads the headers the router acts on and
// readies the body to stream. A status other than 0 is the answer to a
// head that cannot be proxied, and desc says why; nothing after such a
// head on the connection can be trusted to be a request, so the
// connection is to close.
func (p *Proxy) Admit(s *Stream, ctx *fasthttp.RequestCtx) (status int, desc string) {
	// The server read the clock as the request's head came in.
	s.Ctx, s.Start = ctx, ctx.Time()
	h := &ctx.Request.Header
	if status, desc = s.Head.scan(h); status != 0 {
		return status, desc
	}
	s.Upgrading = s.Head.isUpgrade()
	switch n := h.ContentLength(); {
	case n == -1:
		// A chunked request may have come with a Content-Length as well,
		// the shape of request smuggling (RFC 9112 §6.1): nothing
		// pipelined behind it is read. (fasthttp refuses HTTP/1.0 with
		// Transfer-Encoding itself.)
		ctx.SetConnectionClose()
		s.BodyLength = -1
	case n > 0:
		s.BodyLength = n
	}
	if s.BodyLength != 0 {
		// The head timeout is over: a body streams at the client's pace,
		// within CLIENT_BODY_TIMEOUT of no progress.
		if p.clientBodyTimeout > 0 {
			p.extendBodyDeadline(s)
		} else {
			ctx.Conn().SetReadDeadline(time.Time{})
		}
	}
	return 0, ""
}

// Deliver passes the response whose head RoundTrip read on c to the
// client: its body, or, for a 101, the tunnel of the upgraded protocol.
// When the body streams, or the connection is tunnelled, Deliver returns
// at once with streaming set, and s's done is told when it has ended.
// Otherwise the response is whole in s.Ctx, or has failed with err.
func (p *Proxy) Deliver(s *Stream, c *Conn) (streaming bool, err error) {
	if s.Ctx.Response.StatusCode() == http.StatusSwitchingProtocols {
		p.tunnel(s, c)
		return true, nil
	}
	s.relay.begin(c, c.bodyLength)
	if s.relay.streaming {
		return true, nil
	}
	return false, s.relay.err()
}

// CloseIdleConnections closes every pooled connection to the apps; later
// ones are not pooled.
func (p *Proxy) CloseIdleConnections() { p.transport.closeIdle() }

// CloseTunnels closes every upgraded connection (WebSocket), and any that
// opens from now on, and returns how many were open.
func (p *Proxy) CloseTunnels() int { return p.tunnels.closeAll() }
