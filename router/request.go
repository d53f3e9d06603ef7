package router

import (
	"net/http"
	"path"
	"strings"
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

// checkRequest applies the rules net/http does not: a request line over 8 KB
// gets 414, a header line over 8 KB gets 431, and a * target with any
// method but OPTIONS gets 400.
func checkRequest(r *http.Request) (status int, desc string) {
	if r.RequestURI == "*" && r.Method != http.MethodOptions {
		// Asterisk-form is only for a server-wide OPTIONS (RFC 9112 §3.2.4).
		return http.StatusBadRequest, "the * request target is only for OPTIONS"
	}
	if len(r.Method)+len(r.RequestURI)+len(" HTTP/1.1") > MaxHeaderLine {
		return http.StatusRequestURITooLong, "request line longer than 8 KB"
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			if len(k)+2+len(v) > MaxHeaderLine {
				return http.StatusRequestHeaderFieldsTooLarge, "header line longer than 8 KB"
			}
		}
	}
	return 0, ""
}

// isUpgrade reports whether the request asks to switch protocols.
func isUpgrade(h http.Header) bool {
	if len(h["Upgrade"]) == 0 {
		return false
	}
	for _, v := range h["Connection"] {
		for v != "" {
			var token string
			token, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(token), "upgrade") {
				return true
			}
		}
	}
	return false
}
