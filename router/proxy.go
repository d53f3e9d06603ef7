package router

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/splitapp/router/stats"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/health"
)

// This file is the send step: the request on its way to an upstream, and
// the upstream's response on its way back. It does what a reverse proxy
// does (hop-by-hop headers, X-Forwarded-*, Host) over fasthttp's request
// and response, so that nothing is copied into net/http's types.

// send makes one attempt on b. A failure is left in ex.failure; otherwise
// the response head is in the response, and its body either read with it
// or on its way through ex.relay.
func (rt *Router) send(ex *exchange, b *backend) {
	ex.attemptStart = ex.start
	if ex.backend != nil {
		ex.attemptStart = time.Now() // a retry or a replay
	}
	ex.backend = b
	b.up.Begin()
	pc, f := rt.transport.roundTrip(ex, b)
	if f == nil && b.up.Role == health.Replica {
		if replay := rt.replicaResponse(ex); replay != nil {
			// The answer is discarded unread, and its connection with it.
			pc.conn.Close()
			f = &failure{health.NoFailure, replay}
		}
	}
	if f != nil {
		b.up.End()
		ex.failure = f
		return
	}
	ex.begun = b
	resp := &ex.ctx.Response
	ex.status = resp.StatusCode()
	if ex.closeClient {
		resp.Header.SetConnectionClose()
	}
	ex.pin()
	if ex.status == http.StatusSwitchingProtocols {
		rt.upgrade(ex, pc)
		return
	}
	ex.relay.begin(pc, pc.bodyLength)
}

// responseBodyLength is how the response body is framed: its length, 0 for
// none, -1 for chunked, -2 for a body that ends when the connection does.
func responseBodyLength(ex *exchange, resp *fasthttp.Response) int {
	if code := resp.StatusCode(); ex.ctx.IsHead() || code == http.StatusNoContent || code == http.StatusNotModified {
		return 0
	}
	return resp.Header.ContentLength()
}

// Hop-by-hop and router-owned request headers: they are never forwarded
// as the client sent them (RFC 9110 §7.6.1).
func skipRequestHeader(k string) bool {
	switch k {
	case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Proxy-Connection",
		"Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade", "Expect",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id", PinTokenHeader:
		return true
	}
	return false
}

// writeHead writes the request head for b to w. The target and headers
// are the client's, less hop-by-hop headers, the pin cookie and the
// router's own headers; Host is b's unless PRESERVE_HOST. X-Forwarded-For
// is appended to; X-Forwarded-Proto and -Host are kept as the front router
// set them (they are the real client's), or set.
func (ex *exchange) writeHead(w *bufio.Writer, b *backend) {
	h := &ex.ctx.Request.Header
	w.Write(h.Method())
	w.WriteByte(' ')
	w.WriteString(b.prefix)
	target := h.RequestURI()
	if len(target) == 0 || target[0] != '/' && target[0] != '*' {
		target = ex.ctx.URI().RequestURI() // absolute-form: send origin-form
	}
	w.Write(target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	if ex.rt.preserveHost {
		w.Write(h.Host())
	} else {
		w.WriteString(b.key.host)
	}
	w.WriteString("\r\n")

	connection := ex.head.connection
	xff := ex.scratch[:0]
	var proto, fwdHost []byte
	for k, v := range h.All() {
		name := view(k)
		switch {
		case name == "X-Forwarded-For":
			if len(xff) > 0 {
				xff = append(xff, ", "...)
			}
			xff = append(xff, v...)
			continue
		case name == "X-Forwarded-Proto":
			proto = v
			continue
		case name == "X-Forwarded-Host":
			fwdHost = v
			continue
		case skipRequestHeader(name) || len(connection) > 0 && hasToken(connection, name):
			continue
		case name == "Cookie" && ex.pinCookie:
			ex.writeCookies(w, v)
			continue
		}
		writeField(w, k, v)
	}
	w.WriteString("X-Request-Id: ")
	w.WriteString(ex.requestID)
	w.WriteString("\r\nX-Forwarded-For: ")
	if len(xff) > 0 {
		xff = append(xff, ", "...)
	}
	xff = append(xff, ex.clientIP()...)
	w.Write(xff)
	ex.scratch = xff[:0]
	w.WriteString("\r\nX-Forwarded-Host: ")
	if fwdHost != nil {
		w.Write(fwdHost)
	} else {
		w.Write(h.Host())
	}
	w.WriteString("\r\nX-Forwarded-Proto: ")
	switch {
	case proto != nil:
		w.Write(proto)
	case ex.ctx.IsTLS():
		w.WriteString("https")
	default:
		w.WriteString("http")
	}
	w.WriteString("\r\n")
	if len(ex.head.start) == 0 {
		// Heroku's router sends X-Request-Start (passed on with the other
		// headers); without one, the router's own arrival time, as nginx
		// users set it, so that APM tools see queue time anywhere.
		w.WriteString("X-Request-Start: t=")
		w.Write(strconv.AppendInt(ex.num[:0], ex.start.UnixMicro(), 10))
		w.WriteString("\r\n")
	}
	switch n := requestBodyLength(h); {
	case n > 0 || n == 0 && (h.IsPost() || h.IsPut() || h.IsPatch()):
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(ex.num[:0], int64(n), 10))
		w.WriteString("\r\n")
	case n == -1:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if ex.decision.Reason == stats.ReasonUpgrade {
		w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		w.Write(ex.head.upgrade)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

func writeField(w *bufio.Writer, k, v []byte) {
	w.Write(k)
	w.WriteString(": ")
	w.Write(v)
	w.WriteString("\r\n")
}

// writeCookies writes the Cookie header without the pin cookie: the app
// never sees the router's cookie.
func (ex *exchange) writeCookies(w *bufio.Writer, line []byte) {
	name := ex.rt.pinner.Name()
	first := true
	for len(line) > 0 {
		var part []byte
		part, line, _ = bytes.Cut(line, []byte(";"))
		part = bytes.TrimSpace(part)
		k, _, _ := bytes.Cut(part, []byte("="))
		if len(part) == 0 || view(k) == name {
			continue
		}
		if first {
			w.WriteString("Cookie: ")
			first = false
		} else {
			w.WriteString("; ")
		}
		w.Write(part)
	}
	if !first {
		w.WriteString("\r\n")
	}
}

// hasToken reports whether a comma-separated header value lists token,
// case-insensitively.
func hasToken(list []byte, token string) bool {
	for len(list) > 0 {
		var t []byte
		t, list, _ = bytes.Cut(list, []byte(","))
		if t = bytes.TrimSpace(t); len(t) == len(token) && bytes.EqualFold(t, []byte(token)) {
			return true
		}
	}
	return false
}

// writeBody sends the request body to w: kept bytes for a replay, or the
// client's stream, once. It returns the client's read error; an error
// writing is the connection's (pconn.writeErr).
func (ex *exchange) writeBody(w *bufio.Writer, pc *pconn) error {
	if ex.buffered {
		w.Write(ex.body)
		return nil
	}
	h := &ex.ctx.Request.Header
	n := requestBodyLength(h)
	if n == 0 {
		return nil
	}
	stream := ex.ctx.RequestBodyStream()
	if stream == nil {
		w.Write(ex.ctx.Request.Body())
		return nil
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	left := int64(n)
	for first := true; ; first = false {
		ex.extendBodyDeadline()
		m, err := stream.Read(buf)
		if n >= 0 {
			m = int(min(int64(m), left))
			left -= int64(m)
		}
		if m > 0 {
			if !first && !pc.early && !pc.socketQuiet() {
				// The app answers (or hangs up) before it has the whole
				// body. What it does not read would be taken for the next
				// request on the connection, so there will be none; the
				// body still goes, in case the answer is interim.
				pc.early = true
			}
			if n == -1 {
				w.Write(strconv.AppendInt(ex.num[:0], int64(m), 16))
				w.WriteString("\r\n")
			}
			w.Write(buf[:m])
			if n == -1 {
				w.WriteString("\r\n")
			}
			if pc.writeErr != nil {
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

// extendBodyDeadline keeps the client connection's read deadline
// CLIENT_BODY_TIMEOUT ahead while its request body is read, so a body that
// stops arriving ends the request (408) instead of holding a connection to
// the client and one to the app forever, as nginx's client_body_timeout
// does. Like extendSendDeadline it moves at most every sixteenth of the
// timeout.
func (ex *exchange) extendBodyDeadline() {
	d := ex.rt.clientBodyTimeout
	if d <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(ex.bodyDeadlineAt) < d/16 {
		return
	}
	ex.ctx.Conn().SetReadDeadline(now.Add(d))
	ex.bodyDeadlineAt = now
}

// copyBuffers lends 32 KiB buffers for streaming request bodies, so a
// large upload costs one reused buffer, not fresh garbage per request.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// cleanResponse removes what must not reach the client from the response
// head the upstream sent: hop-by-hop headers (RFC 9110 §7.6.1) and the
// router's own, whose values it keeps in ex.answer. It looks at the head
// once and deletes only what is there, which for most responses is
// nothing. It returns whether the upstream will close its connection.
func (ex *exchange) cleanResponse(h *fasthttp.ResponseHeader, upgrade bool) (closing bool) {
	closing = h.ConnectionClose()
	h.ResetConnectionClose()
	a := &ex.answer
	a.reset()
	var found responseFields
	for k, v := range h.All() {
		switch view(k) {
		case "Connection":
			// Copied: the tokens name headers to delete, and deleting
			// moves the header's bytes.
			if found&fieldConnection != 0 {
				a.connection = append(a.connection, ',')
			}
			a.connection = append(a.connection, v...)
			found |= fieldConnection
		case "Keep-Alive":
			found |= fieldKeepAlive
		case "Proxy-Connection":
			found |= fieldProxyConnection
		case "Te":
			found |= fieldTE
		case "Upgrade":
			found |= fieldUpgrade
		case PinTokenHeader:
			found |= fieldPinToken
		case "X-Router-Pin":
			if found&fieldPin == 0 {
				a.pin = append(a.pin, v...)
			}
			found |= fieldPin
		case replayHeader:
			if found&fieldReplay == 0 {
				a.replay, a.replayPrimary = true, string(v) == "primary"
			}
			found |= fieldReplay
		}
	}
	if found == 0 {
		return closing
	}
	for tokens := a.connection; len(tokens) > 0; {
		var t []byte
		t, tokens, _ = bytes.Cut(tokens, []byte(","))
		t = bytes.TrimSpace(t)
		if len(t) == 0 || upgrade && bytes.EqualFold(t, []byte("upgrade")) || isFraming(t) {
			continue
		}
		h.DelBytes(t)
	}
	for _, f := range responseFieldNames {
		if found&f.field != 0 && !(upgrade && f.field&(fieldConnection|fieldUpgrade) != 0) {
			h.Del(f.name)
		}
	}
	if upgrade && found&fieldConnection != 0 {
		// What the switch needs, without the headers the app named.
		h.Set("Connection", "Upgrade")
	}
	return closing
}

// isFraming reports whether a header name is one that frames the body: a
// Connection header cannot make it hop-by-hop, and the router frames the
// body for the client itself.
func isFraming(name []byte) bool {
	return bytes.EqualFold(name, []byte("Content-Length")) || bytes.EqualFold(name, []byte("Transfer-Encoding"))
}

// responseFields is a set of the response headers cleanResponse acts on.
type responseFields uint8

const (
	fieldConnection responseFields = 1 << iota
	fieldKeepAlive
	fieldProxyConnection
	fieldTE
	fieldUpgrade
	fieldPinToken
	fieldPin
	fieldReplay
)

var responseFieldNames = [...]struct {
	field responseFields
	name  string
}{
	{fieldConnection, "Connection"}, {fieldKeepAlive, "Keep-Alive"}, {fieldProxyConnection, "Proxy-Connection"},
	{fieldTE, "Te"}, {fieldUpgrade, "Upgrade"}, {fieldPinToken, PinTokenHeader}, {fieldPin, "X-Router-Pin"},
	{fieldReplay, replayHeader},
}

// answerHead is what the router takes from a response head for itself:
// the app's requests to it (X-Router-Pin, X-Router-Replay), copied, as
// the headers are gone from the response.
type answerHead struct {
	connection    []byte
	pin           []byte
	replay        bool // X-Router-Replay was sent
	replayPrimary bool // its value was "primary"
}

func (a *answerHead) reset() {
	*a = answerHead{connection: a.connection[:0], pin: a.pin[:0]}
}

// relay is the response body on its way from the upstream to the client.
// A small body of known length is read with the head, so the connection
// goes back to the pool before the response is written; a larger one
// streams: fasthttp's server reads it as the response's body stream after
// the handler has returned, and closes it with the outcome, which is when
// the exchange is finished.
type relay struct {
	ex        *exchange
	pc        *pconn
	streaming bool
	// left is what remains of a body of known length, or of the current
	// chunk; length is the body's framing, as bodyLength says.
	left    int64
	length  int
	chunked chunkState
	// upErr is the upstream's error that cut the body short.
	upErr error
	eof   bool
	// panicked is set when reading the body panicked: the exchange is
	// abandoned, not finished.
	panicked bool
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

// errMalformedChunk is an upstream's chunked body that does not parse.
var errMalformedChunk = errors.New("malformed chunked response body")

func (r *relay) begin(pc *pconn, length int) {
	r.pc, r.length = pc, length
	resp := &r.ex.ctx.Response
	switch {
	case length == 0:
		r.release(true)
	case length > 0 && length <= smallBody:
		for left := length; left > 0; {
			err := r.await()
			if err == nil {
				p, _ := pc.br.Peek(min(left, pc.br.Buffered()))
				resp.AppendBody(p)
				pc.br.Discard(len(p))
				left -= len(p)
				continue
			}
			// The body broke off, or the client left, before the client got
			// any of it; the client's connection is cut all the same, so
			// that it sees an error, never a short body as whole.
			if !r.clientLeft {
				r.upErr = unexpected(err)
			}
			r.release(false)
			resp.ResetBody()
			r.ex.ctx.Conn().Close()
			return
		}
		r.ex.bytes = int64(length)
		r.release(true)
	default:
		r.streaming = true
		r.left = int64(length)
		resp.SetBodyStream(r, max(length, -1))
	}
}

// err is what cut the body short: the upstream's error, errClientGone, or
// nil.
func (r *relay) err() error {
	if r.clientLeft {
		return errClientGone
	}
	return r.upErr
}

// release returns the upstream connection to the pool when the body was
// read whole and the connection can carry another request; else closes it.
func (r *relay) release(whole bool) {
	if r.pc == nil {
		return
	}
	// Bytes after the end of the body are no answer to anything the router
	// asked (RFC 9112 §6.3): a connection with any is closed, never pooled
	// to be read as the next client's response.
	if whole && r.pc.reusable && r.pc.br.Buffered() == 0 {
		r.ex.rt.transport.put(r.pc)
	} else {
		r.pc.conn.Close()
	}
	r.pc = nil
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
			r.panicked = true
			r.ex.rt.logger.Error("panic relaying a response body; connection closed", "request_id", r.ex.requestID,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			r.ex.rt.onPanic()
			n, err = 0, errPanicked
		}
	}()
	if r.eof {
		return 0, io.EOF
	}
	injectPanic(r.ex.ctx, "body")
	if d := r.ex.rt.clientSendTimeout; d > 0 {
		r.ex.extendSendDeadline(d)
	}
	switch r.length {
	case -1:
		n, err = r.readChunked(p)
	case -2:
		n, err = r.read(p)
		if err == io.EOF {
			r.pc.reusable = false
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
	r.ex.bytes += int64(n)
	switch {
	case err == io.EOF:
		r.eof = true
	case err != nil && !r.clientLeft:
		r.upErr = err
	}
	return n, err
}

// read reads body bytes from the upstream. While the upstream sends
// nothing it looks at the client every clientCheckEvery: a client that has
// left ends the relay (errClientGone), so a stalled body cannot hold the
// app's connection after its client is gone. Bytes already buffered are
// read without a look.
func (r *relay) read(p []byte) (int, error) {
	for {
		if r.pc.br.Buffered() == 0 {
			r.pc.checkClientBy(time.Now())
		}
		n, err := r.pc.br.Read(p)
		if n > 0 || !isTimeout(err) {
			return n, err
		}
		if r.ex.clientGone() {
			r.clientLeft = true
			return 0, errClientGone
		}
	}
}

// await is read for what is read a line at a time (chunk sizes, trailer
// fields): it returns once a byte is buffered.
func (r *relay) await() error {
	for r.pc.br.Buffered() == 0 {
		r.pc.checkClientBy(time.Now())
		_, err := r.pc.br.Peek(1)
		if err == nil || !isTimeout(err) {
			return err
		}
		if r.ex.clientGone() {
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
	line, err := r.pc.br.ReadSlice('\n')
	if err != nil {
		return nil, unexpected(err)
	}
	return line, nil
}

// readChunked reads the upstream's chunked body, chunk by chunk, and at its
// end the trailer fields, which follow the body to the client.
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
			size, err := strconv.ParseUint(view(bytes.TrimSpace(line)), 16, 62)
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
	h := &r.ex.ctx.Response.Header
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
		if !ok || !isToken(k) || isRouterField(k) || isHopByHop(k) {
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

// isToken reports whether b is an HTTP token (RFC 9110 §5.6.2), as a field
// name must be.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tokenChars[c] {
			return false
		}
	}
	return true
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// isRouterField reports whether a field name is the router's own
// (X-Router-…), which an app's response may carry only as requests to the
// router, never to the client.
func isRouterField(name []byte) bool {
	const prefix = "x-router-"
	return len(name) >= len(prefix) && bytes.EqualFold(name[:len(prefix)], []byte(prefix))
}

// isHopByHop reports whether a field name is one RFC 9110 §7.6.1 keeps on
// one connection.
func isHopByHop(name []byte) bool {
	for _, h := range [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade", "Trailer"} {
		if bytes.EqualFold(name, []byte(h)) {
			return true
		}
	}
	return false
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// CloseWithError is called by fasthttp's server once the body is out, with
// the error that stopped it, if any: the upstream's (from Read) or the
// client's.
func (r *relay) CloseWithError(err error) error {
	r.ex.clearSendDeadline()
	if r.panicked {
		r.ex.rt.abandon(r.ex)
		return nil
	}
	r.release(r.eof && r.upErr == nil)
	r.ex.rt.finish(r.ex, err)
	return nil
}

// errPanicked ends a response body whose relay panicked.
var errPanicked = errors.New("the router panicked relaying the response body")

// extendSendDeadline keeps the client connection's write deadline d ahead,
// so a client that stops reading is cut off after d without progress. The
// deadline moves at most every d/16, which keeps the clock and the poller
// off the path of most writes.
func (ex *exchange) extendSendDeadline(d time.Duration) {
	now := time.Now()
	if now.Sub(ex.sendDeadlineAt) < d/16 {
		return
	}
	ex.ctx.Conn().SetWriteDeadline(now.Add(d))
	ex.sendDeadlineAt = now
}

// clearSendDeadline lifts the write deadline, so it cannot outlive the
// exchange on a kept-alive connection.
func (ex *exchange) clearSendDeadline() {
	if ex.sendDeadlineAt.IsZero() {
		return
	}
	ex.ctx.Conn().SetWriteDeadline(time.Time{})
	ex.sendDeadlineAt = time.Time{}
}
