package router

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
)

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the router, not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

// BenchmarkServeHTTP is the whole handler for an unpinned read, over a
// real pooled connection to a loopback app: decision, pin check, request
// rewrite, upstream round trip, response copy and the access log line.
// Its allocations are the router's own per-request cost, without the
// server's.
func BenchmarkServeHTTP(b *testing.B) {
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
	req := httptest.NewRequest("GET", "/items", nil)
	req.Header.Set("X-Request-Id", "bench-request-id-0123456789")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		rt.ServeHTTP(w, req)
	}
}
