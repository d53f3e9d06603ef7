package test

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRoutingRules(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	env := baseEnv(primary, replica)
	env["PRIMARY_PATHS"] = "/admin/,/auth/*/callback"
	env["READ_PATHS"] = "POST /search"
	rt := startRouter(t, env)

	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}
	tests := []struct {
		method, path string
		header       http.Header
		wantServer   string
		wantReason   string
		wantPin      bool
	}{
		{"GET", "/items", nil, "replica", "read", false},
		{"HEAD", "/items", nil, "replica", "read", false},
		{"OPTIONS", "/items", nil, "replica", "read", false},
		{"POST", "/items", nil, "primary", "write", true},
		{"PUT", "/items/1", nil, "primary", "write", true},
		{"PATCH", "/items/1", nil, "primary", "write", true},
		{"DELETE", "/items/1", nil, "primary", "write", true},
		{"GET", "/admin/users", nil, "primary", "path_rule", false},
		{"GET", "/administrator", nil, "replica", "read", false},
		{"GET", "/auth/github/callback", nil, "primary", "path_rule", false},
		{"POST", "/search", nil, "replica", "read", false},
		{"PUT", "/search", nil, "primary", "write", true},
		{"GET", "/cable", upgrade, "primary", "upgrade", false},
	}
	for _, tt := range tests {
		resp, _, id := do(t, tt.method, rt.URL+tt.path, nil, tt.header)
		if got := resp.Header.Get("X-Served-By"); got != tt.wantServer {
			t.Errorf("%s %s served by %q, want %q", tt.method, tt.path, got, tt.wantServer)
		}
		line := rt.logFor(id)
		if got := field(line, "reason"); got != tt.wantReason {
			t.Errorf("%s %s: reason=%s, want %s", tt.method, tt.path, got, tt.wantReason)
		}
		if got := field(line, "upstream"); got != tt.wantServer {
			t.Errorf("%s %s: upstream=%s, want %s", tt.method, tt.path, got, tt.wantServer)
		}
		if gotPin := resp.Header.Get("Set-Cookie") != ""; gotPin != tt.wantPin {
			t.Errorf("%s %s: pin cookie set = %v, want %v", tt.method, tt.path, gotPin, tt.wantPin)
		}
	}
}

func TestReadsGoToPrimaryWithoutReplicas(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	rt := startRouter(t, baseEnv(primary))
	resp, _, id := do(t, "GET", rt.URL+"/items", nil, nil)
	if got := resp.Header.Get("X-Served-By"); got != "primary" {
		t.Errorf("served by %q, want primary", got)
	}
	if got := field(rt.logFor(id), "reason"); got != "no_replica" {
		t.Errorf("reason=%s, want no_replica", got)
	}
}

func TestReplicasRoundRobin(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	rt := startRouter(t, baseEnv(primary, a, b))
	seen := map[string]int{}
	for range 10 {
		resp, _, _ := do(t, "GET", rt.URL+"/", nil, nil)
		seen[resp.Header.Get("X-Served-By")]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Errorf("10 reads were served %v, want 5 each by a and b", seen)
	}
}

func TestRouterPathsAreNeverProxied(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	rt := startRouter(t, baseEnv(primary, replica))

	resp, body, _ := do(t, "GET", rt.URL+"/_router/health", nil, nil)
	if resp.StatusCode != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/_router/health = %d %q, want 200 ok", resp.StatusCode, body)
	}
	for _, path := range []string{"/_router/nothing", "/_ROUTER/health", "/_Router/metrics", "/_router/%2e%2e/items"} {
		resp, _, _ := do(t, "GET", rt.URL+path, nil, nil)
		if resp.Header.Get("X-Served-By") != "" {
			t.Errorf("%s was proxied to %s", path, resp.Header.Get("X-Served-By"))
		}
	}
	// Go's client cleans "//" and ".." out of URLs; send them raw.
	for _, target := range []string{"//_router/health", "/x/../_router/status", "/./_router/metrics"} {
		status, served := rawGet(t, rt.Port, target)
		if served != "" {
			t.Errorf("%s was proxied to %s (status %d)", target, served, status)
		}
	}
	if n := primary.count() + replica.count(); n != 0 {
		t.Errorf("upstreams received %d requests for router paths, want 0", n)
	}
}

// rawGet sends a request line exactly as given and returns the status and
// X-Served-By.
func rawGet(t *testing.T, port, target string) (int, string) {
	t.Helper()
	return rawRequest(t, port, "GET", target)
}

// rawRequest is rawGet for any method, with an empty body.
func rawRequest(t *testing.T, port, method, target string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(method + " " + target + " HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Served-By")
}

func TestConnectIsRefused(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	rt := startRouter(t, baseEnv(primary))
	conn := rt.dial()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("CONNECT got %d, want 405", resp.StatusCode)
	}
	if primary.count() != 0 {
		t.Error("CONNECT reached the primary")
	}
}

// TestUpgradeIsProxied carries a WebSocket-style upgrade through to the
// primary and echoes bytes both ways over the switched connection.
func TestUpgradeIsProxied(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		buf.Flush()
		line, _ := buf.ReadString('\n')
		buf.WriteString("echo: " + line)
		buf.Flush()
	})
	rt := startRouter(t, baseEnv(primary, replica))
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+rt.Port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("GET /cable HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Request-Id: upgrade-test-0123456789\r\n\r\n"))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %v, %v; want 101", resp, err)
	}
	conn.Write([]byte("ping\n"))
	got, err := br.ReadString('\n')
	if err != nil || got != "echo: ping\n" {
		t.Errorf("over the upgraded connection got %q, %v; want the primary's echo", got, err)
	}
	conn.Close()
	line := rt.logFor("upgrade-test-0123456789")
	if field(line, "status") != "101" || field(line, "reason") != "upgrade" || field(line, "upstream") != "primary" {
		t.Errorf("log line %q, want status=101 reason=upgrade upstream=primary", line)
	}
}
