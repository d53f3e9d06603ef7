package router

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/http1"
	"github.com/splitapp/router/stats"
)

// TestStaleConnectionIsReplaced: an idle connection the app resets after
// the liveness check and before the request is written. Nothing was sent,
// so the request, a write with a body included, goes once on a new
// connection and succeeds; the log line names the stale connection.
func TestStaleConnectionIsReplaced(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	serverConns := map[string]net.Conn{}
	received := map[string]int{}
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		received[r.Method+" "+string(body)]++
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	app.Config.ConnState = func(c net.Conn, state http.ConnState) {
		if state == http.StateNew {
			mu.Lock()
			serverConns[c.RemoteAddr().String()] = c
			mu.Unlock()
		}
	}
	app.Start()
	defer app.Close()

	var log syncBuffer
	up := health.NewUpstream(&url.URL{Scheme: "http", Host: strings.TrimPrefix(app.URL, "http://")}, health.Primary, 1, nil)
	pinner, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}})
	rt := New(Options{Primary: up, Pinner: pinner, PinTTL: time.Second, UpstreamTimeout: 5 * time.Second,
		ConnectTimeout: time.Second, AccessLog: &log})
	resetOnReuse := false
	rt.proxy = http1.New(http1.Options{ConnectTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second,
		AfterIdleCheck: func(c *http1.Conn) {
			if !resetOnReuse {
				return
			}
			mu.Lock()
			sc := serverConns[c.LocalAddr().String()]
			mu.Unlock()
			sc.(*net.TCPConn).SetLinger(0) // close with a reset
			sc.Close()
			waitUntil(t, "the reset to reach the router's side", func() bool { return !c.Alive() })
		}})
	defer rt.Close()
	front := serveRouter(t, rt)
	// send makes one request and returns its status and the failure its
	// log line names, if any.
	send := func(method, body string) (int, string) {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, front+"/items", rd)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %q: %v", method, body, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lines := strings.Split(strings.TrimSpace(log.String()), "\n")
		return resp.StatusCode, stats.ParseLogfmt(lines[len(lines)-1])["failure"]
	}
	for _, tc := range []struct{ method, body string }{{"POST", "x=1"}, {"DELETE", ""}, {"POST", strings.Repeat("y", 20000)}} {
		resetOnReuse = false
		send("GET", "") // leaves an idle connection in the pool
		resetOnReuse = true
		status, failed := send(tc.method, tc.body)
		if status != 200 {
			t.Errorf("%s on a stale connection: %d, want 200", tc.method, status)
		}
		if failed != "stale_conn" {
			t.Errorf("%s: log names failure %q, want stale_conn", tc.method, failed)
		}
		mu.Lock()
		n := received[tc.method+" "+tc.body]
		mu.Unlock()
		if n != 1 {
			t.Errorf("%s reached the app %d times, want exactly 1", tc.method, n)
		}
	}
}
