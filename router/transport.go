package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/health"
)

// transport sends HTTP/1.1 requests to the upstreams on the caller's
// goroutine, over pooled keep-alive connections, and reads the response
// head straight into the client's response: no goroutine hand-offs and no
// copies into other types. fasthttp parses the head; the body's framing is
// the router's (relay).
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
	idle   map[*connKey][]*pconn
	closed bool

	// afterPeek, if set, runs between the liveness check of an idle
	// connection and its reuse (for writeAwait, between the look and the
	// write): tests close the connection there.
	afterPeek func(*pconn)
}

// connKey names a pool: one per upstream scheme and host. Pools are found
// by the key's address, each backend's own, so finding one hashes a pointer,
// not two strings.
type connKey struct{ scheme, host string }

// pconn is one upstream connection. It sits between the connection and its
// buffers, so it can count what was sent, keep the send deadline moving,
// and cap the response head.
type pconn struct {
	key         *connKey
	conn        net.Conn
	raw         net.Conn // below TLS, for the liveness check
	br          *bufio.Reader
	bw          *bufio.Writer
	idleSince   time.Time
	sendTimeout time.Duration
	// reusable is set when the exchange on the connection left it ready
	// for another request.
	reusable bool
	// readDeadline is the connection's read deadline, as last set.
	readDeadline time.Time

	// sent counts the bytes of the current request the kernel accepted;
	// writeErr is the first error writing it. Request.Write reports a
	// failed write during the body as an opaque body error, so the
	// connection's own error is kept here.
	sent     int64
	writeErr error
	// headBudget is how many more bytes may be read before the response
	// head is complete; negative: no limit (reading a body).
	headBudget int
	// early is set when the app's answer began before the request's body
	// had all been sent: whatever it did not read would be taken for the
	// next request, so the connection is not reused.
	early bool
	// bodyLength is the response body's framing, as responseBodyLength
	// says, read before the head is cleaned.
	bodyLength int

	// rawConn and peek serve the liveness check; made once per
	// connection, so a check allocates nothing.
	rawConn   syscall.RawConn
	peek      func(fd uintptr)
	peekAlive bool

	// awaitHead makes the next write the whole of a bodiless request, to
	// be written and answered in one pass (writeAwait); checkFirst has
	// that pass look for bytes nobody asked for first, as a reused
	// connection needs. hw and headWaitFn are its state and callback.
	awaitHead  bool
	checkFirst bool
	hw         headWait
	headWaitFn func(fd uintptr) bool
	// afterCheck is the transport's afterPeek for this connection, when
	// the look is part of the write.
	afterCheck func()
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
	var n int
	var err error
	switch {
	case pc.awaitHead && pc.conn == pc.raw:
		n, err = pc.writeAwait(p)
	default:
		// The first write of a request is its head, which fits in any
		// socket's send buffer: only the body's writes can stall, and
		// only they pay for moving the deadline. Over TLS, a head to
		// await is written by the socket under crypto/tls (awaitSocket).
		if pc.sendTimeout > 0 && (pc.sent > 0 || len(p) > minSendBuffer) {
			pc.conn.SetWriteDeadline(time.Now().Add(pc.sendTimeout))
		}
		n, err = pc.conn.Write(p)
	}
	pc.awaitHead = false
	pc.sent += int64(n)
	if errors.Is(err, errNotQuiet) {
		return n, errNotQuiet
	}
	if err != nil && pc.writeErr == nil {
		pc.writeErr = err
	}
	return n, err
}

// clientCheckEvery is how often the router looks at a client's connection
// while it waits for an app's answer: a client that left is noticed within
// it, and its request's connection to the app closed.
const clientCheckEvery = 500 * time.Millisecond

// errClientGone is the client leaving while the router waited for the app.
var errClientGone = errors.New("client left before the response")

// roundTrip sends ex's request to b and reads the response head into the
// client's response, passing interim 1xx responses on to the client. It
// returns the connection, positioned at the response body, or the
// failure, typed.
func (t *transport) roundTrip(ex *exchange, b *backend) (*pconn, *failure) {
	// A bodiless request's connection is looked at as the request is
	// written (writeAwait), not before.
	bodyless := requestBodyLength(&ex.ctx.Request.Header) == 0
	getConn := ex.attemptStart
	for fresh := false; ; {
		pc, reused, err := t.conn(&b.key, fresh, bodyless)
		if err != nil {
			return nil, &failure{health.Connect, err}
		}
		ex.connect = time.Since(getConn)
		f := t.send(ex, b, pc, reused, bodyless)
		switch {
		case f != nil && f.err == errNotQuiet:
			// A pooled connection the app had closed, or written on: the
			// next one.
			t.dropStale(pc)
			continue
		case f != nil && f.class == health.StaleConn && !fresh:
			// Nothing reached the app: say so, and send on a new connection.
			ex.failed = f.class
			ex.rt.recordFailure(b, f)
			fresh, getConn = true, time.Now()
			continue
		case f != nil:
			return nil, f
		}
		return pc, nil
	}
}

// send writes the request on pc and reads the response head.
func (t *transport) send(ex *exchange, b *backend, pc *pconn, reused, bodyless bool) *failure {
	fail := func(class health.Class, err error) *failure {
		pc.conn.Close()
		return &failure{class, err}
	}
	pc.sent, pc.writeErr, pc.early = 0, nil, false
	ex.writeHead(pc.bw, b)
	if bodyless && pc.sent == 0 && pc.canAwaitHead() {
		// The whole request is in the buffer: the flush writes it and
		// waits for the answer in one pass.
		pc.awaitHead, pc.checkFirst = true, reused
		pc.awaitDeadline(time.Now(), t.responseHeaderTimeout)
	}
	// The head goes before the first byte of the body is read: if a reused
	// connection turns out dead, the body is still unread and the request
	// can go on a new connection.
	werr := pc.bw.Flush()
	pc.awaitHead = false
	if errors.Is(werr, errNotQuiet) {
		return fail(health.StaleConn, errNotQuiet)
	}
	if werr == nil {
		if bodyErr := ex.writeBody(pc.bw, pc); bodyErr != nil {
			// The client's body failed: there is no request to answer, and
			// nothing to wait for.
			return fail(health.Client, &clientBodyError{bodyErr})
		}
		werr = pc.bw.Flush()
	}
	if pc.writeErr != nil {
		werr = pc.writeErr
	}
	if werr != nil && reused && pc.sent == 0 {
		return fail(health.StaleConn, werr)
	}

	// UPSTREAM_TIMEOUT runs from the moment the whole request was sent, as
	// net/http's ResponseHeaderTimeout does: a slow upload is not a slow
	// app. An app may also have answered before reading everything (413 to
	// a large upload), so a failed write still looks for its answer.
	var deadline time.Time
	sent := time.Now()
	switch {
	case isTimeout(werr):
		// The app stopped reading for UPSTREAM_SEND_TIMEOUT. An answer it
		// gave first is already here; none will follow.
		deadline = sent.Add(earlyAnswerGrace)
	case t.responseHeaderTimeout > 0:
		deadline = sent.Add(t.responseHeaderTimeout)
	}
	resp := &ex.ctx.Response
	pc.headBudget = MaxResponseHead
	err := t.readHead(ex, pc, deadline, sent)
	for err == nil {
		code := resp.StatusCode()
		if code < 100 || code > 599 {
			// fasthttp reads any three digits; a status outside 100-599
			// would reach the client as something else (000 as 200).
			err = errBadStatus
			break
		}
		if code >= 200 || code == http.StatusSwitchingProtocols {
			break
		}
		// Interim responses (103 Early Hints) go to the client before the
		// final one, unless it speaks HTTP/1.0, which has none (RFC 9110
		// §15.2); 100 Continue is the server's to send, and it has.
		if code != http.StatusContinue && ex.ctx.Request.Header.IsHTTP11() {
			ex.cleanResponse(&resp.Header, false)
			ex.ctx.Conn().Write(resp.Header.Header())
		}
		err = t.readHead(ex, pc, deadline, time.Now())
	}
	pc.headBudget = -1
	if err == errClientGone {
		return fail(health.Client, err)
	}
	if err != nil {
		return fail(classifyReadError(err, werr, reused && pc.sent == 0), err)
	}
	upgrade := resp.StatusCode() == http.StatusSwitchingProtocols
	if upgrade && !switchedAsAsked(ex, &resp.Header) {
		// A switch the client did not ask for would turn what it sends
		// next into raw bytes for the app, past every check (httputil's
		// handleUpgradeResponse refuses it too).
		return fail(health.BadResponse, errUnaskedSwitch)
	}
	// The framing is read before the Connection header's names are
	// deleted: an app's "Connection: Content-Length" must not unframe its
	// body.
	pc.bodyLength = responseBodyLength(ex, resp)
	http11 := resp.Header.IsHTTP11()
	if !http11 {
		// The client talks to the router, which speaks HTTP/1.1 whatever
		// the app does.
		resp.Header.SetProtocol(http11Proto)
	}
	closing := ex.cleanResponse(&resp.Header, upgrade)
	// The answer stands, the connection does not, when the request was not
	// sent whole or the answer came before it was. An HTTP/1.0 answer ends
	// its connection too: fasthttp ignores a Transfer-Encoding in one, and
	// the framing is then in doubt (RFC 9112 §6.1).
	pc.reusable = werr == nil && !pc.early && !closing && !upgrade && http11
	return nil
}

// errBadStatus is a response whose status code is outside 100-599.
var errBadStatus = errors.New("response status code outside 100-599")

// errUnaskedSwitch is a 101 to a request that did not ask to switch to the
// protocol the app names.
var errUnaskedSwitch = errors.New("upstream switched protocols without being asked")

// switchedAsAsked reports whether a 101 switches to a protocol the request
// asked for.
func switchedAsAsked(ex *exchange, h *fasthttp.ResponseHeader) bool {
	got := bytes.TrimSpace(h.Peek("Upgrade"))
	return ex.head.isUpgrade() && len(got) > 0 && hasToken(ex.head.upgrade, view(got))
}

var http11Proto = []byte("HTTP/1.1")

// The read deadline readHead sets is left in place for a body read with the
// head, and the next request's readHead sets its own; a body that streams
// lifts it first (relay.begin).

// readHead reads a response head into the client's response by the
// deadline (zero: none); now is the time it starts. While it waits for the
// first byte it looks at the client every clientCheckEvery, and gives up
// with errClientGone when the client has left.
func (t *transport) readHead(ex *exchange, pc *pconn, deadline, now time.Time) error {
	for ; ; now = time.Now() {
		if deadline.IsZero() || deadline.Sub(now) > clientCheckEvery {
			pc.checkClientBy(now)
		} else {
			pc.setReadDeadline(deadline)
		}
		_, err := pc.br.Peek(1)
		if err == nil {
			break
		}
		if !isTimeout(err) || !deadline.IsZero() && !time.Now().Before(deadline) {
			return err
		}
		if ex.clientGone() {
			return errClientGone
		}
	}
	zeroStatus := statusIsZero(pc.br)
	for {
		err := ex.ctx.Response.Header.Read(pc.br)
		switch {
		case err == nil && zeroStatus:
			return errBadStatus
		case err == nil:
			return nil
		case isSmallBuffer(err) && pc.br.Size() < MaxResponseHead:
			// A head larger than the connection's buffer: read on with
			// one that holds the largest allowed, what is buffered first.
			pc.br = bufio.NewReaderSize(pc.br, MaxResponseHead)
		case isTimeout(err) && (deadline.IsZero() || time.Now().Before(deadline)):
			// The head began before the check's deadline and goes on
			// after it: wait for the rest by the request's own deadline.
			pc.setReadDeadline(deadline)
		default:
			return err
		}
	}
}

// checkClientBy sets the read deadline at which a wait for the upstream
// stops to look at the client: clientCheckEvery from now. A deadline left
// from before stays while it is at least half a period ahead: moving it
// costs more than looking at the client a little early.
func (pc *pconn) checkClientBy(now time.Time) {
	if ahead := pc.readDeadline.Sub(now); ahead >= clientCheckEvery/2 && ahead <= clientCheckEvery {
		return
	}
	pc.setReadDeadline(now.Add(clientCheckEvery))
}

// statusIsZero reports whether the response head starting in br has the
// status 000, which fasthttp reads as 0 and reports as 200. Every valid
// status line is at least 12 bytes, which the peek waits for (a shorter
// answer fails to parse anyway); what is buffered beyond them is looked at
// too, for a line with several spaces.
func statusIsZero(br *bufio.Reader) bool {
	if _, err := br.Peek(12); err != nil {
		return false
	}
	b, _ := br.Peek(min(br.Buffered(), 32))
	_, code, ok := bytes.Cut(b, []byte(" "))
	code = bytes.TrimLeft(code, " ")
	return ok && len(code) >= 4 && string(code[:3]) == "000" && (code[3] == ' ' || code[3] == '\r' || code[3] == '\n')
}

// setReadDeadline moves the connection's read deadline, unless it is there
// already.
func (pc *pconn) setReadDeadline(t time.Time) {
	if !t.Equal(pc.readDeadline) {
		pc.conn.SetReadDeadline(t)
		pc.readDeadline = t
	}
}

// minSendBuffer is less than any TCP socket's send buffer (Linux starts
// them at 16 KB): a write this small to a connection whose earlier requests
// were answered never waits for the app to read.
const minSendBuffer = 4 << 10

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

// isSmallBuffer reports whether err is fasthttp's head that outgrew the
// read buffer.
func isSmallBuffer(err error) bool {
	var small *fasthttp.ErrSmallBuffer
	return errors.As(err, &small)
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
		!isConnectionError(e.err)
}

// conn returns a live idle connection to key, or a new one (always a new
// one with fresh set). Every idle connection is looked at before it is
// reused, however recently it was used: bytes an app sent after its answer
// (a second response, a body to a HEAD) would otherwise be read as the next
// request's answer, and handed to another client. For a bodyless request
// the look at the socket is part of writing it (writeAwait).
func (t *transport) conn(key *connKey, fresh, bodyless bool) (*pconn, bool, error) {
	for !fresh {
		pc := t.popIdle(key)
		if pc == nil {
			break
		}
		// A bodiless request looks at the socket as it is written
		// (writeAwait); any other, here. Over TLS, crypto/tls's own
		// buffer is looked at first, which takes no system call.
		looked := bodyless && pc.canAwaitHead() && pc.br.Buffered() == 0
		if tc, ok := pc.conn.(*tls.Conn); ok && looked {
			looked = tlsQuiet(tc, pc)
			if !looked {
				t.dropStale(pc)
				continue
			}
		}
		if time.Since(pc.idleSince) < t.idleTimeout && (looked || pc.alive()) {
			if t.afterPeek != nil {
				if looked {
					pc.afterCheck = func() { t.afterPeek(pc) }
				} else {
					t.afterPeek(pc)
				}
			}
			return pc, true, nil
		}
		t.dropStale(pc)
	}
	pc, err := t.dial(key)
	return pc, false, err
}

// dropStale closes an idle connection the app has closed (or written on
// unasked), and every connection of its pool idle at least as long. Apps
// close idle connections by age, so after a quiet spell the whole pool is
// closed; found one by one, a request would look at each in turn (64
// after a burst) before dialing. The others are closed off the request's
// path, and without TLS's close_notify: the app is gone from them.
func (t *transport) dropStale(pc *pconn) {
	pc.raw.Close()
	t.mu.Lock()
	var stale []*pconn
	list := t.idle[pc.key]
	kept := list[:0]
	for _, c := range list {
		if c.idleSince.After(pc.idleSince) {
			kept = append(kept, c)
		} else {
			stale = append(stale, c)
		}
	}
	clear(list[len(kept):])
	if t.idle != nil {
		t.idle[pc.key] = kept
	}
	t.mu.Unlock()
	if len(stale) > 0 {
		go func() {
			for _, c := range stale {
				c.raw.Close()
			}
		}()
	}
}

func (t *transport) popIdle(key *connKey) *pconn {
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
		t.idle = map[*connKey][]*pconn{}
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

func (t *transport) dial(key *connKey) (*pconn, error) {
	addr := key.host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "80"
		if key.scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(addr, port)
	}
	raw, err := t.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := raw
	var sock *awaitSocket
	if key.scheme == "https" {
		cfg := t.tlsConfig.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		cfg.NextProtos = []string{"http/1.1"}
		sock = &awaitSocket{Conn: raw}
		tc := tls.Client(sock, cfg)
		hctx, cancel := context.WithTimeout(context.Background(), t.tlsHandshakeTimeout)
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
	if sock != nil {
		sock.pc = pc
	}
	return pc, nil
}

func newPconn(key *connKey, conn, raw net.Conn) *pconn {
	pc := &pconn{key: key, conn: conn, raw: raw, headBudget: -1}
	if sc, ok := raw.(syscall.Conn); ok {
		pc.rawConn, _ = sc.SyscallConn()
	}
	var buf [1]byte
	pc.peek = func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		pc.peekAlive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
	}
	pc.headWaitFn = pc.hw.step
	pc.br = bufio.NewReaderSize(pc, 4<<10)
	pc.bw = bufio.NewWriterSize(pc, 4<<10)
	return pc
}

// alive reports whether an idle connection is still open and quiet: the
// upstream may have closed it (its keep-alive timeout) while it sat in the
// pool, or sent bytes nobody asked for. One non-blocking peek at the
// socket: no data and no EOF means alive. Over TLS, bytes already read off
// the socket wait in crypto/tls's buffer, where the peek cannot see them,
// so the TLS layer is asked first.
func (pc *pconn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false // bytes nobody asked for: the stream is out of step
	}
	if tc, ok := pc.conn.(*tls.Conn); ok && !tlsQuiet(tc, pc) {
		return false
	}
	return pc.socketQuiet()
}

// socketQuiet reports whether the socket under pc holds no unread bytes
// and no end: one non-blocking peek. A connection whose socket cannot be
// reached is taken to be quiet.
func (pc *pconn) socketQuiet() bool {
	if pc.rawConn == nil {
		return true
	}
	pc.peekAlive = false
	// Control, not Read: a read deadline left on the connection must not
	// fail the check.
	if err := pc.rawConn.Control(pc.peek); err != nil {
		return false
	}
	return pc.peekAlive
}

// tlsQuiet reports whether crypto/tls holds nothing unread for tc: a read
// past its deadline returns at once, with a record already decrypted or
// read off the socket, or a timeout when there is none. A timeout leaves
// the connection usable (crypto/tls keeps no error for it), and
// post-handshake messages (session tickets) are consumed on the way.
func tlsQuiet(tc *tls.Conn, pc *pconn) bool {
	pc.readDeadline = longAgo
	tc.SetReadDeadline(longAgo)
	var b [1]byte
	n, err := tc.Read(b[:])
	return n == 0 && isTimeout(err)
}

// longAgo is a deadline already past.
var longAgo = time.Unix(1, 0)

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
