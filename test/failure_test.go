package test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSlowUploadIsNotATimeout: UPSTREAM_TIMEOUT runs from the moment the
// whole request is sent. An upload that takes three times as long to send,
// to an app that answers as soon as it has it, succeeds.
func TestSlowUploadIsNotATimeout(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	env := baseEnv(primary, replica)
	env["UPSTREAM_TIMEOUT"] = "300ms"
	rt := startRouter(t, env)

	pr, pw := io.Pipe()
	go func() {
		chunk := strings.Repeat("u", 10<<10)
		for range 30 { // 300 KB over about 900 ms
			if _, err := io.WriteString(pw, chunk); err != nil {
				return
			}
			time.Sleep(30 * time.Millisecond)
		}
		pw.Close()
	}()
	start := time.Now()
	resp, body, id := do(t, "POST", rt.URL+"/upload", pr, nil)
	t.Logf("upload sent in %s", time.Since(start).Round(time.Millisecond))
	if resp.StatusCode != 200 || !strings.Contains(body, "primary POST /upload") {
		t.Errorf("slow upload: %d %q, want 200 from the primary", resp.StatusCode, body)
	}
	if line := rt.logFor(id); field(line, "failure") != "" || strings.HasPrefix(line, "at=error") {
		t.Errorf("log line %q, want a plain success", line)
	}
}

// TestMalformedChunkedBodyIs400: a client's broken framing is the client's
// failure: 400 at once, without waiting for the app, and nothing counted
// against the app.
func TestMalformedChunkedBodyIs400(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	env := baseEnv(primary)
	env["UPSTREAM_TIMEOUT"] = "60s"
	rt := startRouter(t, env)
	id := newID(t)
	conn := rt.dial()
	// Well within UPSTREAM_TIMEOUT: waiting for the app would fail here.
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "POST /items HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", id)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a malformed chunked body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed chunked body: %d, want 400", resp.StatusCode)
	}
	line := rt.logFor(id)
	if field(line, "code") != "client_error" || field(line, "failure") != "client" || field(line, "status") != "400" {
		t.Errorf("log line %q, want code=client_error failure=client status=400", line)
	}
	resp, _, _ = do(t, "POST", rt.URL+"/items", strings.NewReader("x"), nil)
	if resp.StatusCode != 200 {
		t.Errorf("the next write: %d, want 200", resp.StatusCode)
	}
}

// TestClientLeavesMidUpload: a client that stops sending and hangs up is
// logged as 499 client_gone, its failure is the client's, and the app
// is not blamed.
func TestClientLeavesMidUpload(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	env := baseEnv(primary)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	id := newID(t)
	conn := rt.dial()
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nContent-Length: 100000\r\n\r\n%s", id, strings.Repeat("p", 1000))
	// Wait for the request to reach the app, so the router is mid-send.
	waitFor(t, "the upload to reach the app", func() bool { return len(primary.received(id)) == 1 })
	conn.Close()
	line := rt.logFor(id)
	if field(line, "code") != "client_gone" || field(line, "status") != "499" || field(line, "failure") != "client" {
		t.Errorf("log line %q, want code=client_gone status=499 failure=client", line)
	}
	backend := strings.TrimPrefix(primary.URL, "http://")
	m := scrape(t, rt.URL+"/_router/metrics")
	if got := m[`router_upstream_failures_total{backend="`+backend+`",class="client"}`]; got != 1 {
		t.Errorf("client failures counted for the primary: %v, want 1", got)
	}
	for _, class := range []string{"connect", "reset", "timeout", "bad_response", "aborted"} {
		if got := m[`router_upstream_failures_total{backend="`+backend+`",class="`+class+`"}`]; got != 0 {
			t.Errorf("the client leaving counted %v %s failures against the app", got, class)
		}
	}
	if status := adminJSON(t, rt); strings.Contains(status, "last_failure") {
		t.Errorf("status page shows a failure of the app: %s", status)
	}
}

// adminJSON returns the status page as JSON.
func adminJSON(t *testing.T, rt *routerProc) string {
	t.Helper()
	req, _ := http.NewRequest("GET", rt.URL+"/_router/status", nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
