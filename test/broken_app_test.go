package test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/splitapp/router/health"
)

// Apps that break HTTP/1.1: each test drives the real binary in front of
// an app that speaks raw bytes, and checks that no client ever reads an
// answer meant for another request.

// connCounter counts the connections a raw app served requests on, and
// the requests it read on each. The router's health checks are left out.
type connCounter struct {
	mu    sync.Mutex
	conns int
	most  int // the most requests read on one connection
}

func (c *connCounter) served(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n == 1 {
		c.conns++
	}
	c.most = max(c.most, n)
}

func (c *connCounter) counts() (conns, most int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns, c.most
}

// answerEach reads requests on c one after another and writes what answer
// returns for each. Health checks get a plain 200.
func answerEach(c net.Conn, count *connCounter, answer func(n int, req *http.Request) string) {
	br := bufio.NewReader(c)
	for n := 1; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		reply := response("ok")
		if req.UserAgent() != health.UserAgent {
			if count != nil {
				count.served(n)
			}
			reply = answer(n, req)
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

// ownAnswers sends n requests, calling between (if set) before each after
// the first, and fails the test for every answer that is not the one the
// app gave to that request: the app puts the request id in each body.
func ownAnswers(t *testing.T, rt *routerProc, method string, n int, between func()) {
	t.Helper()
	for i := range n {
		if i > 0 && between != nil {
			between()
		}
		resp, body, id := do(t, method, rt.URL+"/items", nil, nil)
		if answerTo := resp.Header.Get("X-Answer-To"); answerTo != "" {
			body = answerTo
		}
		if resp.StatusCode >= 400 || !strings.Contains(body, id) {
			t.Errorf("request %d (%s): got %d %q, want its own answer naming %s", i, id, resp.StatusCode, body, id)
		}
	}
}

func withID(body string, req *http.Request) string {
	return body + " " + req.Header.Get("X-Request-Id")
}

func response(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// TestStrayBytesNeverReachAnotherClient: an app that writes more than its
// answer poisons the connection it wrote on. Each case sends one request at
// a time, the next once the app has written its stray bytes (as a broken
// app would, between two requests), and every client must get its own
// answer: the app names the request id in each.
func TestStrayBytesNeverReachAnotherClient(t *testing.T) {
	t.Parallel()
	stray := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	// An answer returns what the app writes at once; it may call later to
	// write more after a moment, as its own segment, so that it is not in
	// the router's buffer when the router reads the answer.
	type later func(after time.Duration, b string)
	bodiless := func(status string, req *http.Request, later later) string {
		later(5*time.Millisecond, stray)
		return "HTTP/1.1 " + status + "\r\nX-Answer-To: " + req.Header.Get("X-Request-Id") + "\r\n\r\n"
	}
	cases := []struct {
		name, method string
		answer       func(req *http.Request, later later) string
	}{
		{"a second response 15 ms after the first", "GET", func(req *http.Request, later later) string {
			later(15*time.Millisecond, stray)
			return response(withID("hello", req))
		}},
		{"a body after 204", "GET", func(req *http.Request, later later) string { return bodiless("204 No Content", req, later) }},
		{"a body after 304", "GET", func(req *http.Request, later later) string { return bodiless("304 Not Modified", req, later) }},
		{"a body after a HEAD's answer", "HEAD", func(req *http.Request, later later) string {
			later(5*time.Millisecond, stray)
			return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Answer-To: " + req.Header.Get("X-Request-Id") + "\r\n\r\n"
		}},
		{"a body after a HEAD's answer, in one write", "HEAD", func(req *http.Request, later later) string {
			later(0, "") // nothing more: the stray body is in the answer's write
			return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Answer-To: " + req.Header.Get("X-Request-Id") + "\r\n\r\nhello"
		}},
		{"Content-Length counted in characters", "GET", func(req *http.Request, later later) string {
			// The answer is cut at its Content-Length; the rest is stray.
			body := withID("answer", req) + " héllo wörld " + stray
			n := len([]rune(body))
			later(5*time.Millisecond, body[n:])
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", n, body[:n])
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			written := make(chan struct{}, 1)
			app := rawUpstream(t, func(c net.Conn) {
				answerEach(c, nil, func(_ int, req *http.Request) string {
					return tc.answer(req, func(after time.Duration, b string) {
						time.AfterFunc(after, func() {
							io.WriteString(c, b)
							select {
							case written <- struct{}{}:
							default: // after the last request: nobody waits
							}
						})
					})
				})
			})
			rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})
			ownAnswers(t, rt, tc.method, 6, func() {
				select {
				case <-written:
				case <-time.After(10 * time.Second):
					t.Fatal("waited 10 s for the app to write its stray bytes")
				}
			})
		})
	}
}

// TestPlantedRequestReachesNoOtherClient: an app that answers a POST before
// reading its body, and keeps the connection, reads the body as the next
// request on it. An attacker's body that is a request of its own must not
// answer another client's request.
func TestPlantedRequestReachesNoOtherClient(t *testing.T) {
	t.Parallel()
	planted := "GET /smuggled-by-attacker HTTP/1.1\r\nHost: x\r\n\r\n"
	answeredPlanted := make(chan struct{}, 1)
	app := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			// The broken part: the body is left where it is.
			body := "ok " + req.Method + " " + req.URL.Path + " " + req.Header.Get("X-Request-Id")
			_, err = io.WriteString(c, response(body))
			if req.URL.Path == "/smuggled-by-attacker" {
				answeredPlanted <- struct{}{} // written, or the router has closed the connection
			}
			if err != nil {
				return
			}
		}
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})
	for i := range 5 {
		resp, body, _ := do(t, "POST", rt.URL+"/attack", strings.NewReader(planted), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("attacker's POST: %d %q", resp.StatusCode, body)
		}
		// The victim comes once the app has answered the planted request
		// on the attacker's connection.
		select {
		case <-answeredPlanted:
		case <-time.After(10 * time.Second):
			t.Fatal("waited 10 s for the app to answer the planted request")
		}
		// The victim's POST has no body: this app would take any body for
		// the start of the next request, a desync no proxy can see.
		resp, body, id := do(t, "POST", rt.URL+"/victim", http.NoBody, nil)
		if !strings.Contains(body, "/victim "+id) {
			t.Errorf("round %d: the victim got %d %q, want its own answer", i, resp.StatusCode, body)
		}
	}
}

// TestEarlyAnswerClosesTheConnection: an answer that arrives while the
// request body is still being sent means the app will not read the rest as
// body: the connection is not used again.
func TestEarlyAnswerClosesTheConnection(t *testing.T) {
	t.Parallel()
	var count connCounter
	early := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.UserAgent() != health.UserAgent {
			count.served(1)
		}
		if req.URL.Path != "/upload" {
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, response(withID("ok", req)))
			return
		}
		io.WriteString(c, response(withID("early", req)))
		io.Copy(io.Discard, br) // reads on, as a server that would take it for a next request
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": early, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})
	conn := rt.dial()
	id := newID(t)
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nContent-Length: 200000\r\n\r\n", id)
	go func() {
		// The body in pieces, a moment apart: the answer comes between
		// them.
		for range 20 {
			if _, err := conn.Write(make([]byte, 10000)); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "early "+id) {
		t.Fatalf("got %q, want the early answer", body)
	}
	line := rt.logFor(id)
	if field(line, "status") != "200" {
		t.Errorf("logged %q, want status=200", line)
	}
	// The next request must go on a connection of its own.
	do(t, "GET", rt.URL+"/next", nil, nil)
	if conns, _ := count.counts(); conns != 2 {
		t.Errorf("the app saw %d connections, want 2: the early answer's connection was reused", conns)
	}
}

// TestHTTP10ResponseWithTransferEncodingClosesTheConnection: RFC 9112 §6.1.
func TestHTTP10ResponseWithTransferEncodingClosesTheConnection(t *testing.T) {
	t.Parallel()
	var count connCounter
	app := rawUpstream(t, func(c net.Conn) {
		answerEach(c, &count, func(_ int, req *http.Request) string {
			body := withID("ok", req)
			return fmt.Sprintf("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		})
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})
	ownAnswers(t, rt, "GET", 3, nil)
	if conns, most := count.counts(); conns != 3 || most != 1 {
		t.Errorf("the app saw %d connections with up to %d requests each; want 3 with 1 each", conns, most)
	}
}

// selfSigned returns a TLS server configuration with a fresh self-signed
// certificate for 127.0.0.1.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// rawTLSUpstream is rawUpstream over TLS; it returns the app's https URL.
func rawTLSUpstream(t *testing.T, cfg *tls.Config, serve func(net.Conn)) string {
	t.Helper()
	plain := rawUpstream(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		defer tc.Close()
		serve(tc)
	})
	return "https://" + strings.TrimPrefix(plain, "http://")
}

// TestStrayBytesOverTLS: over HTTPS the bytes an app sends after a body
// over 16 KB wait in crypto/tls's buffer, where a look at the socket cannot
// see them. They must not answer the next request either, however long
// after it comes.
func TestStrayBytesOverTLS(t *testing.T) {
	t.Parallel()
	var answered atomic.Int64
	app := rawTLSUpstream(t, selfSigned(t), func(c net.Conn) {
		answerEach(c, nil, func(n int, req *http.Request) string {
			answered.Add(1)
			size := 16<<10 + 1 + int(answered.Load()%7)*4099
			body := withID(strings.Repeat("b", size), req)
			// The answer and a stray one in one write: one TLS stream.
			return response(body) + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
		})
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret,
		"HEALTH_CHECK_INTERVAL": "1h", "UPSTREAM_TLS_INSECURE_SKIP_VERIFY": "true"})
	for _, gap := range []time.Duration{0, 50 * time.Millisecond, 200 * time.Millisecond} {
		// The stray bytes came in the answer's write: the gap is how long
		// they wait in the buffer, not a wait for them.
		ownAnswers(t, rt, "GET", 4, func() { time.Sleep(gap) })
	}
}

// TestConnectionHeaderCannotUnframeABody: an app's "Connection:
// Content-Length" names a header to drop at the hop, but the body's framing
// is read first, so the client gets the body and the next request its own
// answer.
func TestConnectionHeaderCannotUnframeABody(t *testing.T) {
	t.Parallel()
	app := rawUpstream(t, func(c net.Conn) {
		answerEach(c, nil, func(_ int, req *http.Request) string {
			body := withID("hello", req)
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		})
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})
	ownAnswers(t, rt, "GET", 3, nil)
}

// TestInvalidStatusCodesAre502: a status outside 100-599 is a malformed
// answer, not a 200 and not an interim response.
func TestInvalidStatusCodesAre502(t *testing.T) {
	t.Parallel()
	for _, status := range []string{"000", "099", "600", "999"} {
		app := rawUpstream(t, func(c net.Conn) {
			answerEach(c, nil, func(_ int, req *http.Request) string {
				return "HTTP/1.1 " + status + " Odd\r\nContent-Length: 2\r\n\r\nok"
			})
		})
		rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})
		resp, body, id := do(t, "GET", rt.URL+"/items", nil, nil)
		line := rt.logFor(id)
		if resp.StatusCode != 502 || field(line, "code") != "upstream_bad_response" || field(line, "failure") != "bad_response" {
			t.Errorf("app status %s: client got %d %q, logged %q; want 502 upstream_bad_response", status, resp.StatusCode, body, line)
		}
	}
}

// TestTrailersAreCappedAndCleaned: a trailer section is held to 64 KB, as
// a head is, and carries neither the router's own fields nor NUL bytes.
func TestTrailersAreCappedAndCleaned(t *testing.T) {
	t.Parallel()
	appGone := make(chan error, 1)
	app := rawUpstream(t, func(c net.Conn) {
		answerEach(c, nil, func(_ int, req *http.Request) string {
			head := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Good\r\n\r\n5\r\nhello\r\n0\r\n"
			if req.URL.Path == "/clean" {
				return head + "X-Good: yes\r\nX-Router-Pin: 1h\r\nx-router-replay: primary\r\nX-Router-Pin-Token: forged\r\n" +
					"Connection: close\r\nX-Nul: a\x00b\r\n\r\n"
			}
			// Endless distinct trailer fields.
			io.WriteString(c, head)
			for i := 0; ; i++ {
				if _, err := fmt.Fprintf(c, "X-T-%d: %d\r\n", i, i); err != nil {
					appGone <- err
					return ""
				}
			}
		})
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})

	conn := rt.dial()
	io.WriteString(conn, "GET /clean HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	raw := readAllRaw(t, conn)
	_, tail, _ := strings.Cut(raw, "\r\n0\r\n")
	if !strings.Contains(tail, "X-Good: yes") || !strings.Contains(tail, "X-Nul: a b") {
		t.Errorf("trailer section %q, want X-Good and X-Nul with its NUL made a space", tail)
	}
	if strings.Contains(strings.ToLower(tail), "x-router") || strings.Contains(tail, "\x00") {
		t.Errorf("trailer section %q carries the router's fields or a NUL", tail)
	}

	id := newID(t)
	conn = rt.dial()
	fmt.Fprintf(conn, "GET /endless HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n\r\n", id)
	got := readAllRaw(t, conn)
	if n := len(got); n > 200<<10 {
		t.Errorf("the client read %d bytes of trailers, want the section cut at 64 KB", n)
	}
	select {
	case <-appGone:
	case <-time.After(10 * time.Second):
		t.Error("the app's connection stayed open while it sent trailers without end")
	}
	if line := rt.logFor(id); field(line, "code") != "upstream_aborted" {
		t.Errorf("logged %q, want code=upstream_aborted", line)
	}
	if rss := peakRSSKB(t, rt.cmd.Process.Pid); rss > 100<<10 {
		t.Errorf("router peak RSS %d KB, want under 100 MB", rss)
	}
}

// TestSwitchingProtocolsOnlyAsAsked: a 101 to a request that did not ask to
// switch, or to another protocol than asked, is a malformed answer; the
// client's connection stays HTTP, so what it sends next is routed as a
// request, with the router's headers.
func TestSwitchingProtocolsOnlyAsAsked(t *testing.T) {
	t.Parallel()
	app := rawUpstream(t, func(c net.Conn) {
		answerEach(c, nil, func(_ int, req *http.Request) string {
			if req.Method == "GET" {
				return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
			}
			return response("after, forwarded for " + req.Header.Get("X-Forwarded-For"))
		})
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})
	for _, tc := range []struct{ name, head string }{
		{"a plain GET", "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"another protocol", "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
	} {
		conn := rt.dial()
		// Behind it, a request that must be routed as one: the router
		// appends to its X-Forwarded-For.
		io.WriteString(conn, tc.head+"POST /after HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
		br := bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		first, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.Copy(io.Discard, first.Body)
		if first.StatusCode != 502 {
			t.Errorf("%s answered with an unasked 101: client got %d, want 502", tc.name, first.StatusCode)
		}
		second, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: the request behind it got no answer: %v", tc.name, err)
		}
		body, _ := io.ReadAll(second.Body)
		if !strings.HasPrefix(string(body), "after, forwarded for 203.0.113.9, 127.0.0.1") {
			t.Errorf("%s: the request behind it got %d %q, want it proxied with the router's X-Forwarded-For", tc.name, second.StatusCode, body)
		}
	}
}

// TestTunnelHalfCloseAndShutdown: in an upgraded connection a half-close
// passes on, the app's last words still reach the client, and SIGTERM
// closes what tunnels are left at once.
func TestTunnelHalfCloseAndShutdown(t *testing.T) {
	t.Parallel()
	app := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.UserAgent() == health.UserAgent {
			io.WriteString(c, response("ok"))
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		if req.URL.Path == "/hold" {
			io.Copy(io.Discard, br)
			return
		}
		// Echo until the client half-closes, then say goodbye and close.
		got, _ := io.ReadAll(br)
		c.Write(got)
		io.WriteString(c, " bye")
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h"})

	conn := rt.dial()
	io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(conn, "hello")
	conn.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if string(rest) != "hello bye" {
		t.Errorf("after the half-close the client read %q (%v), want \"hello bye\"", rest, err)
	}

	held := rt.dial()
	io.WriteString(held, "GET /hold HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	hbr := bufio.NewReader(held)
	held.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(hbr, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	rt.signal(syscall.SIGTERM)
	if _, err := io.ReadAll(hbr); err != nil && !isConnReset(err) {
		t.Errorf("the tunnel did not end at shutdown: %v", err)
	}
	if code := rt.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM with a tunnel open, want 0", code)
	}
}

// TestStalledBodyEndsWhenTheClientLeaves: a response body the app stops
// sending, or an upgraded connection the client stops reading, holds no
// connection to the app after the client is gone.
func TestStalledBodyEndsWhenTheClientLeaves(t *testing.T) {
	t.Parallel()
	appClosed := make(chan string, 4)
	app := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/stall":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", 20000))
			io.Copy(io.Discard, br) // returns when the router closes the connection
			appClosed <- "stall"
		case "/flood":
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: flood\r\n\r\n")
			chunk := make([]byte, 64<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					appClosed <- "flood"
					return
				}
			}
		}
	})
	rt := startRouter(t, map[string]string{"PRIMARY_URL": app, "COOKIE_SECRET": secret, "HEALTH_CHECK_INTERVAL": "1h",
		"CLIENT_SEND_TIMEOUT": "1s"})

	id := newID(t)
	conn := rt.dial()
	fmt.Fprintf(conn, "GET /stall HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n\r\n", id)
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case <-appClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("the app's connection stayed open after the client left a stalled body")
	}
	if line := rt.logFor(id); field(line, "code") != "client_gone" || field(line, "failure") != "client" {
		t.Errorf("logged %q, want code=client_gone failure=client", line)
	}

	flood := rt.dial()
	io.WriteString(flood, "GET /flood HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: flood\r\n\r\n")
	// The client reads nothing more: after CLIENT_SEND_TIMEOUT without
	// progress, the tunnel is cut.
	select {
	case <-appClosed:
	case <-time.After(15 * time.Second):
		t.Fatal("a tunnel whose client stopped reading was not cut")
	}
}

// TestTLSSessionsResume: every new connection to an HTTPS app after the
// first resumes its TLS session (an abbreviated handshake), as a restarted
// app or an idle pool makes routine.
func TestTLSSessionsResume(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var full, resumed int
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.UserAgent() != health.UserAgent {
			mu.Lock()
			if r.TLS.DidResume {
				resumed++
			} else {
				full++
			}
			mu.Unlock()
		}
		// Every answer closes its connection: the next request needs a
		// new one, as after an app restart.
		w.Header().Set("Connection", "close")
		io.WriteString(w, "ok")
	}), TLSConfig: selfSigned(t), ErrorLog: log.New(io.Discard, "", 0)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	rt := startRouter(t, map[string]string{"PRIMARY_URL": "https://" + ln.Addr().String(), "COOKIE_SECRET": secret,
		"HEALTH_CHECK_INTERVAL": "1h", "UPSTREAM_TLS_INSECURE_SKIP_VERIFY": "true"})
	for i := range 6 {
		if i == 3 {
			time.Sleep(time.Second) // a quiet moment changes nothing
		}
		if resp, body, _ := do(t, "GET", rt.URL+"/items", nil, nil); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if full != 1 || resumed != 5 {
		t.Errorf("the app saw %d full handshakes and %d resumed, want 1 and 5", full, resumed)
	}
}
