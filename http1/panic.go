//go:build !routerpanic

package http1

import "github.com/valyala/fasthttp"

// InjectPanic is a no-op; the routerpanic build tag makes it panic on
// request, so an end-to-end test can see that a panic costs one request.
func InjectPanic(*fasthttp.RequestCtx, string) {}
