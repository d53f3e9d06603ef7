package test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var panicBinary struct {
	once sync.Once
	path string
	err  error
}

// startPanickyRouter runs the router built with the routerpanic tag, which
// panics where a request's X-Router-Test-Panic header says.
func startPanickyRouter(t *testing.T, env map[string]string) *routerProc {
	t.Helper()
	panicBinary.once.Do(func() {
		panicBinary.path = filepath.Join(filepath.Dir(binary), "router-panic")
		build := exec.Command("go", "build", "-tags", "routerpanic", "-o", panicBinary.path, "..")
		out, err := build.CombinedOutput()
		if err != nil {
			panicBinary.err = fmt.Errorf("building with -tags routerpanic: %v\n%s", err, out)
		}
	})
	if panicBinary.err != nil {
		t.Fatal(panicBinary.err)
	}
	return startBinary(t, panicBinary.path, env)
}

// TestPanicCostsOneRequest: a panic while serving a request, or while
// relaying its body, is logged at error with the request id, counted, and
// closes that request's connection; the router serves on.
func TestPanicCostsOneRequest(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("b", 64<<10)) // streamed: over 16 KB
	})
	env := baseEnv(primary)
	env["ADMIN_TOKEN"] = adminToken
	rt := startPanickyRouter(t, env)
	for i, where := range []string{"serve", "body"} {
		id := newID(t)
		conn := rt.dial()
		fmt.Fprintf(conn, "GET /items HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nX-Router-Test-Panic: %s\r\n\r\n", id, where)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(bufio.NewReader(conn))
		if err != nil && !isConnReset(err) {
			t.Fatalf("panic in %s: reading: %v", where, err)
		}
		if where == "serve" && len(got) != 0 {
			t.Errorf("panic in %s: the client read %q, want the connection closed", where, got)
		}
		if where == "body" && strings.HasSuffix(string(got), strings.Repeat("b", 64<<10)) {
			t.Errorf("panic in %s: the client read the whole body, want it cut", where)
		}
		line, ok := rt.waitLog(`at=error msg="panic [^"]*".*request_id=`+id, 5*time.Second)
		if !ok || !strings.Contains(line, "injected panic ("+where+")") || !strings.Contains(line, "stack=") {
			t.Errorf("panic in %s: logged %q, want at=error with the request id, the panic and its stack", where, line)
		}
		if n := scrape(t, rt.URL+"/_router/metrics")["router_panics_total"]; n != float64(i+1) {
			t.Errorf("router_panics_total = %v after %d panics", n, i+1)
		}
		// The router serves on.
		if resp, body, _ := do(t, "GET", rt.URL+"/items", nil, nil); resp.StatusCode != 200 || len(body) != 64<<10 {
			t.Errorf("after a panic in %s: %d with %d bytes, want 200", where, resp.StatusCode, len(body))
		}
	}
	if m := scrape(t, rt.URL+"/_router/metrics"); m["router_inflight_requests"] != 0 {
		t.Errorf("router_inflight_requests = %v after the panics, want 0", m["router_inflight_requests"])
	}
}
