package http1

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// ServerOptions configures the server for the proxied traffic.
type ServerOptions struct {
	// RequestHeaderTimeout bounds reading a request head: a client that
	// trickles headers (slowloris) is cut off.
	RequestHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle this long.
	IdleTimeout time.Duration
	// Logger receives the server's own messages, at debug level. If nil,
	// slog.Default().
	Logger *slog.Logger
	// OnShutdown, if set, runs as Shutdown begins: the router closes its
	// tunnels there, which carry no request a drain could wait for.
	OnShutdown func()
}

// Server serves the clients' connections with fasthttp's server: it parses
// requests into reused buffers and keeps each connection's state between
// requests, which is most of what net/http's server spends per request.
type Server struct {
	fast       *fasthttp.Server
	onShutdown func()
}

// NewServer returns a server that hands each request to handler.
func NewServer(handler fasthttp.RequestHandler, o ServerOptions) *Server {
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{onShutdown: o.OnShutdown}
	s.fast = &fasthttp.Server{
		Handler:     handler,
		ReadTimeout: o.RequestHeaderTimeout,
		IdleTimeout: o.IdleTimeout,
		// Each client connection's read buffer, and so the largest request
		// head accepted (431 beyond it); each line is held to
		// MaxHeaderLine by Proxy.Admit.
		ReadBufferSize: MaxHeaderBlock,
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

// Serve serves connections from ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.fast.Serve(ln) }

// Shutdown stops accepting connections, runs OnShutdown, and waits, until
// ctx is done, for the requests in flight to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.onShutdown != nil {
		s.onShutdown()
	}
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
	var p probe
	return p.lookAt(c) == socketData
}
