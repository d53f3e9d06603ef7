package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// ServerOptions configures the server for the proxied traffic.
type ServerOptions struct {
	// RequestHeaderTimeout bounds reading a request head: a client that
	// trickles headers (slowloris) is cut off.
	RequestHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle this long.
	IdleTimeout time.Duration
	// Logger receives the server's own messages, at debug level.
	Logger *slog.Logger
}

// Server serves the proxied traffic with fasthttp's server: it parses
// requests into reused buffers and keeps each connection's state between
// requests, which is most of what net/http's server spends per request.
// The router's own paths (/_router/) are served through an adaptor, by the
// admin's net/http handler.
type Server struct {
	fast *fasthttp.Server
	rt   *Router
}

// readBufferSize is each client connection's read buffer, and so the
// largest request head accepted (431 beyond it, as MaxHeaderBlock says);
// each line is held to MaxHeaderLine by the router itself.
const readBufferSize = MaxHeaderBlock

// NewServer returns the server that feeds rt.
func NewServer(rt *Router, o ServerOptions) *Server {
	admin := fasthttpadaptor.NewFastHTTPHandler(rt.admin)
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{rt: rt}
	s.fast = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if isRouterPath(ctx) {
				if requestBodyLength(&ctx.Request.Header) != 0 {
					// The adaptor reads a whole body into memory before the
					// token is checked; no endpoint of the router's takes
					// one, so none is read.
					ctx.Error("413 Content Too Large: the router's own endpoints take no request body", fasthttp.StatusRequestEntityTooLarge)
					ctx.SetConnectionClose()
					return
				}
				admin(ctx)
				return
			}
			rt.serve(ctx)
		},
		ReadTimeout:    o.RequestHeaderTimeout,
		IdleTimeout:    o.IdleTimeout,
		ReadBufferSize: readBufferSize,
		// Bodies stream both ways; their size is the app's to limit. In
		// streaming mode fasthttp reads min(MaxRequestBodySize, 8 KB) of a
		// body before the handler runs, and streams the rest whatever its
		// size: at 1 byte, a request reaches the app as soon as its body
		// begins, as it would through net/http.
		StreamRequestBody:  true,
		MaxRequestBodySize: 1,
		// Idle connections give their buffers back, so thousands of them
		// cost little more than their goroutines.
		ReduceMemoryUsage:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		// Responses during a shutdown close their connections.
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true,
		Logger:                fastLogger{logger},
	}
	return s
}

// isRouterPath reports whether a request is for the router's own paths,
// in any of the views an app might take of its target: fasthttp's cleaned
// path, the raw one, and the raw one as an app routes it (appRoute). So
// /_router/ is never proxied however it is spelled.
func isRouterPath(ctx *fasthttp.RequestCtx) bool {
	raw := rawPath(ctx)
	if isAdminPath(view(ctx.Path())) || isAdminPath(raw) {
		return true
	}
	var buf [128]byte
	if route := appRoute(raw, buf[:0]); len(route) > 0 && isAdminPath(view(route)) {
		return true
	}
	route := appRoute(view(ctx.Path()), buf[:0])
	return len(route) > 0 && isAdminPath(view(route))
}

// rawPath is the request target's path as the client sent it, before
// fasthttp cleaned it.
func rawPath(ctx *fasthttp.RequestCtx) string {
	uri := view(ctx.Request.Header.RequestURI())
	for i := 0; i < len(uri); i++ {
		if uri[i] == '?' {
			return uri[:i]
		}
	}
	return uri
}

// Serve serves connections from ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.fast.Serve(ln) }

// Shutdown stops accepting connections, closes upgraded ones, and waits,
// until ctx is done, for the requests in flight to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.rt.CloseTunnels()
	return s.fast.ShutdownWithContext(ctx)
}

// fastLogger sends fasthttp's messages (a client that broke its connection)
// to the router's logger at debug level.
type fastLogger struct{ l *slog.Logger }

func (f fastLogger) Printf(format string, args ...any) {
	if f.l.Enabled(context.Background(), slog.LevelDebug) {
		f.l.Debug("server", "msg", fmt.Sprintf(format, args...))
	}
}

// liveness checks whether a client is still there: one non-blocking peek
// at its socket. No data and no EOF means the client is waiting; data
// (a pipelined request) means it is there; EOF or an error means it left
// or half-closed its connection.
type liveness struct {
	buf   [1]byte
	alive bool
	peek  func(fd uintptr)
}

func (l *liveness) init() {
	l.peek = func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), l.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		l.alive = n > 0 || n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
	}
}

// check reports whether the client on c is still there. A connection whose
// socket cannot be reached is taken to be.
func (l *liveness) check(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	l.alive = true
	// Control, not Read: a read deadline set on the connection must not
	// fail the check.
	if err := raw.Control(l.peek); err != nil {
		return false
	}
	return l.alive
}

// LimitListener returns a listener that holds at most n connections open
// at once: beyond it, Accept waits, and new connections wait in the
// kernel's accept queue. Unlike x/net's, its connections expose their
// socket, which the router's client liveness check needs.
func LimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n)}
}

type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		<-l.slots
		return nil, fmt.Errorf("LimitListener serves TCP connections only, got %T", c)
	}
	return &limitedConn{TCPConn: tc, slots: l.slots}, nil
}

// limitedConn frees its slot when closed, once. It keeps *net.TCPConn's
// methods: SyscallConn for the liveness check, CloseWrite, ReadFrom.
type limitedConn struct {
	*net.TCPConn
	slots  chan struct{}
	closed sync.Once
}

// Close closes the connection gently when the client is still sending (a
// large upload the app answered early, with 413): the router's side is shut
// down, so the client reads the answer and an end, and what it still sends
// is read and dropped for a moment first. Closed at once with unread bytes,
// the kernel would reset the connection, and the client could lose the
// answer it has not read yet. net/http's server does the same.
func (c *limitedConn) Close() error {
	if unreadInput(c.TCPConn) {
		c.TCPConn.CloseWrite()
		c.TCPConn.SetReadDeadline(time.Now().Add(lingerDrain))
		io.Copy(io.Discard, c.TCPConn)
	}
	err := c.TCPConn.Close()
	c.closed.Do(func() { <-c.slots })
	return err
}

// lingerDrain bounds how long a closing connection reads what its client
// still sends.
const lingerDrain = 500 * time.Millisecond

// unreadInput reports whether bytes the client sent wait unread on c.
func unreadInput(c *net.TCPConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	has := false
	raw.Control(func(fd uintptr) {
		n, _, _ := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		has = n > 0
	})
	return has
}
