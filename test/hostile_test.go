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

	"github.com/splitapp/router/health"
)

// Clients and apps that misbehave: each test drives the real binary over
// raw sockets where one side must break the rules.

// rawUpstream is an app that speaks raw bytes: serve runs for each
// connection it accepts.
func rawUpstream(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// readAllRaw reads what the router sends on conn until it closes it.
func readAllRaw(t *testing.T, conn net.Conn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil && !isConnReset(err) {
		t.Fatalf("reading the router's answer: %v", err)
	}
	return string(b)
}

func isConnReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// TestHalfClosedClientNeverGetsAnEmpty200: a client that sends its request
// and then a FIN, and a POST whose body is cut short, must not read as
// successes: the router either relays the app's real answer or cuts the
// connection.
func TestHalfClosedClientNeverGetsAnEmpty200(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	slow := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(300 * time.Millisecond):
		}
		io.WriteString(w, "the real answer")
	}
	primary.handle(slow)
	replica.handle(slow)
	rt := startRouter(t, baseEnv(primary, replica))
	for _, tc := range []struct{ name, raw string }{
		{"GET then FIN", "GET /items HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n\r\n"},
		{"POST cut short", "POST /items HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nContent-Length: 100\r\n\r\nonly ten b"},
	} {
		id := newID(t)
		conn := rt.dial()
		fmt.Fprintf(conn, tc.raw, id)
		conn.(*net.TCPConn).CloseWrite()
		got := readAllRaw(t, conn)
		conn.Close()
		if got != "" && !strings.Contains(got, "the real answer") {
			t.Errorf("%s: the client read %q, want the app's answer or nothing", tc.name, got)
		}
		line := rt.logFor(id)
		if got == "" && (field(line, "status") != "499" || field(line, "code") != "client_gone") {
			t.Errorf("%s: connection cut but logged %q, want status=499 code=client_gone", tc.name, line)
		}
		t.Logf("%s: client read %d bytes; logged status=%s", tc.name, len(got), field(line, "status"))
	}
}

// TestHugeResponseHeadIs502: an app's response head is capped at 64 KB.
// Three 100 MB header lines at once leave the router's memory small.
func TestHugeResponseHeadIs502(t *testing.T) {
	t.Parallel()
	app := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Huge: ")
		chunk := []byte(strings.Repeat("a", 64<<10))
		for range 100 << 20 / len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return // the router hung up, as it should
			}
		}
		io.WriteString(c, "\r\n\r\n")
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret})
	var wg sync.WaitGroup
	ids := make([]string, 3)
	for i := range ids {
		ids[i] = newID(t)
		wg.Go(func() {
			resp, body, _ := do(t, "GET", rt.URL+"/huge", nil, http.Header{"X-Request-Id": {ids[i]}})
			if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "aaaa") {
				t.Errorf("a 100 MB response head: %d %q, want 502 and none of it", resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		if line := rt.logFor(id); field(line, "code") != "upstream_bad_response" || field(line, "failure") != "bad_response" {
			t.Errorf("log line %q, want code=upstream_bad_response failure=bad_response", line)
		}
	}
	rss := peakRSSKB(t, rt.cmd.Process.Pid)
	t.Logf("router peak RSS after three 100 MB heads: %d KB", rss)
	if rss > 100<<10 {
		t.Errorf("router peak RSS %d KB, want under 100 MB", rss)
	}
}

// TestHTTP10WithTransferEncodingClosesTheConnection: RFC 9112 §6.1. A
// request pipelined behind an HTTP/1.0 request that carried
// Transfer-Encoding never reaches an app.
func TestHTTP10WithTransferEncodingClosesTheConnection(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	rt := startRouter(t, baseEnv(primary, replica))
	resps := rawExchange(t, rt.Port, "POST /first HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"+
		"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	if len(resps) != 1 {
		t.Errorf("got %d responses, want one and the connection closed", len(resps))
	}
	for _, u := range []*upstream{primary, replica} {
		if u.sawPath("/smuggled") {
			t.Errorf("the request pipelined behind HTTP/1.0 + Transfer-Encoding reached %s", u.name)
		}
	}
}

// TestInterimResponsesCarryNoRouterHeaders: the router's own headers are
// stripped from 103 Early Hints as from final responses.
func TestInterimResponsesCarryNoRouterHeaders(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.Header().Set("X-Router-Pin", "1h")
		w.Header().Set("X-Router-Replay", "primary")
		w.Header().Set("X-Router-Pin-Token", "forged")
		w.WriteHeader(http.StatusEarlyHints)
		for _, h := range []string{"X-Router-Pin", "X-Router-Replay", "X-Router-Pin-Token"} {
			w.Header().Del(h)
		}
		io.WriteString(w, "final")
	})
	rt := startRouter(t, baseEnv(primary))
	conn := rt.dial()
	io.WriteString(conn, "GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	got := readAllRaw(t, conn)
	if !strings.HasPrefix(got, "HTTP/1.1 103 Early Hints") || !strings.Contains(got, "Link: </style.css>") {
		t.Fatalf("client got %q, want a 103 with the Link header first", got)
	}
	if strings.Contains(strings.ToLower(got), "x-router-") {
		t.Errorf("router headers reached the client:\n%s", got)
	}
}

// TestUpstreamSendTimeout: an app that neither reads an upload nor answers
// is given up after UPSTREAM_SEND_TIMEOUT without progress, and it is the
// app's failure (a timeout), not the client's.
func TestUpstreamSendTimeout(t *testing.T) {
	t.Parallel()
	done := make(chan struct{})
	stuck := rawUpstream(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 1)) // read one byte, then never again
		<-done
	})
	t.Cleanup(func() { close(done) }) // before rawUpstream's own cleanup
	env := map[string]string{"PRIMARY_URL": stuck, "COOKIE_SECRET": secret, "UPSTREAM_SEND_TIMEOUT": "500ms"}
	rt := startRouter(t, env)
	id := newID(t)
	conn := rt.dial()
	const size = 256 << 20 // far more than the socket buffers hold
	go func() {
		fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nContent-Length: %d\r\n\r\n", id, size)
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	line := rt.logFor(id)
	if field(line, "code") != "upstream_timeout" || field(line, "failure") != "timeout" || field(line, "status") != "504" {
		t.Errorf("log line %q, want code=upstream_timeout failure=timeout status=504", line)
	}
}

// TestClientSendTimeout: a client that never reads its response is cut off
// after CLIENT_SEND_TIMEOUT without progress, and the app's connection is
// freed; the failure is the client's.
func TestClientSendTimeout(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	appSaw := make(chan error, 1)
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if _, err := w.Write(chunk); err != nil {
				appSaw <- err
				return
			}
		}
	})
	env := baseEnv(primary, replica)
	env["CLIENT_SEND_TIMEOUT"] = "500ms"
	rt := startRouter(t, env)
	id := newID(t)
	conn := rt.dial()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(conn, "GET /download HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n\r\n", id)
	select { // and never read
	case <-appSaw:
	case <-time.After(20 * time.Second):
		t.Fatal("the app was still sending 20 s after the client stopped reading")
	}
	line := rt.logFor(id)
	if field(line, "code") != "client_gone" || field(line, "failure") != "client" {
		t.Errorf("log line %q, want code=client_gone failure=client", line)
	}
}

// TestAnyValidPinCookieCounts: a junk cookie of the pin's name placed
// first, as a sibling subdomain's is, does not cancel a valid pin.
func TestAnyValidPinCookieCounts(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	rt := startRouter(t, baseEnv(primary, replica))
	resp, _, _ := do(t, "POST", rt.URL+"/items", strings.NewReader("x"), nil)
	pin := pinCookie(resp)
	if pin == nil {
		t.Fatal("no pin from the write")
	}
	resp, _, id := do(t, "GET", rt.URL+"/items", nil, http.Header{"Cookie": {"router_pin=junk; " + pin.String()}})
	if resp.Header.Get("X-Served-By") != "primary" || field(rt.logFor(id), "reason") != "pinned" {
		t.Errorf("read with a junk pin before the valid one: served by %q, log %q; want pinned to the primary", resp.Header.Get("X-Served-By"), rt.logFor(id))
	}
}

// TestForwardedProtoIsCaseInsensitive: the pin cookie is Secure whenever
// the client's scheme was https, however the front router spelled it.
func TestForwardedProtoIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	rt := startRouter(t, baseEnv(primary))
	for proto, secure := range map[string]bool{"https": true, "HTTPS": true, "Https, http": true, " https ": true, "http": false, "http, https": false} {
		resp, _, _ := do(t, "POST", rt.URL+"/items", strings.NewReader("x"), http.Header{"X-Forwarded-Proto": {proto}})
		pin := pinCookie(resp)
		if pin == nil || pin.Secure != secure {
			t.Errorf("X-Forwarded-Proto %q: pin %v, want Secure=%v", proto, pin, secure)
		}
	}
}

// TestAdminAuthFailuresAreLoggedAndCounted: every failure is counted, and
// a burst from one client is one log line a second, not one per guess.
func TestAdminAuthFailuresAreLoggedAndCounted(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	env := baseEnv(primary)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	const guesses = 200
	start := time.Now()
	for i := range guesses {
		resp, _, _ := do(t, "GET", rt.URL+"/_router/status", nil, http.Header{"Authorization": {fmt.Sprintf("Bearer guess-%d", i)}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a wrong token got %d, want 401", resp.StatusCode)
		}
	}
	seconds := int(time.Since(start)/time.Second) + 1
	m := scrape(t, rt.URL+"/_router/metrics")
	if got := m["router_admin_auth_failures_total"]; got != guesses {
		t.Errorf("router_admin_auth_failures_total = %v, want %d", got, guesses)
	}
	if _, ok := rt.waitLog(`msg="admin authentication failed" client=127.0.0.1 path=/_router/status failures=1`, 5*time.Second); !ok {
		t.Fatal("no log line for the first failed authentication")
	}
	lines := 0
	for _, l := range rt.Lines() {
		if strings.Contains(l, `msg="admin authentication failed"`) {
			lines++
		}
	}
	t.Logf("%d failures in about %d s: %d log lines", guesses, seconds, lines)
	if lines > seconds+1 {
		t.Errorf("%d log lines for %d failures in about %d s, want at most one a second", lines, guesses, seconds)
	}
}

// TestSmugglingProbes sends framing attacks as raw bytes through the router
// to an app that parses what it receives strictly. Each probe hides a
// request to /smuggled inside what the client sent as one request's body;
// the app must never see it, nor bytes it cannot parse as requests.
func TestSmugglingProbes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen, parseErrors []string
	truncated := 0
	app := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				if err != io.EOF && !strings.Contains(err.Error(), "use of closed") && !isConnReset(err) {
					mu.Lock()
					parseErrors = append(parseErrors, err.Error())
					mu.Unlock()
				}
				return
			}
			if req.UserAgent() == health.UserAgent {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				// A body the client broke midway is cut off, never
				// completed: the app sees no request in it.
				mu.Lock()
				truncated++
				mu.Unlock()
				return
			}
			mu.Lock()
			seen = append(seen, req.Method+" "+req.URL.Path)
			mu.Unlock()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret})
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	chunkedSmuggle := "0\r\n\r\n" + smuggled
	probes := map[string]string{
		"CL.TE":              "POST /own HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedSmuggle,
		"TE.CL":              "POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunkedSmuggle,
		"TE space":           "POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 40\r\n\r\n" + chunkedSmuggle,
		"TE xchunked":        "POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 40\r\n\r\n" + chunkedSmuggle,
		"TE list":            "POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\nContent-Length: 40\r\n\r\n" + chunkedSmuggle,
		"TE twice":           "POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + chunkedSmuggle,
		"TE obs-fold":        "POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 40\r\n\r\n" + chunkedSmuggle,
		"CL twice":           "POST /own HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 39\r\n\r\n" + smuggled,
		"CL signed":          "POST /own HTTP/1.1\r\nHost: x\r\nContent-Length: +39\r\n\r\n" + smuggled,
		"CL in a list":       "POST /own HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 39\r\n\r\n" + smuggled,
		"NUL in header":      "POST /own HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: 39\r\n\r\n" + smuggled,
		"bare CR":            "POST /own HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 0\r\nContent-Length: 39\r\n\r\n" + smuggled,
		"bare LF":            "POST /own HTTP/1.1\nHost: x\nContent-Length: 39\n\n" + smuggled,
		"HTTP/1.0 and TE":    "POST /own HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedSmuggle,
		"chunk size overrun": "POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff1\r\n" + smuggled,
		"chunk extension":    "POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n27;ext=\"\r\n" + smuggled + "\r\n0\r\n\r\n",
		"absolute-form":      "POST http://other.example/own HTTP/1.1\r\nHost: other.example\r\nContent-Length: 39\r\n\r\n" + smuggled,
	}
	for name, raw := range probes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rawExchange(t, rt.Port, raw)
		})
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range seen {
			if s != "POST /own" {
				t.Errorf("the app saw %q, which no client sent as its own request", s)
			}
		}
		for _, e := range parseErrors {
			t.Errorf("the app could not parse what the router sent: %s", e)
		}
		t.Logf("%d probes; the app saw %d whole requests, all the clients' own, and %d cut off mid-body", len(probes), len(seen), truncated)
	})
}

// TestAsteriskForm: "*" is a request target only for a server-wide OPTIONS
// (RFC 9112 §3.2.4). With any other method it is refused, not sent to an
// app as a request for the path "/*"; OPTIONS * is about the router, which
// answers it itself (as Go's server does).
func TestAsteriskForm(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	rt := startRouter(t, baseEnv(primary, replica))
	resps := rawExchange(t, rt.Port, "GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if len(resps) != 1 || resps[0].StatusCode != http.StatusBadRequest {
		t.Errorf("GET *: %v, want one 400", resps)
	}
	resps = rawExchange(t, rt.Port, "OPTIONS * HTTP/1.1\r\nHost: x\r\nX-Request-Id: asterisk-form-0123456789\r\nConnection: close\r\n\r\n")
	if len(resps) != 1 || resps[0].StatusCode != 200 || resps[0].Header.Get("Allow") == "" {
		t.Fatalf("OPTIONS *: %v, want one 200 with the router's Allow header", resps)
	}
	if n := primary.count() + replica.count(); n != 0 {
		t.Errorf("%d requests reached the apps, want none", n)
	}
}
