package http1

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// A bodiless request on a reused plain-TCP connection is written and its
// answer awaited in one pass over the socket, with one system call fewer
// than the usual write and read. The usual read right after a write finds
// nothing yet (the app has not had the time, and behind a network it
// never has), so it is a system call spent to learn to wait. Here the
// connection's read is entered first (net.RawConn's Read arms the poller
// for readability), then, inside it, the idle connection is looked at for
// bytes nobody asked for, the head written, and the goroutine parked until
// the answer begins. The look costs the system call the write saves: the
// check before every reuse is free.
//
// Heads that do not go in one write (the socket's buffer is full) are
// finished the usual way. Over TLS, the one record crypto/tls makes of the
// head is what the socket under it writes so (awaitSocket); crypto/tls's
// own buffer is looked at before (tlsQuiet).

// errNotQuiet is an idle connection found closed, or holding bytes nobody
// asked for, as its request was about to be written: nothing was sent, and
// the request goes on another connection.
var errNotQuiet = errors.New("idle connection closed by the upstream or out of step")

// canAwaitHead reports whether the connection's socket can be reached,
// which headWait needs.
func (c *Conn) canAwaitHead() bool { return c.rawConn != nil }

// awaitSocket is the socket under a TLS connection to an app: the record
// crypto/tls writes while the connection awaits a head is written and its
// answer awaited in one pass (writeAwait), as on plain TCP.
type awaitSocket struct {
	net.Conn
	c *Conn
}

func (s *awaitSocket) Write(p []byte) (int, error) {
	if s.c != nil && s.c.awaitHead {
		s.c.awaitHead = false
		return s.c.writeAwait(p)
	}
	return s.Conn.Write(p)
}

// writeAwait writes head, the whole of a bodiless request, and waits for
// the first byte of the answer until the connection's read deadline. It
// returns the bytes written; an error is the write's (errNotQuiet when the
// look before it failed). A deadline that passes while waiting is no
// error: the read that follows meets it.
func (c *Conn) writeAwait(head []byte) (int, error) {
	c.hw = headWait{head: head, check: c.checkFirst, afterCheck: c.afterCheck}
	c.rawConn.Read(c.headWaitFn)
	hw := &c.hw
	switch {
	case hw.notQuiet:
		return 0, errNotQuiet
	case hw.err != nil && hw.err != syscall.EAGAIN:
		return hw.written, hw.err
	}
	n := hw.written
	if n < len(head) {
		// The socket took only part: the rest the usual way, under the
		// send deadline.
		if c.sendTimeout > 0 {
			c.raw.SetWriteDeadline(time.Now().Add(c.sendTimeout))
		}
		m, err := c.raw.Write(head[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// headWait is writeAwait's state, kept on the connection so that the
// callback is made once per connection and a request allocates nothing.
type headWait struct {
	head     []byte
	check    bool // look for bytes nobody asked for first
	written  int
	err      error
	notQuiet bool
	waiting  bool
	// afterCheck, if set, runs between the look and the write: tests
	// close the connection there.
	afterCheck func()
}

// step is the callback net.RawConn's Read calls: first to write, then,
// once the poller says the socket is readable, to stop waiting.
func (hw *headWait) step(fd uintptr) bool {
	if hw.waiting {
		return true
	}
	if hw.check && peekSocket(fd) != socketQuiet {
		hw.notQuiet = true // data, or the end of the stream
		return true
	}
	if hw.afterCheck != nil {
		hw.afterCheck()
	}
	for hw.written < len(hw.head) {
		n, err := syscall.Write(int(fd), hw.head[hw.written:])
		if err == syscall.EINTR {
			continue
		}
		if n > 0 {
			hw.written += n
		}
		if err != nil {
			hw.err = err
			return true
		}
	}
	hw.waiting = true
	return false
}

// awaitDeadline sets the read deadline for writeAwait's wait: the first
// look at the client, or the answer's deadline if that comes sooner.
func (c *Conn) awaitDeadline(now time.Time, responseHeaderTimeout time.Duration) {
	if responseHeaderTimeout > 0 && responseHeaderTimeout < clientCheckEvery {
		c.setReadDeadline(now.Add(responseHeaderTimeout))
		return
	}
	c.checkClientBy(now)
}
