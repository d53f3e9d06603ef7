package router

import (
	"bytes"
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
	"github.com/splitapp/router/stats"
)

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

func pipePconn(t *testing.T) (*pconn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	t.Cleanup(func() { c.Close(); server.Close() })
	return newPconn(testKey, c, c), server
}

func TestAliveSeesTheUpstreamClose(t *testing.T) {
	t.Parallel()
	pc, server := pipePconn(t)
	if !pc.alive() {
		t.Fatal("an open idle connection is reported dead")
	}
	server.Write([]byte("HTTP/1.1 200 OK\r\n")) // bytes nobody asked for
	waitUntil(t, "a connection with unsolicited bytes to be reported dead", func() bool { return !pc.alive() })

	pc2, server2 := pipePconn(t)
	server2.Close()
	waitUntil(t, "a connection the upstream closed to be reported dead", func() bool { return !pc2.alive() })
}

// testKey is the pool of the test connections.
var testKey = &connKey{"http", "x"}

func TestPoolIsAStackThatDropsExpiredConnections(t *testing.T) {
	t.Parallel()
	tr := &transport{maxIdlePerHost: 2, idleTimeout: time.Minute}
	a, _ := pipePconn(t)
	b, _ := pipePconn(t)
	c, _ := pipePconn(t)
	tr.put(a)
	tr.put(b)
	tr.put(c) // over maxIdlePerHost: closed
	if got := tr.popIdle(testKey); got != b {
		t.Error("pop did not return the most recently pooled connection")
	}
	tr.put(b)
	tr.idle[testKey][0].idleSince = time.Now().Add(-2 * time.Minute) // a is stale
	d, _ := pipePconn(t)
	tr.popIdle(testKey) // b
	tr.put(d)
	if list := tr.idle[testKey]; len(list) != 1 || list[0] != d {
		t.Errorf("pool after a put = %d connections, want only the fresh one (the stale one dropped)", len(list))
	}
	tr.CloseIdleConnections()
	e, _ := pipePconn(t)
	tr.put(e)
	if tr.popIdle(testKey) != nil {
		t.Error("a closed transport pooled a connection")
	}
}

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
	defer rt.Close()
	front := serveRouter(t, rt)
	tr := rt.transport
	resetOnReuse := false
	tr.afterPeek = func(pc *pconn) {
		if !resetOnReuse {
			return
		}
		mu.Lock()
		sc := serverConns[pc.conn.LocalAddr().String()]
		mu.Unlock()
		sc.(*net.TCPConn).SetLinger(0) // close with a reset
		sc.Close()
		waitUntil(t, "the reset to reach the router's side", func() bool { return !pc.alive() })
	}
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
