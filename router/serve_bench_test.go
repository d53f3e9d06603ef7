package router

import (
	"bufio"
	"bytes"
	"github.com/splitapp/router/stats"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
)

// BenchmarkServe is the whole handler for an unpinned read, over a
// real pooled connection to a loopback app: decision, pin check, request
// rewrite, upstream round trip, response copy and the access log line.
// Its allocations are the router's own per-request cost, without the
// server's.
func BenchmarkServe(b *testing.B) {
	// A raw app that allocates nothing per request, so the count is the
	// router's: one fixed answer to each request head (bodiless GETs).
	ln := serveRaw(b, func(c net.Conn) {
		buf := make([]byte, 8<<10)
		answer := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		pending := 0
		for {
			n, err := c.Read(buf[pending:])
			if err != nil {
				return
			}
			pending += n
			if i := bytes.Index(buf[:pending], []byte("\r\n\r\n")); i >= 0 {
				pending = copy(buf, buf[i+4:pending])
				c.Write(answer)
			}
		}
	})
	u := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	primary := health.NewUpstream(u, health.Primary, 1, nil)
	replica := health.NewUpstream(u, health.Replica, 1, nil)
	pinner, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}})
	rt := New(Options{Primary: primary, Replicas: []*health.Upstream{replica}, Pinner: pinner, PinTTL: time.Second,
		UpstreamTimeout: 5 * time.Second, ConnectTimeout: time.Second, AccessLog: io.Discard})
	defer rt.Close()
	// The client's side of the connection is a pipe: the handler sets
	// deadlines on it, and nothing is written to it (fasthttp's server
	// writes the response, after the handler).
	client, _ := net.Pipe()
	defer client.Close()
	ctx := &fasthttp.RequestCtx{}
	ctx.Init2(client, nil, false)
	raw := "GET /items HTTP/1.1\r\nHost: x\r\nX-Request-Id: bench-request-id-0123456789\r\nCookie: session=abc\r\n\r\n"
	if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		rt.serve(ctx)
		if ctx.Response.StatusCode() != 200 || string(ctx.Response.Body()) != "ok" {
			b.Fatalf("response %d %q", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		ctx.Response.Reset()
	}
}

// BenchmarkAccessLogLine formats one access log line for a proxied read.
func BenchmarkAccessLogLine(b *testing.B) {
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:5000"}
	rt := New(Options{Primary: health.NewUpstream(u, health.Primary, 1, nil), AccessLog: io.Discard})
	ex := testExchange(b, rt, "GET /items?page=2 HTTP/1.1\r\nHost: example.com\r\nX-Request-Id: bench-request-id-0123456789\r\n\r\n")
	ex.identify()
	ex.backend, ex.status, ex.Bytes, ex.decision.Reason = rt.primary, 200, 5120, stats.ReasonRead
	b.ReportAllocs()
	for b.Loop() {
		rt.accessLog.write(ex, 12*time.Millisecond)
	}
}
