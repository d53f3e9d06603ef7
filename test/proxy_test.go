package test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestForwardingHeaders(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	rt := startRouter(t, baseEnv(primary, replica))
	replicaHost := strings.TrimPrefix(replica.URL, "http://")

	t.Run("behind a front router", func(t *testing.T) {
		h := http.Header{
			"X-Forwarded-For":   {"203.0.113.7"},
			"X-Forwarded-Proto": {"https"},
			"X-Forwarded-Port":  {"443"},
			"X-Request-Start":   {"1700000000123"},
		}
		req, _ := http.NewRequest("GET", rt.URL+"/items", nil)
		req.Host = "www.example.com"
		for k, v := range h {
			req.Header[k] = v
		}
		id := newID(t)
		req.Header.Set("X-Request-Id", id)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := replica.received(id)
		if len(got) != 1 {
			t.Fatalf("replica got %d requests with id %s, want 1", len(got), id)
		}
		in := got[0]
		checks := []struct{ name, got, want string }{
			{"Host", in.Host, replicaHost},
			{"X-Forwarded-Host", in.Header.Get("X-Forwarded-Host"), "www.example.com"},
			{"X-Forwarded-For", in.Header.Get("X-Forwarded-For"), "203.0.113.7, 127.0.0.1"},
			{"X-Forwarded-Proto", in.Header.Get("X-Forwarded-Proto"), "https"},
			{"X-Forwarded-Port", in.Header.Get("X-Forwarded-Port"), "443"},
			{"X-Request-Start", in.Header.Get("X-Request-Start"), "1700000000123"},
			{"X-Request-Id", in.Header.Get("X-Request-Id"), id},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("upstream saw %s %q, want %q", c.name, c.got, c.want)
			}
		}
		if line := rt.logFor(id); field(line, "fwd") != "203.0.113.7" || field(line, "host") != "www.example.com" {
			t.Errorf("log line %q, want fwd=\"203.0.113.7\" host=www.example.com", line)
		}
	})

	t.Run("direct client", func(t *testing.T) {
		for _, bad := range []string{"", "short", "has spaces in it, 0123456789", strings.Repeat("a", 201)} {
			req, _ := http.NewRequest("GET", rt.URL+"/items", nil)
			if bad != "" {
				req.Header.Set("X-Request-Id", bad)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		// The last four requests to the replica carried invalid ids; each
		// must have been given a fresh, valid one.
		replica.mu.Lock()
		reqs := replica.requests[len(replica.requests)-4:]
		replica.mu.Unlock()
		for _, r := range reqs {
			id := r.Header.Get("X-Request-Id")
			if len(id) != 36 || strings.Count(id, "-") != 4 {
				t.Errorf("invalid X-Request-Id replaced by %q, want a generated UUID", id)
			}
			if got := r.Header.Get("X-Forwarded-Proto"); got != "http" {
				t.Errorf("X-Forwarded-Proto = %q for a direct plain-HTTP client, want http", got)
			}
			if got := r.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q for a direct client, want 127.0.0.1", got)
			}
		}
	})

	t.Run("PRESERVE_HOST", func(t *testing.T) {
		env := baseEnv(primary, replica)
		env["PRESERVE_HOST"] = "true"
		keep := startRouter(t, env)
		req, _ := http.NewRequest("GET", keep.URL+"/items", nil)
		req.Host = "www.example.com"
		id := newID(t)
		req.Header.Set("X-Request-Id", id)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := replica.received(id)[0].Host; got != "www.example.com" {
			t.Errorf("with PRESERVE_HOST the upstream saw Host %q, want www.example.com", got)
		}
	})
}

func TestServerSentEventsStream(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	firstSeen := make(chan struct{})
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		// The second event is only sent once the client has the first: a
		// router that buffered would deadlock here until the test times out.
		select {
		case <-firstSeen:
		case <-time.After(10 * time.Second):
			return
		}
		fmt.Fprint(w, "data: two\n\n")
	})
	rt := startRouter(t, baseEnv(primary, replica))
	resp, err := http.Get(rt.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != "data: one\n" {
		t.Fatalf("first event = %q, %v", first, err)
	}
	close(firstSeen)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: two") {
		t.Errorf("second event missing; got %q", rest)
	}
}

// TestLargeBodiesStreamInFlatMemory sends 300 MB up and 300 MB down through
// the router and checks its peak RSS.
func TestLargeBodiesStreamInFlatMemory(t *testing.T) {
	t.Parallel()
	const size = 300 << 20
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprint(w, n)
	})
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		io.Copy(w, io.LimitReader(zeros{}, size))
	})
	rt := startRouter(t, baseEnv(primary, replica))

	resp, body, _ := do(t, "POST", rt.URL+"/upload", io.LimitReader(zeros{}, size), nil)
	if resp.StatusCode != 200 || body != strconv.Itoa(size) {
		t.Errorf("upload: primary counted %q bytes (status %d), want %d", body, resp.StatusCode, size)
	}
	dl, err := http.Get(rt.URL + "/download")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, dl.Body)
	dl.Body.Close()
	if err != nil || n != size {
		t.Errorf("download: got %d bytes (%v), want %d", n, err, size)
	}
	peak := peakRSSKB(t, rt.cmd.Process.Pid)
	t.Logf("router peak RSS after 300 MB each way: %d KB", peak)
	if peak > 120<<10 {
		t.Errorf("router peak RSS %d KB, want under 120 MB", peak)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// peakRSSKB reads VmHWM, the process's peak resident set, from /proc.
func peakRSSKB(t *testing.T, pid int) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestUpstreamTimeout: an endpoint slower than UPSTREAM_TIMEOUT on every
// app. A timeout is not retried: a read and a write each get one 504 after
// one UPSTREAM_TIMEOUT, and each reaches one app once. Nothing is taken
// out: writes succeed afterwards and reads still spread over both
// replicas.
func TestUpstreamTimeout(t *testing.T) {
	t.Parallel()
	primary, a, b := newUpstream(t, "primary"), newUpstream(t, "a"), newUpstream(t, "b")
	hang := func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the router hanging up.
		io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/slow" {
			io.WriteString(w, "fast")
			return
		}
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	for _, u := range []*upstream{primary, a, b} {
		u.handle(hang)
	}
	env := baseEnv(primary, a, b)
	const timeout = 700 * time.Millisecond
	env["UPSTREAM_TIMEOUT"] = timeout.String()
	rt := startRouter(t, env)

	for _, method := range []string{"POST", "GET"} {
		start := time.Now()
		resp, body, id := do(t, method, rt.URL+"/slow", strings.NewReader(""), nil)
		took := time.Since(start)
		t.Logf("%s of a slow endpoint: %d after %s", method, resp.StatusCode, took.Round(time.Millisecond))
		if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, id) {
			t.Errorf("%s of a slow endpoint: %d %q, want 504 naming the request id", method, resp.StatusCode, body)
		}
		if n := len(primary.received(id)) + len(a.received(id)) + len(b.received(id)); n != 1 {
			t.Errorf("%s of a slow endpoint was sent %d times, want once", method, n)
		}
		line := rt.logFor(id)
		if !strings.HasPrefix(line, "at=error code=upstream_timeout") || field(line, "retries") != "0" || field(line, "failure") != "timeout" || field(line, "status") != "504" {
			t.Errorf("log line %q, want at=error code=upstream_timeout, retries=0, failure=timeout, status=504", line)
		}
		// One UPSTREAM_TIMEOUT, with room for a loaded machine; trying the
		// three apps in turn would take three.
		if took > timeout+timeout*3/2 {
			t.Errorf("%s took %s, want about one UPSTREAM_TIMEOUT (%s)", method, took, timeout)
		}
	}
	resp, _, _ := do(t, "POST", rt.URL+"/items", strings.NewReader("x"), nil)
	if resp.StatusCode != 200 {
		t.Errorf("a write after the timeouts: %d, want 200", resp.StatusCode)
	}
	served := map[string]int{}
	for range 10 {
		resp, _, _ := do(t, "GET", rt.URL+"/items", nil, nil)
		served[resp.Header.Get("X-Served-By")]++
	}
	if served["a"] != 5 || served["b"] != 5 {
		t.Errorf("reads after the timeouts served by %v, want 5 each by a and b", served)
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + ln.Addr().String()
	ln.Close()
	env := map[string]string{"PRIMARY_URL": deadURL, "COOKIE_SECRET": secret}
	rt := startRouter(t, env)
	resp, body, id := do(t, "POST", rt.URL+"/items", strings.NewReader("x"), nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("dead primary: status %d, want 502", resp.StatusCode)
	}
	if !strings.Contains(body, id) || strings.Contains(body, "127.0.0.1") || strings.Contains(body, "dial") {
		t.Errorf("error body %q should name the request id and no address or Go error", body)
	}
	if pinCookie(resp) != nil {
		t.Error("a write that failed in the router set a pin")
	}
	if line := rt.logFor(id); !strings.HasPrefix(line, "at=error code=upstream_error") {
		t.Errorf("log line %q, want at=error code=upstream_error", line)
	}
}

func TestUpstreamDiesMidResponse(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial body")
		buf.Flush()
		conn.Close()
	})
	rt := startRouter(t, baseEnv(primary, replica))
	req, _ := http.NewRequest("GET", rt.URL+"/crash", nil)
	id := newID(t)
	req.Header.Set("X-Request-Id", id)
	// The router may cut the connection before or after its headers leave;
	// either way the client must see an error, never a short body as whole.
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading a body cut short upstream: err = %v, want unexpected EOF", err)
		}
	}
	if line := rt.logFor(id); !strings.HasPrefix(line, "at=error code=upstream_aborted") {
		t.Errorf("log line %q, want at=error code=upstream_aborted", line)
	}
}

func TestClientGoneIsLogged(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	arrived, cancelled := make(chan struct{}), make(chan struct{})
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})
	rt := startRouter(t, baseEnv(primary, replica))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", rt.URL+"/slow", nil)
	id := newID(t)
	req.Header.Set("X-Request-Id", id)
	go func() {
		<-arrived
		cancel()
	}()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("request succeeded after cancel")
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the upstream request was not cancelled when the client left")
	}
	line := rt.logFor(id)
	if !strings.HasPrefix(line, "at=error code=client_gone") || field(line, "status") != "499" {
		t.Errorf("log line %q, want at=error code=client_gone ... status=499", line)
	}
}

// TestTrailersAndBodilessResponses: a chunked response's trailer fields
// follow its body to the client; HEAD, 204 and 304 answers keep their
// heads and carry no body, and the connection goes on serving.
func TestTrailersAndBodilessResponses(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailer":
			w.Header().Set("Trailer", "X-Checksum")
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Checksum", "abc123")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/cached":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello world")
		}
	})
	rt := startRouter(t, baseEnv(primary, replica))
	client := &http.Client{}

	resp, err := client.Get(rt.URL + "/trailer")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "body" || resp.Trailer.Get("X-Checksum") != "abc123" {
		t.Errorf("chunked response: body %q, trailer %v; want \"body\" and X-Checksum: abc123", body, resp.Trailer)
	}

	for _, tc := range []struct {
		method, path string
		status       int
		header       string
	}{
		{"HEAD", "/items", 200, "Content-Length"},
		{"GET", "/empty", 204, ""},
		{"GET", "/cached", 304, "Etag"},
		{"GET", "/items", 200, "Content-Length"},
	} {
		req, _ := http.NewRequest(tc.method, rt.URL+tc.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
		if tc.header != "" && resp.Header.Get(tc.header) == "" && !(tc.header == "Content-Length" && resp.ContentLength == 11) {
			t.Errorf("%s %s: no %s header in %v", tc.method, tc.path, tc.header, resp.Header)
		}
		if want := map[string]string{"GET /items": "hello world"}[tc.method+" "+tc.path]; string(body) != want {
			t.Errorf("%s %s: body %q, want %q", tc.method, tc.path, body, want)
		}
	}
}

// TestExpectContinue: a client that asks before sending its body gets 100
// Continue, sends the body, and gets the app's answer to all of it.
func TestExpectContinue(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %d bytes", len(b))
	})
	rt := startRouter(t, baseEnv(primary))
	conn := rt.dial()
	defer conn.Close()
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 Continue") {
		t.Fatalf("before the body: %q, %v; want 100 Continue", line, err)
	}
	br.ReadString('\n') // the interim response's empty line
	io.WriteString(conn, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "got 5 bytes" {
		t.Errorf("after the body: %d %q, want 200 \"got 5 bytes\"", resp.StatusCode, body)
	}
}

// TestRequestStartIsAdded: without a front router's X-Request-Start, the
// app gets the router's own arrival time, t=<microseconds>, so that APM
// queue time works outside Heroku; Heroku's is passed on as it came.
func TestRequestStartIsAdded(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	rt := startRouter(t, baseEnv(primary))
	before := time.Now()
	_, _, id := do(t, "GET", rt.URL+"/items", nil, nil)
	got := primary.received(id)[0].Header.Get("X-Request-Start")
	micros, err := strconv.ParseInt(strings.TrimPrefix(got, "t="), 10, 64)
	if !strings.HasPrefix(got, "t=") || err != nil {
		t.Fatalf("X-Request-Start %q, want t=<microseconds since the epoch>", got)
	}
	if at := time.UnixMicro(micros); at.Before(before.Add(-time.Second)) || at.After(time.Now()) {
		t.Errorf("X-Request-Start says %s, want the request's arrival (%s)", at, before)
	}
	_, _, id = do(t, "GET", rt.URL+"/items", nil, http.Header{"X-Request-Start": {"1700000000123"}})
	if got := primary.received(id)[0].Header.Get("X-Request-Start"); got != "1700000000123" {
		t.Errorf("Heroku's X-Request-Start reached the app as %q", got)
	}
}
