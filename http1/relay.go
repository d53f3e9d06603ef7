package http1

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/splitapp/router/internal/view"
)

// relay is the response body on its way from the app to the client. A
// small body of known length is read with the head, so the connection
// goes back to the pool before the response is written; a larger one
// streams: fasthttp's server reads it as the response's body stream after
// the handler has returned, and closes it with the outcome, which is when
// the stream's done is told.
type relay struct {
	s         *Stream
	c         *Conn
	streaming bool
	// left is what remains of a body of known length, or of the current
	// chunk; length is the body's framing, as responseBodyLength says.
	left    int64
	length  int
	chunked chunkState
	// upErr is the app's error that cut the body short.
	upErr error
	eof   bool
	// panicked is the panic that stopped reading the body, if one did.
	panicked *PanicError
	// clientLeft is set when the relay stopped because the client left.
	clientLeft bool
}

type chunkState uint8

const (
	chunkSize chunkState = iota // at a chunk-size line
	chunkData                   // in a chunk's data
	chunkEnd                    // at the CRLF after a chunk's data
)

// smallBody is the largest body of known length read with the head.
const smallBody = 16 << 10

// errMalformedChunk is an app's chunked body that does not parse.
var errMalformedChunk = errors.New("malformed chunked response body")

// PanicError is a panic while relaying a body or tunnelling an upgraded
// connection, outside the handler: the router logs it with the request's
// id, and the client's connection is closed.
type PanicError struct {
	// Where is what was being done: "relaying a response body", or "in an
	// upgraded connection".
	Where string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return "panic " + e.Where + ": " + fmt.Sprint(e.Value) }

// errPanicked ends a response body whose relay panicked.
var errPanicked = errors.New("the router panicked relaying the response body")

func (r *relay) begin(c *Conn, length int) {
	r.c, r.length = c, length
	resp := &r.s.Ctx.Response
	switch {
	case length == 0:
		r.releaseConn(true)
	case length > 0 && length <= smallBody:
		for left := length; left > 0; {
			err := r.await()
			if err == nil {
				p, _ := c.br.Peek(min(left, c.br.Buffered()))
				resp.AppendBody(p)
				c.br.Discard(len(p))
				left -= len(p)
				continue
			}
			// The body broke off, or the client left, before the client got
			// any of it; the client's connection is cut all the same, so
			// that it sees an error, never a short body as whole.
			if !r.clientLeft {
				r.upErr = unexpected(err)
			}
			r.releaseConn(false)
			resp.ResetBody()
			r.s.Ctx.Conn().Close()
			return
		}
		r.s.Bytes = int64(length)
		r.releaseConn(true)
	default:
		r.streaming = true
		r.left = int64(length)
		resp.SetBodyStream(r, max(length, -1))
	}
}

// err is what cut the body short: the app's error, errClientGone, or nil.
func (r *relay) err() error {
	if r.clientLeft {
		return errClientGone
	}
	return r.upErr
}

// releaseConn returns the app's connection to the pool when the body was
// read whole and the connection can carry another request; else closes it.
func (r *relay) releaseConn(whole bool) {
	if r.c == nil {
		return
	}
	// Bytes after the end of the body are no answer to anything the router
	// asked (RFC 9112 §6.3): a connection with any is closed, never pooled
	// to be read as the next client's response.
	if whole && r.c.reusable && r.c.br.Buffered() == 0 {
		r.s.proxy.transport.put(r.c)
	} else {
		r.c.conn.Close()
	}
	r.c = nil
}

// Read implements io.Reader for fasthttp's server, which writes each read
// as it comes (a chunked body a chunk per read, flushed: server-sent events
// arrive as sent).
func (r *relay) Read(p []byte) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			// fasthttp's server reads the body after the handler returned,
			// outside its recover: the panic is handled here, and the error
			// closes the client's connection.
			r.panicked = &PanicError{Where: "relaying a response body", Value: v, Stack: debug.Stack()}
			n, err = 0, errPanicked
		}
	}()
	if r.eof {
		return 0, io.EOF
	}
	InjectPanic(r.s.Ctx, "body")
	if d := r.s.proxy.clientSendTimeout; d > 0 {
		r.s.extendSendDeadline(d)
	}
	switch r.length {
	case -1:
		n, err = r.readChunked(p)
	case -2:
		n, err = r.read(p)
		if err == io.EOF {
			r.c.reusable = false
		}
	default:
		if r.left == 0 {
			r.eof = true
			return 0, io.EOF
		}
		n, err = r.read(p[:min(int64(len(p)), r.left)])
		r.left -= int64(n)
		if r.left == 0 {
			err = nil
		} else if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	}
	r.s.Bytes += int64(n)
	switch {
	case err == io.EOF:
		r.eof = true
	case err != nil && !r.clientLeft:
		r.upErr = err
	}
	return n, err
}

// CloseWithError is called by fasthttp's server once the body is out, with
// the error that stopped it, if any: the app's (from Read) or the
// client's. The stream's done is told.
func (r *relay) CloseWithError(err error) error {
	r.s.clearSendDeadline()
	if r.panicked != nil {
		r.releaseConn(false)
		r.s.done(r.panicked)
		return nil
	}
	r.releaseConn(r.eof && r.upErr == nil)
	r.s.done(err)
	return nil
}

// read reads body bytes from the app. While the app sends nothing it
// looks at the client every clientCheckEvery: a client that has left ends
// the relay (errClientGone), so a stalled body cannot hold the app's
// connection after its client is gone. Bytes already buffered are read
// without a look.
func (r *relay) read(p []byte) (int, error) {
	for {
		if r.c.br.Buffered() == 0 {
			r.c.checkClientBy(time.Now())
		}
		n, err := r.c.br.Read(p)
		if n > 0 || !IsTimeout(err) {
			return n, err
		}
		if r.s.clientGone() {
			r.clientLeft = true
			return 0, errClientGone
		}
	}
}

// await is read for what is read a line at a time (chunk sizes, trailer
// fields): it returns once a byte is buffered.
func (r *relay) await() error {
	for r.c.br.Buffered() == 0 {
		r.c.checkClientBy(time.Now())
		_, err := r.c.br.Peek(1)
		if err == nil || !IsTimeout(err) {
			return err
		}
		if r.s.clientGone() {
			r.clientLeft = true
			return errClientGone
		}
	}
	return nil
}

// readLine reads one line of the chunked framing.
func (r *relay) readLine() ([]byte, error) {
	if err := r.await(); err != nil {
		return nil, unexpected(err)
	}
	line, err := r.c.br.ReadSlice('\n')
	if err != nil {
		return nil, unexpected(err)
	}
	return line, nil
}

// readChunked reads the app's chunked body, chunk by chunk, and at its end
// the trailer fields, which follow the body to the client.
func (r *relay) readChunked(p []byte) (int, error) {
	for {
		switch r.chunked {
		case chunkEnd:
			line, err := r.readLine()
			if err != nil {
				return 0, err
			}
			if len(bytes.TrimRight(line, "\r\n")) != 0 {
				return 0, errMalformedChunk
			}
			r.chunked = chunkSize
		case chunkSize:
			line, err := r.readLine()
			if err != nil {
				return 0, err
			}
			line, _, _ = bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
			size, err := strconv.ParseUint(view.String(bytes.TrimSpace(line)), 16, 62)
			if err != nil {
				return 0, errMalformedChunk
			}
			if size == 0 {
				return 0, r.readTrailer()
			}
			r.left, r.chunked = int64(size), chunkData
		case chunkData:
			n, err := r.read(p[:min(int64(len(p)), r.left)])
			r.left -= int64(n)
			if r.left == 0 {
				r.chunked = chunkEnd
			}
			if err != nil && r.left > 0 {
				return n, unexpected(err)
			}
			return n, nil
		}
	}
}

// readTrailer reads the trailer section after the last chunk into the
// response's trailers, and returns io.EOF at its end. The section is held
// to MaxResponseHead and maxTrailerFields, as a head is: fasthttp's trailer
// set grows in quadratic time, and an app must not make the router hold a
// core or its memory after the body. What must not reach the client is
// left out: the router's own fields and hop-by-hop ones, and names that
// are not tokens; CR and NUL in a value become spaces (RFC 9110 §5.5).
func (r *relay) readTrailer() error {
	h := &r.s.Ctx.Response.Header
	budget, fields := MaxResponseHead, 0
	for {
		line, err := r.readLine()
		if err != nil {
			return err
		}
		if budget -= len(line); budget < 0 {
			return errTrailerTooLarge
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return io.EOF
		}
		if fields++; fields > maxTrailerFields {
			return errTrailerTooLarge
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !isToken(k) || isRouterField(k) || isHopByHopField(k) {
			continue
		}
		v = bytes.TrimSpace(v)
		for i, c := range v {
			if c == 0 || c == '\r' {
				v[i] = ' '
			}
		}
		if h.AddTrailerBytes(k) == nil {
			h.SetBytesKV(k, v)
		}
	}
}

// maxTrailerFields caps the fields of a trailer section, as HAProxy caps a
// head's (tune.http.maxhdr, 101).
const maxTrailerFields = 100

// errTrailerTooLarge ends a response whose trailer section is over
// MaxResponseHead or maxTrailerFields.
var errTrailerTooLarge = errors.New("response trailer section larger than 64 KB or 100 fields")

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
