package http1

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/splitapp/router/health"
)

// newStream admits a request parsed from raw, as the server parses it,
// from a client at 192.0.2.1 whose connection is one end of a pipe.
func newStream(t *testing.T, p *Proxy, raw string) *Stream {
	t.Helper()
	client, router := net.Pipe()
	t.Cleanup(func() { client.Close(); router.Close() })
	ctx := &fasthttp.RequestCtx{}
	ctx.Init2(router, nil, false)
	ctx.SetRemoteAddr(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5555})
	if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("parsing %q: %v", raw, err)
	}
	s := &Stream{}
	p.Init(s, func(error) {})
	if status, desc := p.Admit(s, ctx); status != 0 {
		t.Fatalf("Admit refused %q: %d %s", raw, status, desc)
	}
	s.RequestID, s.AttemptStart = "test-request-id-0123456789", s.Start
	return s
}

// TestRoundTripRewritesBothHeads: the app gets the client's request less
// what ends at the router, with the forwarding headers set; the client
// gets the app's response less what ends at the router, whose requests to
// the router are kept aside. The connection goes back to the pool and
// carries the next request.
func TestRoundTripRewritesBothHeads(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []*http.Request
	conns := 0
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
		h := w.Header()
		h.Set("Connection", "X-Secret")
		h.Set("X-Secret", "s")
		h.Set("Keep-Alive", "timeout=5")
		h.Set(PinHeader, "30s")
		h.Set(ReplayHeader, "primary")
		h.Set(PinTokenHeader, "forged")
		h.Set("X-Kept", "k")
		io.WriteString(w, "ok")
	}))
	app.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	app.Start()
	defer app.Close()
	u, _ := url.Parse(app.URL + "/base/")
	target := NewTarget(u)
	p := New(Options{ConnectTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second})
	defer p.CloseIdleConnections()

	for range 2 {
		s := newStream(t, p, "GET /items?page=2 HTTP/1.1\r\nHost: shop.example\r\nConnection: X-Hop\r\nX-Hop: h\r\n"+
			"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nCookie: a=1; router_pin=p; b=2\r\n"+
			"Keep-Alive: 5\r\n"+PinTokenHeader+": token\r\n\r\n")
		s.HiddenCookie = "router_pin"
		c, err := p.RoundTrip(s, target, false)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		if streaming, err := p.Deliver(s, c); streaming || err != nil {
			t.Fatalf("Deliver: streaming %v, err %v; want a whole small body", streaming, err)
		}
		resp := &s.Ctx.Response
		if string(resp.Body()) != "ok" || resp.StatusCode() != 200 {
			t.Errorf("response %d %q, want 200 \"ok\"", resp.StatusCode(), resp.Body())
		}
		for _, name := range []string{"Connection", "X-Secret", "Keep-Alive", PinHeader, ReplayHeader, PinTokenHeader} {
			if v := resp.Header.Peek(name); v != nil {
				t.Errorf("client gets %s: %q", name, v)
			}
		}
		if string(resp.Header.Peek("X-Kept")) != "k" {
			t.Error("client lost X-Kept")
		}
		if d := s.Directives; string(d.Pin) != "30s" || !d.Replay || !d.ReplayPrimary {
			t.Errorf("directives %+v, want pin 30s and a replay on the primary", d)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	if conns != 1 {
		t.Errorf("the app saw %d connections for two requests, want 1 (pooled)", conns)
	}
	r := got[0]
	want := map[string]string{
		"X-Forwarded-For":   "1.2.3.4, 192.0.2.1",
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  "shop.example",
		"X-Request-Id":      "test-request-id-0123456789",
		"Cookie":            "a=1; b=2",
		"X-Hop":             "",
		"Keep-Alive":        "",
		PinTokenHeader:      "",
	}
	for name, v := range want {
		if r.Header.Get(name) != v {
			t.Errorf("app got %s: %q, want %q", name, r.Header.Get(name), v)
		}
	}
	if r.Host != u.Host || r.URL.RequestURI() != "/base/items?page=2" {
		t.Errorf("app got Host %q target %q, want %q and /base/items?page=2", r.Host, r.URL.RequestURI(), u.Host)
	}
	if !strings.HasPrefix(r.Header.Get("X-Request-Start"), "t=") {
		t.Errorf("app got X-Request-Start %q, want t=<microseconds>", r.Header.Get("X-Request-Start"))
	}
}

// TestRoundTripFailuresAreTyped: each way an app can fail a request comes
// back as the class the router's failure policy acts on.
func TestRoundTripFailuresAreTyped(t *testing.T) {
	t.Parallel()
	answer := func(reply string) func(net.Conn) {
		return func(c net.Conn) {
			http.ReadRequest(bufio.NewReader(c))
			io.WriteString(c, reply)
		}
	}
	tests := []struct {
		name  string
		app   func(net.Conn) // nil: nothing listens
		class health.Class
		err   error
	}{
		{"nothing listening", nil, health.Connect, nil},
		{"closed without an answer", answer(""), health.Reset, nil},
		{"not HTTP", answer("SSH-2.0-OpenSSH\r\n\r\n"), health.BadResponse, nil},
		{"status 000", answer("HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n"), health.BadResponse, errBadStatus},
		{"status 600", answer("HTTP/1.1 600 Six\r\nContent-Length: 0\r\n\r\n"), health.BadResponse, errBadStatus},
		{"head over 64 KB", answer("HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", MaxResponseHead) + "\r\n\r\n"),
			health.BadResponse, ErrResponseHeadTooLarge},
		{"an unasked switch", answer("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"),
			health.BadResponse, errUnaskedSwitch},
		{"no answer in time", func(c net.Conn) { io.Copy(io.Discard, c) }, health.Timeout, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			if tc.app == nil {
				ln.Close()
			} else {
				defer ln.Close()
				go func() {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					defer c.Close()
					tc.app(c)
				}()
			}
			p := New(Options{ConnectTimeout: time.Second, ResponseHeaderTimeout: 200 * time.Millisecond})
			s := newStream(t, p, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			c, ferr := p.RoundTrip(s, NewTarget(&url.URL{Scheme: "http", Host: addr}), false)
			if ferr == nil {
				c.Close()
				t.Fatalf("round trip succeeded, want class %s", tc.class)
			}
			if ferr.Class != tc.class || tc.err != nil && !errors.Is(ferr, tc.err) {
				t.Errorf("failure %v, want class %s (%v)", ferr, tc.class, tc.err)
			}
		})
	}
}

// TestAdmitRefusesHeadsItCannotProxy: heads fasthttp's server lets
// through, which an app behind the router could read otherwise.
func TestAdmitRefusesHeadsItCannotProxy(t *testing.T) {
	t.Parallel()
	tests := map[string]int{
		"GET /" + strings.Repeat("a", MaxHeaderLine) + " HTTP/1.1\r\nHost: x\r\n\r\n":            414,
		"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", MaxHeaderLine) + "\r\n\r\n": 431,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n":                      400,
		"GET / HTTP/1.1\r\nHost: x\r\nContent Length: 5\r\n\r\n":                                 400,
	}
	p := New(Options{})
	for raw, want := range tests {
		var ctx fasthttp.RequestCtx
		if err := ctx.Request.Read(bufio.NewReaderSize(strings.NewReader(raw), MaxHeaderBlock)); err != nil {
			t.Fatalf("parsing %.40q: %v", raw, err)
		}
		var s Stream
		p.Init(&s, nil)
		if status, desc := p.Admit(&s, &ctx); status != want {
			t.Errorf("%.60q: %d %s, want %d", raw, status, desc, want)
		}
	}
}
