package router

import (
	"bytes"
	"net/http"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// isAdminPath reports whether a path is the router's own. Repeated slashes,
// dot segments and case hide /_router/ neither way: a path that starts with
// it, or that an app would clean into it, is never proxied.
func isAdminPath(p string) bool {
	if hasAdminPrefix(p) {
		return true
	}
	if strings.Contains(p, "/.") || strings.Contains(p, "\\") {
		return hasAdminPrefix(path.Clean(strings.ReplaceAll(p, "\\", "/")))
	}
	return false
}

func hasAdminPrefix(p string) bool {
	p = strings.TrimLeft(p, "/")
	const prefix = "_router"
	return len(p) >= len(prefix) && strings.EqualFold(p[:len(prefix)], prefix) &&
		(len(p) == len(prefix) || p[len(prefix)] == '/')
}

// Limits on request heads, like Heroku's router's.
const (
	// MaxHeaderLine is the longest request line or header line accepted.
	MaxHeaderLine = 8 << 10
	// MaxHeaderBlock is the largest request head accepted, for
	// http.Server.MaxHeaderBytes.
	MaxHeaderBlock = 64 << 10
)

// requestHead is what the router reads from a request's headers: views of
// their values, valid while the request is.
type requestHead struct {
	requestID, connection, upgrade, pinToken []byte
	forwardedFor, forwardedProto, start      []byte
	// connections holds every Connection header's tokens, joined, when
	// there is more than one: each names hop-by-hop headers (RFC 9110
	// §7.6.1). It is the head's own buffer, reused across requests.
	connections []byte
}

func (rh *requestHead) reset() {
	*rh = requestHead{connections: rh.connections[:0]}
}

// scanRequest reads the headers the router acts on, in one pass, and
// applies the rules fasthttp's server does not: a request line over 8 KB
// gets 414, a header line over 8 KB gets 431, and 400 goes to a * target
// with any method but OPTIONS, a header name with a space in it, and a
// Transfer-Encoding other than chunked.
func scanRequest(ctx *fasthttp.RequestCtx, rh *requestHead) (status int, desc string) {
	h := &ctx.Request.Header
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
		switch view(k) {
		case "X-Request-Id":
			field = &rh.requestID
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
			field = &rh.pinToken
		case "X-Forwarded-For":
			field = &rh.forwardedFor
		case "X-Forwarded-Proto":
			field = &rh.forwardedProto
		case "X-Request-Start":
			field = &rh.start
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
func (rh *requestHead) isUpgrade() bool {
	return len(rh.upgrade) > 0 && hasToken(rh.connection, "upgrade")
}

// requestBodyLength is a request's declared body length: its
// Content-Length, -1 for a chunked body, 0 for none (which fasthttp tells
// as -2).
func requestBodyLength(h *fasthttp.RequestHeader) int {
	if n := h.ContentLength(); n >= -1 {
		return n
	}
	return 0
}

// appRoute writes to dst the path an app would route from the raw request
// target, and returns it; empty when the raw path holds no ';' and no '%',
// so it can only differ from fasthttp's cleaned path in ways both read
// alike. fasthttp decodes every escape, %2F included, and keeps ';'
// parameters; apps differ on both. Tomcat and Spring drop a segment's
// ';' parameters before routing (/admin;x/users is /admin/users), and Rails
// keeps an escaped slash inside its segment (/auth/a%2Fb/callback has
// three segments). The router routes on both views, choosing the safer
// (Rules.routingPath): a view an app may take never escapes a path rule.
//
// Here parameters are dropped, escapes decoded except %2F and %5C (kept,
// upper-case, inside their segment), repeated slashes collapsed and dot
// segments resolved, as fasthttp does for its own view.
func appRoute(raw string, dst []byte) []byte {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if strings.IndexByte(raw, ';') < 0 && strings.IndexByte(raw, '%') < 0 {
		return dst[:0]
	}
	dst = append(dst[:0], '/')
	for _, seg := range strings.Split(raw, "/") {
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		start := len(dst)
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if c == '%' && i+2 < len(seg) && isHex(seg[i+1]) && isHex(seg[i+2]) {
				d := unhex(seg[i+1])<<4 | unhex(seg[i+2])
				i += 2
				if d == '/' || d == '\\' {
					dst = append(dst, '%', "0123456789ABCDEF"[d>>4], "0123456789ABCDEF"[d&15])
					continue
				}
				c = d
			}
			dst = append(dst, c)
		}
		switch string(dst[start:]) {
		case "", ".":
			dst = dst[:start]
		case "..":
			dst = dst[:start]
			if len(dst) > 1 {
				// Drop the previous segment and its slash.
				prev := bytes.LastIndexByte(dst[:len(dst)-1], '/')
				dst = dst[:prev+1]
			}
		default:
			dst = append(dst, '/')
		}
	}
	if len(dst) > 1 && !strings.HasSuffix(raw, "/") {
		dst = dst[:len(dst)-1]
	}
	return dst
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'f' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return (c | 0x20) - 'a' + 10
}
