package http1

import (
	"net"
	"syscall"
)

// socketState is what one look at a socket finds.
type socketState uint8

const (
	// socketQuiet: nothing to read, and the peer has not closed it.
	socketQuiet socketState = iota
	// socketData: bytes wait unread.
	socketData
	// socketClosed: the peer closed or half-closed it, or it failed.
	socketClosed
)

// peekSocket looks at a socket without reading from it or blocking: one
// non-blocking MSG_PEEK of a byte. It is the one look every check here
// takes: whether a client is still there, whether an idle connection to an
// app is still open and quiet, whether a client still sends.
func peekSocket(fd uintptr) socketState {
	var b [1]byte
	for {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n > 0:
			return socketData
		case err == syscall.EINTR:
			continue
		case n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK):
			return socketQuiet
		}
		return socketClosed
	}
}

// probe looks at a connection's socket through net.RawConn's Control,
// which a read deadline left on the connection cannot fail, as Read's
// would. Its callback is made once, so a look allocates nothing.
type probe struct {
	state socketState
	fn    func(fd uintptr)
}

// look returns what the socket under rc holds.
func (p *probe) look(rc syscall.RawConn) socketState {
	if p.fn == nil {
		p.fn = func(fd uintptr) { p.state = peekSocket(fd) }
	}
	p.state = socketClosed
	if err := rc.Control(p.fn); err != nil {
		return socketClosed
	}
	return p.state
}

// lookAt returns what c's socket holds. A connection whose socket cannot
// be reached is taken to be quiet.
func (p *probe) lookAt(c net.Conn) socketState {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return socketQuiet
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return socketClosed
	}
	return p.look(rc)
}
