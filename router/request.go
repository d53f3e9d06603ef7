package router

import (
	"bytes"
	"path"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/internal/view"
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

// isRouterPath reports whether a request is for the router's own paths,
// in any of the views an app might take of its target: fasthttp's cleaned
// path, the raw one, and the raw one as an app routes it (appRoute). So
// /_router/ is never proxied however it is spelled.
func isRouterPath(ctx *fasthttp.RequestCtx) bool {
	raw := rawPath(ctx)
	if isAdminPath(view.String(ctx.Path())) || isAdminPath(raw) {
		return true
	}
	var buf [128]byte
	if route := appRoute(raw, buf[:0]); len(route) > 0 && isAdminPath(view.String(route)) {
		return true
	}
	route := appRoute(view.String(ctx.Path()), buf[:0])
	return len(route) > 0 && isAdminPath(view.String(route))
}

// rawPath is the request target's path as the client sent it, before
// fasthttp cleaned it.
func rawPath(ctx *fasthttp.RequestCtx) string {
	uri := view.String(ctx.Request.Header.RequestURI())
	for i := 0; i < len(uri); i++ {
		if uri[i] == '?' {
			return uri[:i]
		}
	}
	return uri
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
