//go:build !routerpanic

package router

import "github.com/valyala/fasthttp"

// injectPanic is a no-op; the routerpanic build tag makes it panic on
// request, so an end-to-end test can see that a panic costs one request.
func injectPanic(*fasthttp.RequestCtx, string) {}
