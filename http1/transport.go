package http1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// This file is the pool of connections to the apps: dialling, reuse, and
// the look at an idle connection before it carries a request.

// Target is an app the router sends requests to: its scheme and host, the
// path put before each request's, and, under it, the app's pool of idle
// connections. Pools are found by the target's address, so finding one
// hashes a pointer, not two strings.
type Target struct {
	scheme, host string
	// prefix is the URL's path, put before each request's path; empty for
	// a URL without one.
	prefix string
}

// NewTarget returns the target for an app's URL.
func NewTarget(u *url.URL) *Target {
	return &Target{scheme: u.Scheme, host: u.Host, prefix: strings.TrimSuffix(u.EscapedPath(), "/")}
}

// transport keeps the connections to the apps. Requests are sent on the
// caller's goroutine, and response heads read straight into the client's
// response: no goroutine hand-offs and no copies into other types.
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
	idle   map[*Target][]*Conn
	closed bool

	// afterIdleCheck is Options.AfterIdleCheck.
	afterIdleCheck func(*Conn)
}

// Conn is one connection to an app. It sits between the connection and
// its buffers, so it can count what was sent, keep the send deadline
// moving, and cap the response head.
type Conn struct {
	target    *Target
	conn      net.Conn
	raw       net.Conn // below TLS, for the look at the socket
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	// sendTimeout is the transport's, for the writes.
	sendTimeout time.Duration
	// reusable is set when the exchange on the connection left it ready
	// for another request.
	reusable bool
	// readDeadline is the connection's read deadline, as last set.
	readDeadline time.Time

	// sent counts the bytes of the current request the kernel accepted;
	// writeErr is the first error writing it. A failed write during the
	// body shows as a failed flush of the buffered writer, so the
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

	// rawConn and socket serve the look at the socket; made once per
	// connection, so a look allocates nothing.
	rawConn syscall.RawConn
	socket  probe

	// awaitHead makes the next write the whole of a bodiless request, to
	// be written and answered in one pass (writeAwait); checkFirst has
	// that pass look for bytes nobody asked for first, as a reused
	// connection needs. hw and headWaitFn are its state and callback.
	awaitHead  bool
	checkFirst bool
	hw         headWait
	headWaitFn func(fd uintptr) bool
	// afterCheck is the transport's afterIdleCheck for this connection,
	// when the look is part of the write.
	afterCheck func()
}

// Close closes the connection.
func (c *Conn) Close() error { return c.conn.Close() }

// LocalAddr is the router's end of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// Alive reports whether an idle connection is still open and quiet: the
// app may have closed it (its keep-alive timeout) while it sat in the
// pool, or sent bytes nobody asked for. One non-blocking look at the
// socket: no data and no end means alive. Over TLS, bytes already read off
// the socket wait in crypto/tls's buffer, where the look cannot see them,
// so the TLS layer is asked first.
func (c *Conn) Alive() bool {
	if c.br.Buffered() > 0 {
		return false // bytes nobody asked for: the stream is out of step
	}
	if tc, ok := c.conn.(*tls.Conn); ok && !tlsQuiet(tc, c) {
		return false
	}
	return c.socketQuiet()
}

// socketQuiet reports whether the socket under c holds no unread bytes and
// no end. A connection whose socket cannot be reached is taken to be
// quiet.
func (c *Conn) socketQuiet() bool {
	return c.rawConn == nil || c.socket.look(c.rawConn) == socketQuiet
}

// tlsQuiet reports whether crypto/tls holds nothing unread for tc: a read
// past its deadline returns at once, with a record already decrypted or
// read off the socket, or a timeout when there is none. A timeout leaves
// the connection usable (crypto/tls keeps no error for it), and
// post-handshake messages (session tickets) are consumed on the way.
func tlsQuiet(tc *tls.Conn, c *Conn) bool {
	c.readDeadline = longAgo
	tc.SetReadDeadline(longAgo)
	var b [1]byte
	n, err := tc.Read(b[:])
	return n == 0 && IsTimeout(err)
}

// longAgo is a deadline already past.
var longAgo = time.Unix(1, 0)

// conn returns a live idle connection to t, or a new one (always a new one
// with fresh set). Every idle connection is looked at before it is reused,
// however recently it was used: bytes an app sent after its answer (a
// second response, a body to a HEAD) would otherwise be read as the next
// request's answer, and handed to another client. For a bodiless request
// the look at the socket is part of writing it (writeAwait).
func (tr *transport) conn(t *Target, fresh, bodyless bool) (*Conn, bool, error) {
	for !fresh {
		c := tr.popIdle(t)
		if c == nil {
			break
		}
		// Over TLS, crypto/tls's own buffer is looked at first, which
		// takes no system call.
		looked := bodyless && c.canAwaitHead() && c.br.Buffered() == 0
		if tc, ok := c.conn.(*tls.Conn); ok && looked {
			looked = tlsQuiet(tc, c)
			if !looked {
				tr.dropStale(c)
				continue
			}
		}
		if time.Since(c.idleSince) < tr.idleTimeout && (looked || c.Alive()) {
			if tr.afterIdleCheck != nil {
				if looked {
					c.afterCheck = func() { tr.afterIdleCheck(c) }
				} else {
					tr.afterIdleCheck(c)
				}
			}
			return c, true, nil
		}
		tr.dropStale(c)
	}
	c, err := tr.dial(t)
	return c, false, err
}

// dropStale closes an idle connection the app has closed (or written on
// unasked), and every connection of its pool idle at least as long. Apps
// close idle connections by age, so after a quiet spell the whole pool is
// closed; found one by one, a request would look at each in turn (64
// after a burst) before dialing. The others are closed off the request's
// path, and without TLS's close_notify: the app is gone from them.
func (tr *transport) dropStale(c *Conn) {
	c.raw.Close()
	tr.mu.Lock()
	var stale []*Conn
	list := tr.idle[c.target]
	kept := list[:0]
	for _, o := range list {
		if o.idleSince.After(c.idleSince) {
			kept = append(kept, o)
		} else {
			stale = append(stale, o)
		}
	}
	clear(list[len(kept):])
	if tr.idle != nil {
		tr.idle[c.target] = kept
	}
	tr.mu.Unlock()
	if len(stale) > 0 {
		go func() {
			for _, o := range stale {
				o.raw.Close()
			}
		}()
	}
}

func (tr *transport) popIdle(t *Target) *Conn {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	list := tr.idle[t]
	if len(list) == 0 {
		return nil
	}
	c := list[len(list)-1]
	list[len(list)-1] = nil
	tr.idle[t] = list[:len(list)-1]
	return c
}

// put returns a connection to the pool, or closes it when the pool is full
// or closed. The pool is a stack: the most recently used connection is
// reused first, so the oldest ones sit at the bottom, where put also drops
// one that has been idle past idleTimeout.
func (tr *transport) put(c *Conn) {
	c.idleSince = time.Now()
	var expired *Conn
	tr.mu.Lock()
	if tr.closed || len(tr.idle[c.target]) >= tr.maxIdlePerHost {
		tr.mu.Unlock()
		c.conn.Close()
		return
	}
	if tr.idle == nil {
		tr.idle = map[*Target][]*Conn{}
	}
	list := tr.idle[c.target]
	if len(list) > 0 && c.idleSince.Sub(list[0].idleSince) > tr.idleTimeout {
		expired = list[0]
		list = append(list[:0], list[1:]...)
	}
	tr.idle[c.target] = append(list, c)
	tr.mu.Unlock()
	if expired != nil {
		expired.conn.Close()
	}
}

func (tr *transport) dial(t *Target) (*Conn, error) {
	addr := t.host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "80"
		if t.scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(addr, port)
	}
	raw, err := tr.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := raw
	var sock *awaitSocket
	if t.scheme == "https" {
		cfg := tr.tlsConfig.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		cfg.NextProtos = []string{"http/1.1"}
		sock = &awaitSocket{Conn: raw}
		tc := tls.Client(sock, cfg)
		hctx, cancel := context.WithTimeout(context.Background(), tr.tlsHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, err
		}
		conn = tc
	}
	c := newConn(t, conn, raw)
	c.sendTimeout = tr.sendTimeout
	if sock != nil {
		sock.c = c
	}
	return c, nil
}

func newConn(t *Target, conn, raw net.Conn) *Conn {
	c := &Conn{target: t, conn: conn, raw: raw, headBudget: -1}
	if sc, ok := raw.(syscall.Conn); ok {
		c.rawConn, _ = sc.SyscallConn()
	}
	c.headWaitFn = c.hw.step
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(c, 4<<10)
	return c
}

// closeIdle closes every pooled connection; later ones are not pooled.
func (tr *transport) closeIdle() {
	tr.mu.Lock()
	idle := tr.idle
	tr.idle, tr.closed = nil, true
	tr.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.conn.Close()
		}
	}
}

// Read feeds the response reader, within headBudget while a head is read.
func (c *Conn) Read(p []byte) (int, error) {
	if c.headBudget >= 0 {
		if c.headBudget == 0 {
			return 0, ErrResponseHeadTooLarge
		}
		p = p[:min(len(p), c.headBudget)]
	}
	n, err := c.conn.Read(p)
	if c.headBudget >= 0 {
		c.headBudget -= n
	}
	return n, err
}

// Write feeds the connection from the request writer. Each write gets a
// fresh send deadline, so UPSTREAM_SEND_TIMEOUT bounds a stall, not the
// whole upload.
func (c *Conn) Write(p []byte) (int, error) {
	var n int
	var err error
	switch {
	case c.awaitHead && c.conn == c.raw:
		n, err = c.writeAwait(p)
	default:
		// The first write of a request is its head, which fits in any
		// socket's send buffer: only the body's writes can stall, and
		// only they pay for moving the deadline. Over TLS, a head to
		// await is written by the socket under crypto/tls (awaitSocket).
		if c.sendTimeout > 0 && (c.sent > 0 || len(p) > minSendBuffer) {
			c.conn.SetWriteDeadline(time.Now().Add(c.sendTimeout))
		}
		n, err = c.conn.Write(p)
	}
	c.awaitHead = false
	c.sent += int64(n)
	if errors.Is(err, errNotQuiet) {
		return n, errNotQuiet
	}
	if err != nil && c.writeErr == nil {
		c.writeErr = err
	}
	return n, err
}

// minSendBuffer is less than any TCP socket's send buffer (Linux starts
// them at 16 KB): a write this small to a connection whose earlier requests
// were answered never waits for the app to read.
const minSendBuffer = 4 << 10

// checkClientBy sets the read deadline at which a wait for the app stops
// to look at the client: clientCheckEvery from now. A deadline left from
// before stays while it is at least half a period ahead: moving it costs
// more than looking at the client a little early.
func (c *Conn) checkClientBy(now time.Time) {
	if ahead := c.readDeadline.Sub(now); ahead >= clientCheckEvery/2 && ahead <= clientCheckEvery {
		return
	}
	c.setReadDeadline(now.Add(clientCheckEvery))
}

// setReadDeadline moves the connection's read deadline, unless it is there
// already.
func (c *Conn) setReadDeadline(t time.Time) {
	if !t.Equal(c.readDeadline) {
		c.conn.SetReadDeadline(t)
		c.readDeadline = t
	}
}
