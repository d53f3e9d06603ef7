package router

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
)

// TestResponseLosesHopByHopAndRouterHeaders: what an app's response head
// says about its own connection (RFC 9110 §7.6.1), the headers its
// Connection header names, and the router's own headers never reach the
// client; the rest do, as the app sent them. A 101 keeps the Connection
// and Upgrade headers the switch needs.
func TestResponseLosesHopByHopAndRouterHeaders(t *testing.T) {
	t.Parallel()
	ln := serveRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if req.URL.Path == "/switch" {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Secret\r\nUpgrade: echo\r\n"+
					"X-Secret: s\r\nKeep-Alive: timeout=5\r\n\r\n")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Secret\r\n"+
				"Connection: X-Other\r\nX-Secret: s\r\nX-Other: o\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"+
				"TE: trailers\r\nUpgrade: h2c\r\nX-Router-Pin-Token: forged\r\nX-Router-Pin: skip\r\n"+
				"X-Router-Replay: primary\r\nX-Kept: k\r\nCache-Control: no-store\r\n\r\nok")
		}
	})
	up := health.NewUpstream(&url.URL{Scheme: "http", Host: ln.Addr().String()}, health.Primary, 1, nil)
	pinner, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}})
	rt := New(Options{Primary: up, Pinner: pinner, PinTTL: time.Second, UpstreamTimeout: 5 * time.Second,
		ConnectTimeout: time.Second, AccessLog: io.Discard})
	defer rt.Close()
	front := serveRouter(t, rt)

	// A write: the primary's answer would pin, but the app said skip.
	resp, err := http.Post(front+"/items", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q, want 200 \"ok\"", resp.StatusCode, body)
	}
	for _, name := range []string{"Connection", "X-Secret", "X-Other", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade",
		"X-Router-Pin-Token", "X-Router-Pin", "X-Router-Replay", "Set-Cookie"} {
		if v, ok := resp.Header[name]; ok {
			t.Errorf("client got %s: %q", name, v)
		}
	}
	if resp.Header.Get("X-Kept") != "k" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("end-to-end headers lost: %v", resp.Header)
	}

	conn, err := net.Dial("tcp", front[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /switch HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	sw, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sw.StatusCode != 101 || sw.Header.Get("Upgrade") != "echo" || sw.Header.Get("Connection") != "Upgrade" {
		t.Errorf("101 lost what the switch needs: %d %v", sw.StatusCode, sw.Header)
	}
	if sw.Header.Get("X-Secret") != "" || sw.Header.Get("Keep-Alive") != "" {
		t.Errorf("101 kept hop-by-hop headers: %v", sw.Header)
	}
}
