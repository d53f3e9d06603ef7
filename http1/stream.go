// Package http1 is the router's HTTP/1.1 data plane: the server that reads
// the clients' requests, the pool of connections to the apps, and the bytes
// between them: request heads rewritten for an app, response heads cleaned
// for the client, bodies relayed both ways, upgraded connections tunnelled.
//
// It decides nothing. The router names the app for each attempt
// (Proxy.RoundTrip) and reads what went wrong from the typed *Error it gets
// back, whose health.Class says what may be retried and whom it counts
// against; the router alone records that evidence and writes its own
// answers. Nothing here imports the routing package.
package http1

import (
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// Stream is one client request on its way through the router, and its
// answer on the way back, across every attempt to send it. The router
// keeps one in each of its pooled exchanges: Proxy.Init ties it to its
// proxy once, Proxy.Admit starts each request, Reset ends it. Byte slices
// and strings in it are views of the request's bytes, valid until the
// request is finished.
type Stream struct {
	Ctx *fasthttp.RequestCtx
	// Start is when the request's head came in.
	Start time.Time
	// Head holds the request headers the router acts on.
	Head RequestHead
	// BodyLength is the request body's framing: its Content-Length, -1
	// for a chunked body, 0 for none.
	BodyLength int
	// Upgrading is set when the request asks to switch protocols.
	Upgrading bool

	// RequestID names the request to the app (X-Request-Id); the router
	// sets it before the first round trip.
	RequestID string
	// HiddenCookie, when set, is a cookie left out of the Cookie header
	// the app gets: the router's own.
	HiddenCookie string
	// AttemptStart is when the current attempt began: a round trip's
	// Connect is measured from it.
	AttemptStart time.Time
	// ForwardUpgrade passes the request's wish to switch protocols on to
	// the app. The router clears it for an upgrade request it routes as
	// something else.
	ForwardUpgrade bool

	// Directives is what the app's response asked of the router.
	Directives Directives
	// Connect is how long the last attempt waited for a connection to
	// the app.
	Connect time.Duration
	// Bytes counts the response body bytes given to the client.
	Bytes int64

	proxy *Proxy
	// done is told when a response body that streams, or a tunnel, ends.
	done func(error)
	// ip is the client's address, once asked for.
	ip    []byte
	ipBuf [48]byte
	// scratch and num are reused buffers for building header values.
	scratch []byte
	num     [20]byte
	// body is the request body when it is kept to be sent again.
	body     []byte
	buffered bool
	// bodyDeadlineAt and sendDeadlineAt are when the client connection's
	// read and write deadlines were last moved, for CLIENT_BODY_TIMEOUT and
	// CLIENT_SEND_TIMEOUT; zero if never.
	bodyDeadlineAt time.Time
	sendDeadlineAt time.Time
	// client looks at the client's socket while the router waits.
	client probe
	relay  relay
}

// Reset readies the stream for its next request, keeping its buffers.
func (s *Stream) Reset() {
	keep := Stream{
		proxy:      s.proxy,
		done:       s.done,
		scratch:    s.scratch[:0],
		body:       s.body[:0],
		client:     s.client,
		Head:       s.Head,
		Directives: s.Directives,
	}
	keep.Head.reset()
	keep.Directives.reset()
	*s = keep
	s.relay.s = s
}

// ClientIP returns the client connection's address without its port. It
// is worked out once per request: the log line and X-Forwarded-For both
// need it.
func (s *Stream) ClientIP() []byte {
	if s.ip == nil {
		if a, ok := s.Ctx.RemoteAddr().(*net.TCPAddr); ok {
			s.ip = a.AddrPort().Addr().Unmap().AppendTo(s.ipBuf[:0])
		} else {
			s.ip = append(s.ipBuf[:0], s.Ctx.RemoteAddr().String()...)
		}
	}
	return s.ip
}

// Buffered reports whether the request body is kept in memory
// (Proxy.BufferBody), so that the request can be sent again.
func (s *Stream) Buffered() bool { return s.buffered }

// UpstreamBroke reports whether the app's connection ended the response
// body short, as opposed to the client leaving.
func (s *Stream) UpstreamBroke() bool { return s.relay.upErr != nil }

// clientGone reports whether the client has left: it closed or half-closed
// its connection.
func (s *Stream) clientGone() bool { return s.client.lookAt(s.Ctx.Conn()) == socketClosed }

// extendSendDeadline keeps the client connection's write deadline d ahead,
// so a client that stops reading is cut off after d without progress. The
// deadline moves at most every d/16, which keeps the clock and the poller
// off the path of most writes.
func (s *Stream) extendSendDeadline(d time.Duration) {
	now := time.Now()
	if now.Sub(s.sendDeadlineAt) < d/16 {
		return
	}
	s.Ctx.Conn().SetWriteDeadline(now.Add(d))
	s.sendDeadlineAt = now
}

// clearSendDeadline lifts the write deadline, so it cannot outlive the
// request on a kept-alive connection.
func (s *Stream) clearSendDeadline() {
	if s.sendDeadlineAt.IsZero() {
		return
	}
	s.Ctx.Conn().SetWriteDeadline(time.Time{})
	s.sendDeadlineAt = time.Time{}
}
