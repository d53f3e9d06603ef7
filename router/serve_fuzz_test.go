package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
)

// recordingApp is an upstream that parses what it receives strictly, one
// request after another, and records each request's method and target.
type recordingApp struct {
	ln net.Listener
	// busy counts requests whose head the app has read and not yet
	// answered.
	busy atomic.Int64
	mu   sync.Mutex
	// seen holds "METHOD target" of every whole request; bad holds what
	// did not parse as a request (a body cut off midway is not bad: the
	// app sees no request in it).
	seen, bad []string
}

// connectionEnded reports whether err is the connection ending or breaking
// under a request, as opposed to bytes that do not parse as one.
func connectionEnded(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func startRecordingApp(t testing.TB) *recordingApp {
	a := &recordingApp{}
	a.ln = serveRaw(t, a.serve)
	return a
}

func (a *recordingApp) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if !connectionEnded(err) {
				a.mu.Lock()
				a.bad = append(a.bad, err.Error())
				a.mu.Unlock()
			}
			return
		}
		a.busy.Add(1)
		_, err = io.Copy(io.Discard, req.Body)
		if err == nil {
			a.mu.Lock()
			a.seen = append(a.seen, req.Method+" "+req.URL.RequestURI())
			a.mu.Unlock()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		a.busy.Add(-1)
		if err != nil {
			return
		}
	}
}

func (a *recordingApp) take() (seen, bad []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen, bad = a.seen, a.bad
	a.seen, a.bad = nil, nil
	return seen, bad
}

// clientRequests is what the client sent as its own requests: the raw bytes
// read as a strict server would, request after request, bodies included,
// until they stop parsing or a request frames its body ambiguously. Bytes
// after such a request are not the client's to claim: under one reading
// or another they are its body.
func clientRequests(raw []byte) []string {
	br := bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16)
	var out []string
	for {
		// Empty lines before a request line are ignored (RFC 9112 §2.2),
		// as Go's server does after a request with a body.
		for {
			b, err := br.Peek(1)
			if err != nil || b[0] != '\r' && b[0] != '\n' {
				break
			}
			br.Discard(1)
		}
		buffered, _ := br.Peek(br.Buffered())
		if len(buffered) == 0 {
			buffered, _ = br.Peek(len(raw))
		}
		head := buffered
		if i := bytes.Index(head, []byte("\n\r\n")); i >= 0 {
			head = head[:i]
		}
		if i := bytes.Index(head, []byte("\n\n")); i >= 0 {
			head = head[:i]
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return out
		}
		out = append(out, req.Method+" "+req.URL.RequestURI())
		if ambiguousFraming(head) {
			return out
		}
	}
}

// ambiguousFraming reports whether a request head frames its body in a way
// two parsers may read differently (RFC 9112 §6.1, §6.3): Transfer-Encoding
// with Content-Length, Transfer-Encoding in HTTP/1.0, Content-Length more
// than once, either of them folded over lines, or a header name with a
// space in it.
func ambiguousFraming(head []byte) bool {
	lines := strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n")
	if len(lines) == 0 {
		return false
	}
	http10 := strings.HasSuffix(strings.TrimSpace(lines[0]), "HTTP/1.0")
	cl, te := 0, false
	last := ""
	for _, line := range lines[1:] {
		if line != "" && (line[0] == ' ' || line[0] == '\t') {
			if last == "content-length" || last == "transfer-encoding" {
				return true // a folded framing header
			}
			continue
		}
		name, _, _ := strings.Cut(line, ":")
		if strings.ContainsAny(strings.TrimSpace(name), " \t") {
			return true // "Content Length": framing to some parsers, not to others
		}
		last = strings.ToLower(strings.TrimSpace(name))
		switch last {
		case "content-length":
			cl++
		case "transfer-encoding":
			te = true
		}
	}
	return cl > 1 || te && (cl > 0 || http10)
}

// FuzzServe puts raw request bytes through the router's server, as main
// configures it, to an app that parses strictly. However the bytes frame,
// the app sees only requests the client sent as its own, in order, each
// re-framed so that it parses.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		"GET /items HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /own HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /own HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 39\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /own HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /own HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /own HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /own HTTP/1.1\nHost: x\nContent-Length: 39\n\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer-A: 1\r\n\r\n",
		"GET http://other.example/x HTTP/1.1\r\nHost: other.example\r\n\r\n",
		"GET /_router/../_router/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	app := startRecordingApp(f)
	up := health.NewUpstream(&url.URL{Scheme: "http", Host: app.ln.Addr().String()}, health.Primary, 1, nil)
	pinner, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}})
	rt := New(Options{Primary: up, Pinner: pinner, PinTTL: time.Second, UpstreamTimeout: 2 * time.Second, ConnectTimeout: time.Second, AccessLog: io.Discard})
	f.Cleanup(rt.Close)
	front := strings.TrimPrefix(serveRouter(f, rt), "http://")
	// One input at a time: the app's record is shared.
	var serial sync.Mutex

	f.Fuzz(func(t *testing.T, raw []byte) {
		serial.Lock()
		defer serial.Unlock()
		app.take()
		conn, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		conn.Write(raw)
		// Read answers until the router goes quiet, and only then hang up
		// our side: a half-close while requests are in flight would cancel
		// them (the client left) and hide what the router would send on.
		buf := make([]byte, 4096)
		for start := time.Now(); time.Since(start) < 5*time.Second; {
			conn.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			if _, err := conn.Read(buf); err != nil {
				break
			}
		}
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, conn) // until the router closes
		conn.Close()

		// The router has closed the connection, so every request of it has
		// been handled; wait until the app is done with what it was sent.
		waitUntil(t, "the router and the app to finish", func() bool { return rt.Inflight() == 0 && app.busy.Load() == 0 })
		seen, bad := app.take()
		for _, e := range bad {
			t.Errorf("the app could not parse what the router sent: %s (input %q)", e, raw)
		}
		own := clientRequests(raw)
		i := 0
		for _, s := range seen {
			if routerOwn(s) {
				t.Errorf("an admin path reached the app: %q (input %q)", s, raw)
			}
			for i < len(own) && !sameTarget(own[i], s) {
				i++
			}
			if i == len(own) {
				t.Fatalf("the app saw %q, which the client did not send as its own request; the client sent %q (input %q)", s, own, raw)
			}
			i++
		}
	})
}

// routerOwn reports whether the app's request is for a path an app would
// take for /_router/…: decoded, cleaned and compared without case, with or
// without each segment's ';' parameters.
func routerOwn(request string) bool {
	_, target, _ := strings.Cut(request, " ")
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return false
	}
	segments := strings.Split(strings.ReplaceAll(u.Path, "\\", "/"), "/")
	for i, s := range segments {
		segments[i], _, _ = strings.Cut(s, ";")
	}
	for _, p := range []string{u.Path, strings.Join(segments, "/")} {
		p = path.Clean("/" + strings.ReplaceAll(p, "\\", "/"))
		if strings.HasPrefix(strings.ToLower(p)+"/", "/_router/") {
			return true
		}
	}
	return false
}

// sameTarget reports whether the app's request is the client's: the same
// method, path and query. The router sends absolute-form targets as paths,
// and may spell a path's escapes differently: the path compares decoded.
func sameTarget(client, app string) bool {
	cm, ct, _ := strings.Cut(client, " ")
	am, at, _ := strings.Cut(app, " ")
	if cm != am {
		return false
	}
	cu, err1 := url.ParseRequestURI(ct)
	au, err2 := url.ParseRequestURI(at)
	if ct == "*" || at == "*" || err1 != nil || err2 != nil {
		return ct == at
	}
	return cu.Path == au.Path && cu.RawQuery == au.RawQuery
}
