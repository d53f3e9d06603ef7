package http1

import (
	"bufio"
	"bytes"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/internal/view"
)

// This file is the response head, as the app sent it and as the client
// gets it: read into the client's response, interim ones passed on, and
// cleaned of what ends at the router.

// MaxResponseHead caps an app's response head, interim 1xx heads included,
// and its trailer section. Past it the answer is 502 and the connection is
// closed, so an app's runaway header cannot exhaust the router's memory.
const MaxResponseHead = 64 << 10

// readResponse reads the response head to the request just sent on c,
// passing interim ones to the client, and cleans it for the client. werr
// is the error writing the request, if any. UPSTREAM_TIMEOUT runs from now,
// once the whole request was sent, as net/http's ResponseHeaderTimeout
// does: a slow upload is not a slow app. An app may also have answered
// before reading everything (413 to a large upload), so a failed write
// still looks for its answer.
func (p *Proxy) readResponse(s *Stream, c *Conn, werr error) error {
	var deadline time.Time
	sent := time.Now()
	switch {
	case IsTimeout(werr):
		// The app stopped reading for UPSTREAM_SEND_TIMEOUT. An answer it
		// gave first is already here; none will follow.
		deadline = sent.Add(earlyAnswerGrace)
	case p.transport.responseHeaderTimeout > 0:
		deadline = sent.Add(p.transport.responseHeaderTimeout)
	}
	resp := &s.Ctx.Response
	c.headBudget = MaxResponseHead
	err := s.readHead(c, deadline, sent)
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
		if code != http.StatusContinue && s.Ctx.Request.Header.IsHTTP11() {
			s.cleanResponse(&resp.Header, false)
			s.Ctx.Conn().Write(resp.Header.Header())
		}
		err = s.readHead(c, deadline, time.Now())
	}
	c.headBudget = -1
	if err != nil {
		return err
	}
	upgrade := resp.StatusCode() == http.StatusSwitchingProtocols
	if upgrade && !s.switchedAsAsked(&resp.Header) {
		// A switch the client did not ask for would turn what it sends
		// next into raw bytes for the app, past every check (httputil's
		// handleUpgradeResponse refuses it too).
		return errUnaskedSwitch
	}
	// The framing is read before the Connection header's names are
	// deleted: an app's "Connection: Content-Length" must not unframe its
	// body.
	c.bodyLength = s.responseBodyLength(resp)
	http11 := resp.Header.IsHTTP11()
	if !http11 {
		// The client talks to the router, which speaks HTTP/1.1 whatever
		// the app does.
		resp.Header.SetProtocol(http11Proto)
	}
	closing := s.cleanResponse(&resp.Header, upgrade)
	// The answer stands, the connection does not, when the request was not
	// sent whole or the answer came before it was. An HTTP/1.0 answer ends
	// its connection too: fasthttp ignores a Transfer-Encoding in one, and
	// the framing is then in doubt (RFC 9112 §6.1).
	c.reusable = werr == nil && !c.early && !closing && !upgrade && http11
	return nil
}

var http11Proto = []byte("HTTP/1.1")

// switchedAsAsked reports whether a 101 switches to a protocol the request
// asked for.
func (s *Stream) switchedAsAsked(h *fasthttp.ResponseHeader) bool {
	got := bytes.TrimSpace(h.Peek("Upgrade"))
	return s.Upgrading && len(got) > 0 && hasToken(s.Head.upgrade, view.String(got))
}

// responseBodyLength is how the response body is framed: its length, 0 for
// none, -1 for chunked, -2 for a body that ends when the connection does.
func (s *Stream) responseBodyLength(resp *fasthttp.Response) int {
	if code := resp.StatusCode(); s.Ctx.IsHead() || code == http.StatusNoContent || code == http.StatusNotModified {
		return 0
	}
	return resp.Header.ContentLength()
}

// The read deadline readHead sets is left in place for a body read with the
// head, and the next request's readHead sets its own; a body that streams
// lifts it first (relay.begin).

// readHead reads a response head into the client's response by the
// deadline (zero: none); now is the time it starts. While it waits for the
// first byte it looks at the client every clientCheckEvery, and gives up
// with errClientGone when the client has left.
func (s *Stream) readHead(c *Conn, deadline, now time.Time) error {
	for ; ; now = time.Now() {
		if deadline.IsZero() || deadline.Sub(now) > clientCheckEvery {
			c.checkClientBy(now)
		} else {
			c.setReadDeadline(deadline)
		}
		_, err := c.br.Peek(1)
		if err == nil {
			break
		}
		if !IsTimeout(err) || !deadline.IsZero() && !time.Now().Before(deadline) {
			return err
		}
		if s.clientGone() {
			return errClientGone
		}
	}
	zeroStatus := statusIsZero(c.br)
	for {
		err := s.Ctx.Response.Header.Read(c.br)
		switch {
		case err == nil && zeroStatus:
			return errBadStatus
		case err == nil:
			return nil
		case isSmallBuffer(err) && c.br.Size() < MaxResponseHead:
			// A head larger than the connection's buffer: read on with
			// one that holds the largest allowed, what is buffered first.
			c.br = bufio.NewReaderSize(c.br, MaxResponseHead)
		case isSmallBuffer(err):
			// One head filled the largest buffer: it is over the cap, and
			// the answer says so, not that the head was malformed.
			return ErrResponseHeadTooLarge
		case IsTimeout(err) && (deadline.IsZero() || time.Now().Before(deadline)):
			// The head began before the check's deadline and goes on
			// after it: wait for the rest by the request's own deadline.
			c.setReadDeadline(deadline)
		default:
			return err
		}
	}
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

// isFraming reports whether a header name is one that frames the body: a
// Connection header cannot make it hop-by-hop, and the router frames each
// body (trailers included) for the client itself.
func isFraming(name []byte) bool {
	return bytes.EqualFold(name, []byte("Content-Length")) || bytes.EqualFold(name, []byte("Transfer-Encoding")) ||
		bytes.EqualFold(name, []byte("Trailer"))
}

// Directives is what an app's response head asks of the router: the
// router's headers, taken out of the response, so copied.
type Directives struct {
	// Pin is the value of X-Router-Pin, if sent.
	Pin []byte
	// Replay is set when X-Router-Replay was sent; ReplayPrimary when its
	// value was "primary".
	Replay, ReplayPrimary bool
	// drop lists the names of the fields to delete from the head, comma
	// separated: hop-by-hop ones, those the Connection header names, and
	// the router's.
	drop []byte
}

func (d *Directives) reset() {
	*d = Directives{Pin: d.Pin[:0], drop: d.drop[:0]}
}

// cleanResponse removes what must not reach the client from the response
// head an app sent: hop-by-hop headers and those its Connection header
// names (RFC 9110 §7.6.1), and the router's own, whose values it keeps in
// s.Directives. It looks at the head once and deletes only what is there,
// which for most responses is nothing. A 101 keeps what the switch needs.
// It returns whether the app will close its connection.
func (s *Stream) cleanResponse(h *fasthttp.ResponseHeader, upgrade bool) (closing bool) {
	closing = h.ConnectionClose()
	h.ResetConnectionClose()
	d := &s.Directives
	d.reset()
	pinSeen := false
	for k, v := range h.All() {
		name := view.String(k)
		switch {
		case name == "Connection":
			// Its tokens name headers to delete too. Copied: deleting
			// moves the header's bytes.
			d.drop = append(append(d.drop, ','), v...)
		case name == PinHeader:
			if !pinSeen {
				d.Pin, pinSeen = append(d.Pin, v...), true
			}
		case name == ReplayHeader:
			if !d.Replay {
				d.Replay, d.ReplayPrimary = true, string(v) == "primary"
			}
		case name == PinTokenHeader || isHopByHop(name):
		default:
			continue
		}
		d.drop = append(append(d.drop, ','), k...)
	}
	for tokens := d.drop; len(tokens) > 0; {
		var t []byte
		t, tokens, _ = bytes.Cut(tokens, []byte(","))
		t = bytes.TrimSpace(t)
		if len(t) == 0 || isFraming(t) ||
			upgrade && (bytes.EqualFold(t, []byte("upgrade")) || bytes.EqualFold(t, []byte("connection"))) {
			continue
		}
		h.DelBytes(t)
	}
	if upgrade && len(d.drop) > 0 {
		// What the switch needs, without the headers the app named.
		h.Set("Connection", "Upgrade")
	}
	return closing
}

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

// isHopByHopField is isHopByHop for a field name as it came, in any case.
func isHopByHopField(name []byte) bool {
	var canonical [24]byte
	if len(name) > len(canonical) {
		return false // longer than any hop-by-hop name
	}
	upper := true
	for i, c := range name {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		canonical[i] = c
		upper = c == '-'
	}
	return isHopByHop(string(canonical[:len(name)]))
}
