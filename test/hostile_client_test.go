package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Clients that break HTTP/1.1 or try to exhaust the router: each test
// drives the real binary over raw sockets.

// TestRouterPathsTakeNoBody: the router's own endpoints refuse a request
// body before reading it, whoever sends it: 200 MB at one, and three
// 150 MB chunked uploads at once, leave the router's memory small.
func TestRouterPathsTakeNoBody(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	env := baseEnv(primary)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)

	upload := func(head string, size int64, chunked bool) (status int, closed bool) {
		conn, err := net.Dial("tcp", "127.0.0.1:"+rt.Port)
		if err != nil {
			t.Error(err)
			return 0, false
		}
		defer conn.Close()
		io.WriteString(conn, head)
		go func() {
			// The body, as fast as the router takes it, until it stops.
			chunk := make([]byte, 256<<10)
			for sent := int64(0); sent < size; sent += int64(len(chunk)) {
				out := chunk
				if chunked {
					out = append(fmt.Appendf(nil, "%x\r\n", len(chunk)), append(chunk, "\r\n"...)...)
				}
				if _, err := conn.Write(out); err != nil {
					return
				}
			}
		}()
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("no answer to %q: %v", strings.SplitN(head, "\r\n", 2)[0], err)
			return 0, false
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Close
	}

	status, closed := upload("POST /_router/health HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n", 200<<20, false)
	if status != 413 || !closed {
		t.Errorf("200 MB POST to /_router/health: status %d, connection close %v; want 413 and close", status, closed)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			status, closed := upload("POST /_router/metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 150<<20, true)
			if status != 413 || !closed {
				t.Errorf("150 MB chunked POST to /_router/metrics: status %d, connection close %v; want 413 and close", status, closed)
			}
		})
	}
	wg.Wait()
	rss := peakRSSKB(t, rt.cmd.Process.Pid)
	t.Logf("router peak RSS after 650 MB sent to its own endpoints: %d MB", rss>>10)
	if rss > 100<<10 {
		t.Errorf("router peak RSS %d MB after bodies sent to its own endpoints, want under 100 MB", rss>>10)
	}
	// The endpoints still answer, without a body.
	if resp, _, _ := do(t, "GET", rt.URL+"/_router/health", nil, nil); resp.StatusCode != 200 {
		t.Errorf("GET /_router/health after the uploads: %d", resp.StatusCode)
	}
}

// TestStalledRequestBodyIs408: a request body that stops arriving ends
// after CLIENT_BODY_TIMEOUT with 408 and a closed connection; the app's
// connection is let go, and the failure is the client's.
func TestStalledRequestBodyIs408(t *testing.T) {
	t.Parallel()
	appGone := make(chan struct{}, 1)
	app := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.UserAgent() != "" && strings.HasPrefix(req.UserAgent(), "split-app-router") {
			io.WriteString(c, response("ok"))
			return
		}
		io.Copy(io.Discard, req.Body) // returns when the router gives up
		appGone <- struct{}{}
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h",
		"CLIENT_BODY_TIMEOUT": "1s"})
	id := newID(t)
	conn := rt.dial()
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nContent-Length: 1000\r\n\r\n0123456789", id)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 408 || !resp.Close {
		t.Errorf("stalled body: %d, close %v; want 408 and the connection closed", resp.StatusCode, resp.Close)
	}
	select {
	case <-appGone:
	case <-time.After(10 * time.Second):
		t.Error("the app's connection stayed open after the client's body stalled")
	}
	line := rt.logFor(id)
	if field(line, "status") != "408" || field(line, "code") != "client_timeout" || field(line, "failure") != "client" {
		t.Errorf("logged %q, want status=408 code=client_timeout failure=client", line)
	}
}

// TestAmbiguousRequestFramingIs400: a Transfer-Encoding other than chunked,
// and a header name with a space in it, are refused before anything
// reaches an app; what followed them is never read as a request.
func TestAmbiguousRequestFramingIs400(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	rt := startRouter(t, baseEnv(primary))
	for _, raw := range []string{
		"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /te HTTP/1.1\r\nHost: x\r\nTRANSFER-ENCODING: Identity\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /space HTTP/1.1\r\nHost: x\r\nContent Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		resps := rawExchange(t, rt.Port, raw)
		if len(resps) != 1 || resps[0].StatusCode != 400 || !resps[0].Close {
			var got []int
			for _, r := range resps {
				got = append(got, r.StatusCode)
			}
			t.Errorf("%q: answers %v, want one 400 that closes the connection", strings.SplitN(raw, "\r\n\r\n", 2)[0], got)
		}
	}
	if primary.count() != 0 || primary.sawPath("/smuggled") {
		t.Errorf("the app received %d requests, want none", primary.count())
	}
}

// TestEveryConnectionHeaderCounts: each Connection header names headers
// that end at the router, not only the first.
func TestEveryConnectionHeaderCounts(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	rt := startRouter(t, baseEnv(primary))
	id := newID(t)
	resps := rawExchange(t, rt.Port, "GET /items HTTP/1.1\r\nHost: x\r\nX-Request-Id: "+id+
		"\r\nConnection: keep-alive\r\nConnection: X-Secret\r\nX-Secret: s\r\nX-Kept: k\r\nConnection: close\r\n\r\n")
	if len(resps) != 1 || resps[0].StatusCode != 200 {
		t.Fatalf("answers %v", resps)
	}
	got := primary.received(id)
	if len(got) != 1 {
		t.Fatalf("the app received %d requests, want 1", len(got))
	}
	if got[0].Header.Get("X-Secret") != "" || got[0].Header.Get("X-Kept") != "k" {
		t.Errorf("the app received X-Secret %q and X-Kept %q; want none and k", got[0].Header.Get("X-Secret"), got[0].Header.Get("X-Kept"))
	}
}

// TestNoInterimResponsesForHTTP10: HTTP/1.0 has no 1xx responses (RFC 9110
// §15.2); an HTTP/1.0 client gets only the final one.
func TestNoInterimResponsesForHTTP10(t *testing.T) {
	t.Parallel()
	app := rawUpstream(t, func(c net.Conn) {
		answerEach(c, nil, func(_ int, req *http.Request) string {
			return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + response("final")
		})
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})
	conn := rt.dial()
	io.WriteString(conn, "GET /items HTTP/1.0\r\nHost: x\r\n\r\n")
	got := readAllRaw(t, conn)
	if strings.Contains(got, "103") || !strings.HasPrefix(got, "HTTP/1.1 200") || !strings.HasSuffix(got, "final") {
		t.Errorf("an HTTP/1.0 client read %q, want only the final 200", got)
	}
	// An HTTP/1.1 client still gets the hint first.
	conn = rt.dial()
	io.WriteString(conn, "GET /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if got := readAllRaw(t, conn); !strings.HasPrefix(got, "HTTP/1.1 103") {
		t.Errorf("an HTTP/1.1 client read %q, want the 103 first", got)
	}
}

// TestPathRulesSeeWhatAppsRoute: a path rule matches however an app would
// route the raw target: ';' parameters dropped (Tomcat, Spring), an escaped
// slash kept inside its segment (Rails). /_router/ is the router's in those
// spellings too.
func TestPathRulesSeeWhatAppsRoute(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	env := baseEnv(primary, replica)
	env["PRIMARY_PATHS"] = "/admin/,/auth/*/callback"
	env["READ_PATHS"] = "POST /search/*"
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	for _, tc := range []struct {
		method, target, upstream, reason string
	}{
		{"GET", "/admin;x/users", "primary", "path_rule"},
		{"GET", "/admin%3Bx/users", "primary", "path_rule"},
		{"GET", "/auth/google%2Fx/callback", "primary", "path_rule"},
		{"GET", "/auth/google/callback", "primary", "path_rule"},
		{"GET", "/items;jsessionid=1", "replica", "read"},
		{"POST", "/search/a%20b", "replica", "read"},  // one segment in both views
		{"POST", "/search/a%2Fb", "primary", "write"}, // two segments once decoded
		{"POST", "/search/a;b/c", "primary", "write"}, // two segments in one view
	} {
		status, servedBy := rawRequest(t, rt.Port, tc.method, tc.target)
		line := lastLogFor(t, rt, tc.target)
		if status >= 400 || servedBy != tc.upstream || field(line, "reason") != tc.reason {
			t.Errorf("%s %s: %d from %q, logged %q; want upstream=%s reason=%s", tc.method, tc.target, status, servedBy, line, tc.upstream, tc.reason)
		}
	}
	for _, target := range []string{"/_router;x/metrics", "/_router%3bx/metrics", "/x/..;/_router/metrics"} {
		status, _ := rawGet(t, rt.Port, target)
		if status != 401 && status != 404 {
			t.Errorf("GET %s: %d, want the router's own 401 or 404", target, status)
		}
	}
	for _, u := range []*upstream{primary, replica} {
		u.mu.Lock()
		for _, r := range u.requests {
			if strings.Contains(strings.ToLower(r.RequestURI), "_router") {
				t.Errorf("%s received %s", u.name, r.RequestURI)
			}
		}
		u.mu.Unlock()
	}
}

// lastLogFor returns the last access log line for a path.
func lastLogFor(t *testing.T, rt *routerProc, path string) string {
	t.Helper()
	var found string
	waitFor(t, "the log line for "+path, func() bool {
		for _, l := range rt.Lines() {
			if field(l, "path") == path {
				found = l
			}
		}
		return found != ""
	})
	return found
}
