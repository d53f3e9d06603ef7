package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// transport sends HTTP/1.1 requests to the upstreams on the caller's
// goroutine, over pooled keep-alive connections. net/http's Transport hands
// each request to a writer goroutine and each response back from a reader
// goroutine; on a proxy's hot path those hand-offs cost about a fifth of the
// CPU. Framing stays net/http's own: Request.Write and ReadResponse.
//
// Failure semantics match net/http's: a request is written once; an error
// after writing is returned, never retried here (the router decides what may
// be sent again); an idle connection the upstream closed is detected before
// reuse, so a write does not go down a dead connection.
type transport struct {
	dialer                *net.Dialer
	tlsConfig             *tls.Config
	tlsHandshakeTimeout   time.Duration
	responseHeaderTimeout time.Duration
	idleTimeout           time.Duration
	maxIdlePerHost        int

	mu     sync.Mutex
	idle   map[connKey][]*pconn
	closed bool
}

// connKey names a pool: one per upstream scheme and host. A struct, not a
// joined string, so finding the pool allocates nothing per request.
type connKey struct{ scheme, host string }

// pconn is one upstream connection.
type pconn struct {
	key       connKey
	conn      net.Conn
	raw       net.Conn // below TLS, for the liveness check
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	cancelled atomic.Bool
}

// aLongTimeAgo is a deadline that has passed: setting it interrupts any
// blocked read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	trace := httptrace.ContextClientTrace(ctx)
	key := connKey{req.URL.Scheme, req.URL.Host}
	if trace != nil && trace.GetConn != nil {
		trace.GetConn(req.URL.Host)
	}
	pc, reused, err := t.conn(ctx, key)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if trace != nil && trace.GotConn != nil {
		trace.GotConn(httptrace.GotConnInfo{Conn: pc.conn, Reused: reused})
	}
	// The client leaving interrupts whatever this connection is doing.
	stop := context.AfterFunc(ctx, func() {
		pc.cancelled.Store(true)
		pc.conn.SetDeadline(aLongTimeAgo)
	})
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}

	if t.responseHeaderTimeout > 0 {
		pc.conn.SetReadDeadline(time.Now().Add(t.responseHeaderTimeout))
	}
	werr := req.Write(pc.bw)
	if werr == nil {
		werr = pc.bw.Flush()
	}
	resp, err := http.ReadResponse(pc.br, req)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		// Informational responses (103 Early Hints) go to the client,
		// through ReverseProxy's trace, before the final one.
		if trace != nil && trace.Got1xxResponse != nil {
			trace.Got1xxResponse(resp.StatusCode, map[string][]string(resp.Header))
		}
		resp, err = http.ReadResponse(pc.br, req)
	}
	if err != nil {
		if werr != nil {
			err = werr
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && !pc.cancelled.Load() {
			err = errResponseHeaderTimeout
		}
		return fail(err)
	}
	// An upstream may answer before it has read the whole request (413 to
	// a large upload): the answer stands, the connection does not.
	reusable := werr == nil && !resp.Close && !req.Close
	pc.conn.SetReadDeadline(time.Time{})
	if pc.cancelled.Load() {
		pc.conn.SetDeadline(aLongTimeAgo)
	}

	if resp.StatusCode == http.StatusSwitchingProtocols {
		// ReverseProxy takes the connection over for the upgrade.
		resp.Body = upgradedConn{Reader: pc.br, Writer: pc.conn, conn: pc.conn, stop: stop}
		return resp, nil
	}
	body := &pooledBody{ReadCloser: resp.Body, t: t, pc: pc, stop: stop, reusable: reusable}
	if resp.Body == http.NoBody {
		body.release(true)
		return resp, nil
	}
	resp.Body = body
	return resp, nil
}

// errResponseHeaderTimeout is a timeout, as net/http's own is.
var errResponseHeaderTimeout error = timeoutError{"timeout awaiting response headers"}

type timeoutError struct{ s string }

func (e timeoutError) Error() string   { return e.s }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }

// conn returns a live idle connection to key, or a new one.
func (t *transport) conn(ctx context.Context, key connKey) (*pconn, bool, error) {
	for {
		pc := t.popIdle(key)
		if pc == nil {
			break
		}
		if time.Since(pc.idleSince) < t.idleTimeout && pc.alive() {
			return pc, true, nil
		}
		pc.conn.Close()
	}
	pc, err := t.dial(ctx, key)
	return pc, false, err
}

func (t *transport) popIdle(key connKey) *pconn {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.idle[key]
	if len(list) == 0 {
		return nil
	}
	pc := list[len(list)-1]
	list[len(list)-1] = nil
	t.idle[key] = list[:len(list)-1]
	return pc
}

// put returns a connection to the pool, or closes it when the pool is full
// or closed. The pool is a stack: the most recently used connection is
// reused first, so the oldest ones sit at the bottom, where put also drops
// one that has been idle past idleTimeout.
func (t *transport) put(pc *pconn) {
	pc.idleSince = time.Now()
	var expired *pconn
	t.mu.Lock()
	if t.closed || len(t.idle[pc.key]) >= t.maxIdlePerHost {
		t.mu.Unlock()
		pc.conn.Close()
		return
	}
	if t.idle == nil {
		t.idle = map[connKey][]*pconn{}
	}
	list := t.idle[pc.key]
	if len(list) > 0 && pc.idleSince.Sub(list[0].idleSince) > t.idleTimeout {
		expired = list[0]
		list = append(list[:0], list[1:]...)
	}
	t.idle[pc.key] = append(list, pc)
	t.mu.Unlock()
	if expired != nil {
		expired.conn.Close()
	}
}

func (t *transport) dial(ctx context.Context, key connKey) (*pconn, error) {
	addr := key.host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "80"
		if key.scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(addr, port)
	}
	raw, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := raw
	if key.scheme == "https" {
		cfg := t.tlsConfig.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, t.tlsHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, err
		}
		conn = tc
	}
	return &pconn{key: key, conn: conn, raw: raw, br: bufio.NewReaderSize(conn, 4<<10), bw: bufio.NewWriterSize(conn, 4<<10)}, nil
}

// alive reports whether an idle connection is still open: the upstream may
// have closed it (its keep-alive timeout) while it sat in the pool. One
// non-blocking peek at the socket: no data and no EOF means alive.
func (pc *pconn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false // bytes nobody asked for: the stream is out of step
	}
	sc, ok := pc.raw.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait for readiness
	})
	return alive
}

// CloseIdleConnections closes every pooled connection; later ones are not
// pooled.
func (t *transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closed = nil, true
	t.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.conn.Close()
		}
	}
}

// pooledBody returns its connection to the pool once the body has been read
// to the end, and closes it when the body is abandoned early.
type pooledBody struct {
	io.ReadCloser
	t        *transport
	pc       *pconn
	stop     func() bool
	reusable bool
	done     bool
}

func (b *pooledBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.release(true)
	}
	return n, err
}

func (b *pooledBody) Close() error {
	b.release(false)
	return nil
}

func (b *pooledBody) release(complete bool) {
	if b.done {
		return
	}
	b.done = true
	// stop is false once the cancellation has started: its deadline may
	// land at any moment, so the connection must not be pooled.
	if stopped := b.stop(); complete && b.reusable && stopped {
		b.t.put(b.pc)
		return
	}
	b.pc.conn.Close()
}

// upgradedConn is the body of a 101 response: the connection itself, read
// through the bytes already buffered.
type upgradedConn struct {
	io.Reader
	io.Writer
	conn net.Conn
	stop func() bool
}

func (u upgradedConn) Close() error {
	u.stop()
	return u.conn.Close()
}
