package router

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/http1"
	"github.com/splitapp/router/internal/view"
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
	ex := &exchange{rt: rt}
	testProxy.Init(&ex.Stream, nil)
	testProxy.Admit(&ex.Stream, ctx)
	ex.method, ex.path = view.String(ctx.Method()), view.String(ctx.Path())
	return ex
}

// testProxy admits the requests of test exchanges.
var testProxy = http1.New(http1.Options{})

// serveRouter serves rt on a loopback listener until the test ends and
// returns its URL.
func serveRouter(tb testing.TB, rt *Router) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := http1.NewServer(rt.Handle, http1.ServerOptions{RequestHeaderTimeout: 2 * time.Second})
	done := make(chan struct{})
	go func() {
		srv.Serve(http1.LimitListener(ln, 1000))
		close(done)
	}()
	tb.Cleanup(func() {
		srv.Shutdown(context.Background())
		<-done
	})
	return "http://" + ln.Addr().String()
}

// serveRaw runs serve for each connection accepted on a loopback listener
// until the test ends, and returns the listener.
func serveRaw(tb testing.TB, serve func(net.Conn)) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// waitUntil polls cond until it holds, failing the test after 5 s.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("waited 5 s for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for the router's writes and the test's
// reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
