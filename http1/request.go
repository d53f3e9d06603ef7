package http1

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/internal/view"
)

// This file is the request head, as the client sent it and as the app
// gets it. It does what a reverse proxy does (hop-by-hop headers,
// X-Forwarded-*, Host) over fasthttp's request, so that nothing is copied
// into net/http's types.

// The router's own headers, between it and the apps and clients.
const (
	// PinTokenHeader carries the pin for clients that keep no cookies:
	// the router sets it on every response that pins and honours it on
	// requests. An app never sees it, and its own is never passed on.
	PinTokenHeader = "X-Router-Pin-Token"
	// PinHeader is an app's request for a pin of its own length
	// ("X-Router-Pin: 30s"), or for none ("skip").
	PinHeader = "X-Router-Pin"
	// ReplayHeader is a read-only app handing a request it cannot serve (it
	// wrote) back to the router: "X-Router-Replay: primary".
	ReplayHeader = "X-Router-Replay"
)

// Limits on request heads, like Heroku's router's.
const (
	// MaxHeaderLine is the longest request line or header line accepted.
	MaxHeaderLine = 8 << 10
	// MaxHeaderBlock is the largest request head accepted: the size of
	// each client connection's read buffer (431 beyond it).
	MaxHeaderBlock = 64 << 10
)

// isHopByHop reports whether a header, by its canonical name, belongs to
// one connection and is never passed on as it came (RFC 9110 §7.6.1). This
// is the one list, httputil's hopHeaders; requests, responses and trailers
// all consult it.
func isHopByHop(name string) bool {
	switch name {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te",
		"Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// RequestHead is what the router reads from a request's headers: views of
// their values, valid while the request is.
type RequestHead struct {
	RequestID, PinToken, ForwardedFor, ForwardedProto, Start []byte
	connection, upgrade                                      []byte
	// connections holds every Connection header's tokens, joined, when
	// there is more than one: each names hop-by-hop headers (RFC 9110
	// §7.6.1). It is the head's own buffer, reused across requests.
	connections []byte
}

func (rh *RequestHead) reset() {
	*rh = RequestHead{connections: rh.connections[:0]}
}

// scan reads the headers the router acts on, in one pass, and applies the
// rules fasthttp's server does not: a request line over 8 KB gets 414, a
// header line over 8 KB gets 431, and 400 goes to a * target with any
// method but OPTIONS, a header name with a space in it, and a
// Transfer-Encoding other than chunked.
func (rh *RequestHead) scan(h *fasthttp.RequestHeader) (status int, desc string) {
	uri := h.RequestURI()
	if string(uri) == "*" && !h.IsOptions() {
		// Asterisk-form is only for a server-wide OPTIONS (RFC 9112 §3.2.4).
		return http.StatusBadRequest, "the * request target is only for OPTIONS"
	}
	if len(h.Method())+len(uri)+len(" HTTP/1.1") > MaxHeaderLine {
		return http.StatusRequestURITooLong, "request line longer than 8 KB"
	}
	if h.ContentLength() != -1 && unframedTransferEncoding(h.RawHeaders()) {
		// fasthttp drops "Transfer-Encoding: identity" and reads no body,
		// so what the client sent as one would become its next request.
		// Every reference server refuses it (RFC 9112 §6.1 knows only
		// chunked as the final coding of a request).
		return http.StatusBadRequest, "Transfer-Encoding other than chunked"
	}
	for k, v := range h.All() {
		if len(k)+2+len(v) > MaxHeaderLine {
			return http.StatusRequestHeaderFieldsTooLarge, "header line longer than 8 KB"
		}
		if bytes.IndexByte(k, ' ') >= 0 {
			// fasthttp's scanner lets a space inside a name through; an app
			// behind the router may read "Content Length: 5" as framing, or
			// refuse it and read on from the wrong place (RFC 9110 §5.1:
			// a field name is a token).
			return http.StatusBadRequest, "a header name contains a space"
		}
		var field *[]byte
		switch view.String(k) {
		case "X-Request-Id":
			field = &rh.RequestID
		case "Connection":
			// Every Connection header counts, not only the first: each
			// names headers that end at the router.
			if rh.connection != nil {
				if len(rh.connections) == 0 {
					rh.connections = append(rh.connections, rh.connection...)
				}
				rh.connections = append(append(rh.connections, ','), v...)
				rh.connection = rh.connections
				continue
			}
			field = &rh.connection
		case "Upgrade":
			field = &rh.upgrade
		case PinTokenHeader:
			field = &rh.PinToken
		case "X-Forwarded-For":
			field = &rh.ForwardedFor
		case "X-Forwarded-Proto":
			field = &rh.ForwardedProto
		case "X-Request-Start":
			field = &rh.Start
		default:
			continue
		}
		if *field == nil {
			*field = v // the first, as Peek would
		}
	}
	return 0, ""
}

// unframedTransferEncoding reports whether a raw request head carries a
// Transfer-Encoding header. It is asked only of requests fasthttp did not
// read as chunked, where any Transfer-Encoding is one fasthttp dropped.
// Only lines that start with the name's first letter are compared.
func unframedTransferEncoding(raw []byte) bool {
	const name = "transfer-encoding:"
	for len(raw) > len(name) {
		if raw[0]|0x20 == 't' && bytes.EqualFold(raw[:len(name)], []byte(name)) {
			return true
		}
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			return false
		}
		raw = raw[i+1:]
	}
	return false
}

// isUpgrade reports whether the request asks to switch protocols.
func (rh *RequestHead) isUpgrade() bool {
	return len(rh.upgrade) > 0 && hasToken(rh.connection, "upgrade")
}

// skipRequestHeader reports whether a request header is never forwarded as
// the client sent it: hop-by-hop, framed anew, or the router's to set.
func skipRequestHeader(k string) bool {
	switch k {
	case "Host", "Content-Length", "Expect", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
		"X-Request-Id", PinTokenHeader:
		return true
	}
	return isHopByHop(k)
}

// writeHead writes the request head for t to w. The target and headers are
// the client's, less hop-by-hop headers, the hidden cookie and the
// router's own headers; Host is t's unless PRESERVE_HOST.
func (s *Stream) writeHead(w *bufio.Writer, t *Target) {
	h := &s.Ctx.Request.Header
	w.Write(h.Method())
	w.WriteByte(' ')
	w.WriteString(t.prefix)
	target := h.RequestURI()
	if len(target) == 0 || target[0] != '/' && target[0] != '*' {
		target = s.Ctx.URI().RequestURI() // absolute-form: send origin-form
	}
	w.Write(target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	if s.proxy.preserveHost {
		w.Write(h.Host())
	} else {
		w.WriteString(t.host)
	}
	w.WriteString("\r\n")
	s.writeFields(w)
	if len(s.Head.Start) == 0 {
		// Heroku's router sends X-Request-Start (passed on with the other
		// headers); without one, the router's own arrival time, as nginx
		// users set it, so that APM tools see queue time anywhere.
		w.WriteString("X-Request-Start: t=")
		w.Write(strconv.AppendInt(s.num[:0], s.Start.UnixMicro(), 10))
		w.WriteString("\r\n")
	}
	switch n := s.BodyLength; {
	case n > 0 || n == 0 && (h.IsPost() || h.IsPut() || h.IsPatch()):
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(s.num[:0], int64(n), 10))
		w.WriteString("\r\n")
	case n == -1:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if s.ForwardUpgrade && s.Upgrading {
		w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		w.Write(s.Head.upgrade)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

// writeFields writes the client's header fields that go on, and the
// X-Request-Id and X-Forwarded-* the router sets. X-Forwarded-For is
// appended to; X-Forwarded-Proto and -Host are kept as the front router
// set them, or set: behind Heroku's router they are the real client's.
func (s *Stream) writeFields(w *bufio.Writer) {
	h := &s.Ctx.Request.Header
	connection := s.Head.connection
	xff := s.scratch[:0]
	var proto, fwdHost []byte
	for k, v := range h.All() {
		name := view.String(k)
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
		case name == "Cookie" && s.HiddenCookie != "":
			s.writeCookies(w, v)
			continue
		}
		writeField(w, k, v)
	}
	w.WriteString("X-Request-Id: ")
	w.WriteString(s.RequestID)
	w.WriteString("\r\nX-Forwarded-For: ")
	if len(xff) > 0 {
		xff = append(xff, ", "...)
	}
	xff = append(xff, s.ClientIP()...)
	w.Write(xff)
	s.scratch = xff[:0]
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
	case s.Ctx.IsTLS():
		w.WriteString("https")
	default:
		w.WriteString("http")
	}
	w.WriteString("\r\n")
}

func writeField(w *bufio.Writer, k, v []byte) {
	w.Write(k)
	w.WriteString(": ")
	w.Write(v)
	w.WriteString("\r\n")
}

// writeCookies writes the Cookie header without the hidden cookie.
func (s *Stream) writeCookies(w *bufio.Writer, line []byte) {
	first := true
	for len(line) > 0 {
		var part []byte
		part, line, _ = bytes.Cut(line, []byte(";"))
		part = bytes.TrimSpace(part)
		k, _, _ := bytes.Cut(part, []byte("="))
		if len(part) == 0 || view.String(k) == s.HiddenCookie {
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
