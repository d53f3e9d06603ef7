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

	"github.com/splitapp/router/health"
)

// transport sends HTTP/1.1 requests to the upstreams on the caller's
// goroutine, over pooled keep-alive connections. net/http's Transport hands
// each request to a writer goroutine and each response back from a reader
// goroutine; on a proxy's hot path those hand-offs cost about a fifth of the
// CPU. Framing stays net/http's own: Request.Write and ReadResponse.
//
// Every error it returns is a *failure naming its health.Class, so the
// router decides what to retry and whom to blame from a type, never from
// error text. A request is written once, except that a reused connection
// found dead before any byte of the request reached it is replaced by a new
// one and the request sent there (as net/http does): nothing was sent.
type transport struct {
	dialer                *net.Dialer
	tlsConfig             *tls.Config
	tlsHandshakeTimeout   time.Duration
	responseHeaderTimeout time.Duration
	// sendTimeout bounds how long writing the request may make no progress
	// (an app that neither reads nor answers); zero: no bound.
	sendTimeout    time.Duration
	idleTimeout    time.Duration
	maxIdlePerHost int

	mu     sync.Mutex
	idle   map[connKey][]*pconn
	closed bool

	// afterPeek, if set, runs between the liveness check of an idle
	// connection and its reuse: tests close the connection there.
	afterPeek func(*pconn)
}

// connKey names a pool: one per upstream scheme and host. A struct, not a
// joined string, so finding the pool allocates nothing per request.
type connKey struct{ scheme, host string }

// pconn is one upstream connection. It sits between the connection and its
// buffers, so it can count what was sent, keep the send deadline moving,
// and cap the response head.
type pconn struct {
	key         connKey
	conn        net.Conn
	raw         net.Conn // below TLS, for the liveness check
	br          *bufio.Reader
	bw          *bufio.Writer
	idleSince   time.Time
	cancelled   atomic.Bool
	sendTimeout time.Duration

	// sent counts the bytes of the current request the kernel accepted;
	// writeErr is the first error writing it. Request.Write reports a
	// failed write during the body as an opaque body error, so the
	// connection's own error is kept here.
	sent     int64
	writeErr error
	// headBudget is how many more bytes may be read before the response
	// head is complete; negative: no limit (reading a body).
	headBudget int
	// body wraps the client's request body while it is being sent.
	body clientBody

	// rawConn and peek serve the liveness check; made once per
	// connection, so a check allocates nothing.
	rawConn   syscall.RawConn
	peek      func(fd uintptr) bool
	peekAlive bool
}

// MaxResponseHead caps an upstream's response head, interim 1xx heads
// included. Past it the answer is 502 and the connection is closed, so an
// app's runaway header cannot exhaust the router's memory.
const MaxResponseHead = 64 << 10

// errResponseHeadTooLarge is returned by the connection's reader when a
// response head outgrows MaxResponseHead.
var errResponseHeadTooLarge = errors.New("response head larger than 64 KB")

// Read feeds the response reader, within headBudget while a head is read.
func (pc *pconn) Read(p []byte) (int, error) {
	if pc.headBudget >= 0 {
		if pc.headBudget == 0 {
			return 0, errResponseHeadTooLarge
		}
		p = p[:min(len(p), pc.headBudget)]
	}
	n, err := pc.conn.Read(p)
	if pc.headBudget >= 0 {
		pc.headBudget -= n
	}
	return n, err
}

// Write feeds the connection from the request writer. Each write gets a
// fresh send deadline, so UPSTREAM_SEND_TIMEOUT bounds a stall, not the
// whole upload.
func (pc *pconn) Write(p []byte) (int, error) {
	if pc.sendTimeout > 0 {
		pc.setDeadline(pc.conn.SetWriteDeadline, time.Now().Add(pc.sendTimeout))
	}
	n, err := pc.conn.Write(p)
	pc.sent += int64(n)
	if err != nil && pc.writeErr == nil {
		pc.writeErr = err
	}
	return n, err
}

// setDeadline sets a deadline without undoing a cancellation: once the
// client has gone, every deadline stays in the past.
func (pc *pconn) setDeadline(set func(time.Time) error, t time.Time) {
	set(t)
	if pc.cancelled.Load() {
		pc.conn.SetDeadline(aLongTimeAgo)
	}
}

// clientBody is the client's request body on its way upstream. It records
// the client's own read errors, so a body the client broke is never taken
// for the app's failure, and it sends the request head before reading the
// first byte of the body: if a reused connection turns out dead, the body
// is still unread and the request can go on a new connection.
type clientBody struct {
	io.ReadCloser
	pc       *pconn
	started  bool
	err      error // the client's read error, if any
	flushErr error // the head could not be sent
}

func (b *clientBody) Read(p []byte) (int, error) {
	if !b.started {
		b.started = true
		if err := b.pc.bw.Flush(); err != nil {
			b.flushErr = err
			return 0, err
		}
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// aLongTimeAgo is a deadline that has passed: setting it interrupts any
// blocked read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	trace := httptrace.ContextClientTrace(ctx)
	key := connKey{req.URL.Scheme, req.URL.Host}
	for fresh := false; ; fresh = true {
		if trace != nil && trace.GetConn != nil {
			trace.GetConn(req.URL.Host)
		}
		pc, reused, err := t.conn(ctx, key, fresh)
		if err != nil {
			if ctx.Err() != nil {
				return nil, &failure{health.Client, ctx.Err()}
			}
			return nil, &failure{health.Connect, err}
		}
		if trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{Conn: pc.conn, Reused: reused})
		}
		resp, err := t.send(ctx, pc, reused, req, trace)
		if f, ok := err.(*failure); ok && f.class == health.StaleConn && !fresh {
			// Nothing reached the app: say so, and send on a new connection.
			if trace != nil && trace.WroteRequest != nil {
				trace.WroteRequest(httptrace.WroteRequestInfo{Err: f})
			}
			continue
		}
		return resp, err
	}
}

// send writes the request on pc and reads the response head.
func (t *transport) send(ctx context.Context, pc *pconn, reused bool, req *http.Request, trace *httptrace.ClientTrace) (*http.Response, error) {
	// The client leaving interrupts whatever this connection is doing.
	stop := context.AfterFunc(ctx, func() {
		pc.cancelled.Store(true)
		pc.conn.SetDeadline(aLongTimeAgo)
	})
	fail := func(class health.Class, err error) (*http.Response, error) {
		stop()
		pc.conn.Close()
		if pc.cancelled.Load() || ctx.Err() != nil {
			class, err = health.Client, context.Canceled
		}
		return nil, &failure{class, err}
	}

	pc.sent, pc.writeErr = 0, nil
	body := req.Body
	if body != nil && body != http.NoBody {
		pc.body = clientBody{ReadCloser: body, pc: pc}
		req.Body = &pc.body
	}
	werr := req.Write(pc.bw)
	if werr == nil {
		werr = pc.bw.Flush()
	}
	req.Body = body
	if pc.writeErr != nil {
		werr = pc.writeErr
	}
	bodyErr := pc.body.err
	pc.body = clientBody{}
	if bodyErr != nil {
		// The client's body failed: there is no request to answer, and
		// nothing to wait for.
		return fail(health.Client, &clientBodyError{bodyErr})
	}
	if werr != nil && reused && pc.sent == 0 {
		return fail(health.StaleConn, werr)
	}

	// UPSTREAM_TIMEOUT runs from the moment the whole request was sent, as
	// net/http's ResponseHeaderTimeout does: a slow upload is not a slow
	// app. An app may also have answered before reading everything (413 to
	// a large upload), so a failed write still looks for its answer.
	switch {
	case isTimeout(werr):
		// The app stopped reading for UPSTREAM_SEND_TIMEOUT. An answer it
		// gave first is already here; none will follow.
		pc.setDeadline(pc.conn.SetReadDeadline, time.Now().Add(earlyAnswerGrace))
	case t.responseHeaderTimeout > 0:
		pc.setDeadline(pc.conn.SetReadDeadline, time.Now().Add(t.responseHeaderTimeout))
	}
	pc.headBudget = MaxResponseHead
	resp, err := http.ReadResponse(pc.br, req)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		// Informational responses (103 Early Hints) go to the client,
		// through ReverseProxy's trace, before the final one.
		if trace != nil && trace.Got1xxResponse != nil {
			trace.Got1xxResponse(resp.StatusCode, map[string][]string(resp.Header))
		}
		resp, err = http.ReadResponse(pc.br, req)
	}
	pc.headBudget = -1
	if err != nil {
		return fail(classifyReadError(err, werr, reused && pc.sent == 0), err)
	}
	// The answer stands, the connection does not, when the request was not
	// sent whole.
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
	pooled := &pooledBody{ReadCloser: resp.Body, t: t, pc: pc, stop: stop, reusable: reusable}
	if resp.Body == http.NoBody {
		pooled.release(true)
		return resp, nil
	}
	resp.Body = pooled
	return resp, nil
}

// earlyAnswerGrace is how long a request whose send stalled waits for an
// answer the app may have sent before it stopped reading: such an answer is
// already in the socket buffer, so a moment is enough.
const earlyAnswerGrace = 100 * time.Millisecond

// classifyReadError names the failure behind a response head that could not
// be read. werr is the error writing the request, if any; unsent reports
// that a reused connection took none of the request's bytes.
func classifyReadError(err, werr error, unsent bool) health.Class {
	switch {
	case isTimeout(err) || isTimeout(werr):
		// No head in time, or the app stopped reading the request.
		return health.Timeout
	case unsent:
		return health.StaleConn
	case errors.Is(err, errResponseHeadTooLarge):
		return health.BadResponse
	case werr != nil || isConnectionError(err):
		return health.Reset
	}
	return health.BadResponse
}

// isConnectionError reports whether err is the connection ending or
// breaking, as opposed to bytes that do not parse as a response.
func isConnectionError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool {
	if err == nil {
		return false // before the target below, which escapes to the heap
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// clientBodyError is a failure to read the client's request body.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// malformed reports whether the client sent a body that does not parse
// (bad chunked framing), as opposed to one it stopped sending.
func (e *clientBodyError) malformed() bool {
	var ne net.Error
	return !errors.Is(e.err, io.ErrUnexpectedEOF) && !errors.Is(e.err, io.EOF) && !errors.As(e.err, &ne) &&
		!errors.Is(e.err, context.Canceled)
}

// conn returns a live idle connection to key, or a new one (always a new
// one with fresh set).
func (t *transport) conn(ctx context.Context, key connKey, fresh bool) (*pconn, bool, error) {
	for !fresh {
		pc := t.popIdle(key)
		if pc == nil {
			break
		}
		if time.Since(pc.idleSince) < t.idleTimeout && pc.alive() {
			if t.afterPeek != nil {
				t.afterPeek(pc)
			}
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
	pc := newPconn(key, conn, raw)
	pc.sendTimeout = t.sendTimeout
	return pc, nil
}

func newPconn(key connKey, conn, raw net.Conn) *pconn {
	pc := &pconn{key: key, conn: conn, raw: raw, headBudget: -1}
	if sc, ok := raw.(syscall.Conn); ok {
		pc.rawConn, _ = sc.SyscallConn()
	}
	var buf [1]byte
	pc.peek = func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		pc.peekAlive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait for readiness
	}
	pc.br = bufio.NewReaderSize(pc, 4<<10)
	pc.bw = bufio.NewWriterSize(pc, 4<<10)
	return pc
}

// alive reports whether an idle connection is still open: the upstream may
// have closed it (its keep-alive timeout) while it sat in the pool. One
// non-blocking peek at the socket: no data and no EOF means alive.
func (pc *pconn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false // bytes nobody asked for: the stream is out of step
	}
	if pc.rawConn == nil {
		return true
	}
	pc.peekAlive = false
	if err := pc.rawConn.Read(pc.peek); err != nil {
		return false
	}
	return pc.peekAlive
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
