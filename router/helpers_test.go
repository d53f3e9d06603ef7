package router

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// testCtx returns a request context for a request parsed from raw, as the
// server parses it, from the client 192.0.2.1:5555.
func testCtx(tb testing.TB, raw string) *fasthttp.RequestCtx {
	tb.Helper()
	var req fasthttp.Request
	if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		tb.Fatalf("parsing %q: %v", raw, err)
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5555}, nil)
	return ctx
}

// testExchange returns an exchange for a request parsed from raw.
func testExchange(tb testing.TB, rt *Router, raw string) *exchange {
	ctx := testCtx(tb, raw)
	ex := &exchange{rt: rt, ctx: ctx, method: view(ctx.Method()), path: view(ctx.Path())}
	scanRequest(ctx, &ex.head)
	return ex
}

// serveRouter serves rt on a loopback listener until the test ends and
// returns its URL.
func serveRouter(tb testing.TB, rt *Router) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := NewServer(rt, ServerOptions{RequestHeaderTimeout: 2 * time.Second})
	done := make(chan struct{})
	go func() {
		srv.Serve(LimitListener(ln, 1000))
		close(done)
	}()
	tb.Cleanup(func() {
		srv.Shutdown(context.Background())
		<-done
	})
	return "http://" + ln.Addr().String()
}
