package http1

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/health"
)

// Error is an attempt that failed: its class, which says whether the
// request may be sent again and whom the failure counts against, and the
// error behind it. The router tells failures apart by the class, never by
// error text.
type Error struct {
	Class health.Class
	Err   error
}

func (e *Error) Error() string { return e.Class.String() + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

var (
	// ErrResponseHeadTooLarge is a response head over MaxResponseHead.
	ErrResponseHeadTooLarge = errors.New("response head larger than 64 KB")
	// errClientGone is the client leaving while the router waited for the
	// app.
	errClientGone = errors.New("client left before the response")
	// errBadStatus is a response whose status code is outside 100-599.
	errBadStatus = errors.New("response status code outside 100-599")
	// errUnaskedSwitch is a 101 to a request that did not ask to switch to
	// the protocol the app names.
	errUnaskedSwitch = errors.New("upstream switched protocols without being asked")
)

// BodyError is a failure to read the client's request body: there is no
// request to answer.
type BodyError struct{ err error }

func (e *BodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *BodyError) Unwrap() error { return e.err }

// Malformed reports whether the client sent a body that does not parse
// (bad chunked framing), as opposed to one it stopped sending.
func (e *BodyError) Malformed() bool {
	var ne net.Error
	return !errors.Is(e.err, io.ErrUnexpectedEOF) && !errors.Is(e.err, io.EOF) && !errors.As(e.err, &ne) &&
		!isConnectionError(e.err)
}

// Stalled reports whether the body stopped arriving for CLIENT_BODY_TIMEOUT.
func (e *BodyError) Stalled() bool { return IsTimeout(e.err) }

// clientCheckEvery is how often the router looks at a client's connection
// while it waits for an app's answer: a client that left is noticed within
// it, and its request's connection to the app closed.
const clientCheckEvery = 500 * time.Millisecond

// earlyAnswerGrace is how long a request whose send stalled waits for an
// answer the app may have sent before it stopped reading: such an answer is
// already in the socket buffer, so a moment is enough.
const earlyAnswerGrace = 100 * time.Millisecond

// RoundTrip sends s's request to t and reads the response head into the
// client's response, passing interim 1xx responses on to the client. It
// returns the connection, positioned at the response body, or the failure.
//
// A request is written once. A pooled connection found closed as the
// request was about to go is dropped for the next one: nothing was sent.
// A reused connection that fails having taken none of the request fails
// with class StaleConn; the caller may send again with fresh set, which
// dials a new connection.
func (p *Proxy) RoundTrip(s *Stream, t *Target, fresh bool) (*Conn, *Error) {
	// A bodiless request's connection is looked at as the request is
	// written (writeAwait), not before.
	bodyless := s.BodyLength == 0
	getConn := s.AttemptStart
	if fresh {
		getConn = time.Now()
	}
	for {
		c, reused, err := p.transport.conn(t, fresh, bodyless)
		if err != nil {
			return nil, &Error{health.Connect, err}
		}
		s.Connect = time.Since(getConn)
		if err := p.send(s, t, c, reused, bodyless); err != nil {
			if err.Err == errNotQuiet {
				// A pooled connection the app had closed, or written on:
				// the next one.
				p.transport.dropStale(c)
				continue
			}
			return nil, err
		}
		return c, nil
	}
}

// send writes the request on c, then reads the response head.
func (p *Proxy) send(s *Stream, t *Target, c *Conn, reused, bodyless bool) *Error {
	fail := func(class health.Class, err error) *Error {
		c.conn.Close()
		return &Error{class, err}
	}
	c.sent, c.writeErr, c.early = 0, nil, false
	s.writeHead(c.bw, t)
	if bodyless && c.sent == 0 && c.canAwaitHead() {
		// The whole request is in the buffer: the flush writes it and
		// waits for the answer in one pass.
		c.awaitHead, c.checkFirst = true, reused
		c.awaitDeadline(time.Now(), p.transport.responseHeaderTimeout)
	}
	// The head goes before the first byte of the body is read: if a reused
	// connection turns out dead, the body is still unread and the request
	// can go on a new connection.
	werr := c.bw.Flush()
	c.awaitHead = false
	if errors.Is(werr, errNotQuiet) {
		return fail(health.StaleConn, errNotQuiet)
	}
	if werr == nil {
		if bodyErr := p.writeBody(s, c); bodyErr != nil {
			// The client's body failed: there is no request to answer, and
			// nothing to wait for.
			return fail(health.Client, &BodyError{bodyErr})
		}
		werr = c.bw.Flush()
	}
	if c.writeErr != nil {
		werr = c.writeErr
	}
	if werr != nil && reused && c.sent == 0 {
		return fail(health.StaleConn, werr)
	}
	if err := p.readResponse(s, c, werr); err != nil {
		return fail(classifyReadError(err, werr, reused && c.sent == 0), err)
	}
	return nil
}

// classifyReadError names the failure behind a response head that could not
// be read. werr is the error writing the request, if any; unsent reports
// that a reused connection took none of the request's bytes.
func classifyReadError(err, werr error, unsent bool) health.Class {
	switch {
	case err == errClientGone:
		return health.Client
	case err == errUnaskedSwitch:
		return health.BadResponse
	case IsTimeout(err) || IsTimeout(werr):
		// No head in time, or the app stopped reading the request.
		return health.Timeout
	case unsent:
		return health.StaleConn
	case errors.Is(err, ErrResponseHeadTooLarge):
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

// IsTimeout reports whether err is a deadline passing.
func IsTimeout(err error) bool {
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
