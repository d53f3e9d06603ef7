package http1

import (
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/splitapp/router/health"
)

// This file is the request body, on its way from the client to the app.

// writeBody sends the request body on c: kept bytes for a replay, or the
// client's stream, once. It returns the client's read error; an error
// writing is the connection's (Conn.writeErr).
func (p *Proxy) writeBody(s *Stream, c *Conn) error {
	w := c.bw
	if s.buffered {
		w.Write(s.body)
		return nil
	}
	n := s.BodyLength
	if n == 0 {
		return nil
	}
	stream := s.Ctx.RequestBodyStream()
	if stream == nil {
		w.Write(s.Ctx.Request.Body())
		return nil
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	left := int64(n)
	for first := true; ; first = false {
		p.extendBodyDeadline(s)
		m, err := stream.Read(buf)
		if n >= 0 {
			m = int(min(int64(m), left))
			left -= int64(m)
		}
		if m > 0 {
			if !first && !c.early && !c.socketQuiet() {
				// The app answers (or hangs up) before it has the whole
				// body. What it does not read would be taken for the next
				// request on the connection, so there will be none; the
				// body still goes, in case the answer is interim.
				c.early = true
			}
			if n == -1 {
				w.Write(strconv.AppendInt(s.num[:0], int64(m), 16))
				w.WriteString("\r\n")
			}
			w.Write(buf[:m])
			if n == -1 {
				w.WriteString("\r\n")
			}
			if c.writeErr != nil {
				return nil
			}
		}
		if n >= 0 && left == 0 {
			return nil
		}
		if err == io.EOF {
			if n == -1 {
				w.WriteString("0\r\n\r\n")
				return nil
			}
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
	}
}

// copyBuffers lends 32 KiB buffers for streaming request bodies, so a
// large upload costs one reused buffer, not fresh garbage per request.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// extendBodyDeadline keeps the client connection's read deadline
// CLIENT_BODY_TIMEOUT ahead while its request body is read, so a body that
// stops arriving ends the request (408) instead of holding a connection to
// the client and one to the app forever, as nginx's client_body_timeout
// does. Like extendSendDeadline it moves at most every sixteenth of the
// timeout.
func (p *Proxy) extendBodyDeadline(s *Stream) {
	d := p.clientBodyTimeout
	if d <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(s.bodyDeadlineAt) < d/16 {
		return
	}
	s.Ctx.Conn().SetReadDeadline(now.Add(d))
	s.bodyDeadlineAt = now
}

// BufferBody reads the request body, of at most MaxBufferedBody bytes,
// into memory, so that the request can be sent again. A body the client
// broke fails with class health.Client.
func (p *Proxy) BufferBody(s *Stream) *Error {
	if stream := s.Ctx.RequestBodyStream(); stream != nil {
		s.body = slices.Grow(s.body[:0], MaxBufferedBody)[:s.Ctx.Request.Header.ContentLength()]
		for read := 0; read < len(s.body); {
			p.extendBodyDeadline(s)
			n, err := stream.Read(s.body[read:])
			read += n
			if err == io.EOF && read < len(s.body) {
				err = io.ErrUnexpectedEOF
			}
			if err != nil && read < len(s.body) {
				return &Error{health.Client, &BodyError{err}}
			}
		}
	} else {
		s.body = append(s.body[:0], s.Ctx.Request.Body()...)
	}
	s.buffered = true
	return nil
}

// MaxBufferedBody is the largest request body BufferBody keeps.
const MaxBufferedBody = 64 << 10
