//go:build routerpanic

package http1

import "github.com/valyala/fasthttp"

// InjectPanic panics where a request's X-Router-Test-Panic header says:
// "serve" in the handler, "body" while relaying the response body. Only a
// binary built with the routerpanic tag has it, for the end-to-end test of
// panic recovery.
func InjectPanic(ctx *fasthttp.RequestCtx, where string) {
	if string(ctx.Request.Header.Peek("X-Router-Test-Panic")) == where {
		panic("injected panic (" + where + ")")
	}
}
