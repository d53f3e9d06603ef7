package router

import (
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
}

// scanRequest reads the headers the router acts on, in one pass, and
// applies the rules fasthttp's server does not: a request line over 8 KB
// gets 414, a header line over 8 KB gets 431, and a * target with any
// method but OPTIONS gets 400.
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
	for k, v := range h.All() {
		if len(k)+2+len(v) > MaxHeaderLine {
			return http.StatusRequestHeaderFieldsTooLarge, "header line longer than 8 KB"
		}
		var field *[]byte
		switch view(k) {
		case "X-Request-Id":
			field = &rh.requestID
		case "Connection":
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
