package test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSigtermDrainsInFlightRequests(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	arrived, release := make(chan struct{}), make(chan struct{})
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		io.WriteString(w, "finished")
	})
	rt := startRouter(t, baseEnv(primary, replica))

	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(rt.URL + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), err}
	}()
	<-arrived
	rt.signal(syscall.SIGTERM)
	if _, ok := rt.waitLog(`msg="shutting down"`, 5*time.Second); !ok {
		t.Fatal("router did not log shutting down")
	}
	// The listener is closed at once: new connections are refused while
	// the slow request is still in flight.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+rt.Port, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("router still accepts connections after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	r := <-done
	if r.err != nil || r.status != 200 || r.body != "finished" {
		t.Errorf("in-flight request: %d %q %v, want 200 finished", r.status, r.body, r.err)
	}
	if code := rt.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func TestShutdownTimeoutCutsStragglers(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	arrived := make(chan struct{})
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	})
	env := baseEnv(primary, replica)
	env["SHUTDOWN_TIMEOUT"] = "300ms"
	rt := startRouter(t, env)
	go func() {
		if resp, err := http.Get(rt.URL + "/hang"); err == nil {
			resp.Body.Close()
		}
	}()
	<-arrived
	start := time.Now()
	rt.signal(syscall.SIGINT)
	if code := rt.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if _, ok := rt.waitLog(`at=warn msg="requests still in flight`, time.Second); !ok {
		t.Error("no warning about requests cut at SHUTDOWN_TIMEOUT")
	}
	t.Logf("exited %s after SIGINT with SHUTDOWN_TIMEOUT=300ms", time.Since(start).Round(time.Millisecond))
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	valid := map[string]string{"PRIMARY_URL": "http://127.0.0.1:1", "COOKIE_SECRET": secret}
	tests := []struct {
		name string
		set  map[string]string
		want []string // each must appear in stderr
	}{
		{"nothing set", map[string]string{"PRIMARY_URL": "", "COOKIE_SECRET": ""},
			[]string{"PRIMARY_URL is required", "COOKIE_SECRET is required", "e.g. PRIMARY_URL=https://"}},
		{"primary not a URL", map[string]string{"PRIMARY_URL": "myapp.herokuapp.com"}, []string{"PRIMARY_URL", "http:// or https://"}},
		{"primary with query", map[string]string{"PRIMARY_URL": "http://a.example.com/?x=1"}, []string{"PRIMARY_URL", "query"}},
		{"replica bad", map[string]string{"REPLICA_URLS": "http://ok.example.com,ftp://bad"}, []string{"REPLICA_URLS", "ftp://bad"}},
		{"replica bad weight", map[string]string{"REPLICA_URLS": "http://a.example.com weight=0"}, []string{"REPLICA_URLS", "weight=N"}},
		{"short secret", map[string]string{"COOKIE_SECRET": "tooshort"}, []string{"COOKIE_SECRET key 1 is 8 bytes", "at least 32"}},
		{"short rotated secret", map[string]string{"COOKIE_SECRET": secret + ",short"}, []string{"COOKIE_SECRET key 2 is 5 bytes"}},
		{"ttl not a duration", map[string]string{"PIN_TTL": "five"}, []string{`PIN_TTL="five" is not a valid duration`, "e.g. PIN_TTL=5s"}},
		{"ttl without unit", map[string]string{"PIN_TTL": "5"}, []string{`PIN_TTL="5"`}},
		{"ttl zero", map[string]string{"PIN_TTL": "0s"}, []string{"PIN_TTL=0s must be greater than zero"}},
		{"ttl too long", map[string]string{"PIN_TTL": "2h"}, []string{"PIN_TTL=2h0m0s is longer than"}},
		{"timeout negative", map[string]string{"UPSTREAM_TIMEOUT": "-1s"}, []string{"UPSTREAM_TIMEOUT=-1s must be greater than zero"}},
		{"connect timeout", map[string]string{"CONNECT_TIMEOUT": "soon"}, []string{"CONNECT_TIMEOUT"}},
		{"shutdown timeout", map[string]string{"SHUTDOWN_TIMEOUT": "0"}, []string{"SHUTDOWN_TIMEOUT"}},
		{"port", map[string]string{"PORT": "http"}, []string{`PORT="http" is not a valid whole number`}},
		{"port range", map[string]string{"PORT": "70000"}, []string{"PORT=70000 is out of range"}},
		{"preserve host", map[string]string{"PRESERVE_HOST": "yes please"}, []string{`PRESERVE_HOST="yes please" is not a valid boolean`}},
		{"cookie name", map[string]string{"COOKIE_NAME": "pin cookie"}, []string{"COOKIE_NAME", "not a valid cookie name"}},
		{"primary paths", map[string]string{"PRIMARY_PATHS": "admin/"}, []string{"PRIMARY_PATHS", `must start with "/"`}},
		{"read paths", map[string]string{"READ_PATHS": "/a*b"}, []string{"READ_PATHS", "whole segment"}},
		{"health fall", map[string]string{"HEALTH_FALL": "0"}, []string{"HEALTH_FALL=0 is out of range 1-100"}},
		{"health rise", map[string]string{"HEALTH_RISE": "many"}, []string{`HEALTH_RISE="many" is not a valid whole number`}},
		{"health path", map[string]string{"HEALTH_CHECK_PATH": "up"}, []string{"HEALTH_CHECK_PATH", `starting with "/"`}},
		{"health interval", map[string]string{"HEALTH_CHECK_INTERVAL": "0s"}, []string{"HEALTH_CHECK_INTERVAL=0s must be greater than zero"}},
		{"health timeout", map[string]string{"HEALTH_CHECK_TIMEOUT": "2"}, []string{"HEALTH_CHECK_TIMEOUT"}},
		{"eject duration", map[string]string{"EJECT_DURATION": "-5s"}, []string{"EJECT_DURATION"}},
		{"eject after 5xx", map[string]string{"EJECT_AFTER_5XX": "-1"}, []string{"EJECT_AFTER_5XX=-1 is out of range"}},
		{"read limit", map[string]string{"PRIMARY_READ_LIMIT": "-1"}, []string{"PRIMARY_READ_LIMIT=-1 is out of range"}},
		{"read share", map[string]string{"READ_SHARE": "150"}, []string{"READ_SHARE=150 is out of range 0-100"}},
		{"balance", map[string]string{"BALANCE": "random"}, []string{`BALANCE="random" is neither round_robin nor least_outstanding`}},
		{"admin token", map[string]string{"ADMIN_TOKEN": "short"}, []string{"ADMIN_TOKEN is 5 bytes"}},
		{"metrics addr", map[string]string{"METRICS_ADDR": "9090"}, []string{`METRICS_ADDR="9090" is not host:port`}},
		{"log format", map[string]string{"LOG_FORMAT": "xml"}, []string{`LOG_FORMAT="xml" is neither logfmt nor json`}},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, []string{`LOG_LEVEL="loud" is not one of debug, info, warn, error`}},
		{"max connections", map[string]string{"MAX_CONNECTIONS": "0"}, []string{"MAX_CONNECTIONS=0 is out of range"}},
		{"header timeout", map[string]string{"REQUEST_HEADER_TIMEOUT": "never"}, []string{`REQUEST_HEADER_TIMEOUT="never"`}},
		{"tls skip verify", map[string]string{"UPSTREAM_TLS_INSECURE_SKIP_VERIFY": "maybe"}, []string{`UPSTREAM_TLS_INSECURE_SKIP_VERIFY="maybe" is not a valid boolean`}},
		{"follower without primary db", map[string]string{"REPLICA_URLS": "http://a.example.com", "REPLICA_DATABASE_URLS": "postgres://f/db"}, []string{"PRIMARY_DATABASE_URL is required with REPLICA_DATABASE_URLS"}},
		{"primary db without followers", map[string]string{"PRIMARY_DATABASE_URL": "postgres://p/db"}, []string{"REPLICA_DATABASE_URLS is required with PRIMARY_DATABASE_URL"}},
		{"database url scheme", map[string]string{"REPLICA_URLS": "http://a.example.com", "PRIMARY_DATABASE_URL": "mysql://p/db", "REPLICA_DATABASE_URLS": "postgres://f/db"}, []string{"PRIMARY_DATABASE_URL must be postgres:// URLs"}},
		{"follower count", map[string]string{"REPLICA_URLS": "http://a.example.com,http://b.example.com,http://c.example.com", "PRIMARY_DATABASE_URL": "postgres://p/db", "REPLICA_DATABASE_URLS": "postgres://f1/db,postgres://f2/db"}, []string{"REPLICA_DATABASE_URLS has 2 URLs for 3 REPLICA_URLS"}},
		{"lag without databases", map[string]string{"MAX_REPLICA_LAG": "30s"}, []string{"MAX_REPLICA_LAG needs PRIMARY_DATABASE_URL"}},
		{"lag poll interval", map[string]string{"LAG_POLL_INTERVAL": "0s"}, []string{"LAG_POLL_INTERVAL=0s must be greater than zero"}},
		{"two problems at once", map[string]string{"PIN_TTL": "x", "PORT": "-5"}, []string{"PIN_TTL", "PORT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range valid {
				env[k] = v
			}
			for k, v := range tt.set {
				env[k] = v
			}
			p := launch(t, env)
			code := p.waitExit(10 * time.Second)
			stderr := p.Stderr()
			if code != 2 {
				t.Errorf("exit code %d, want 2; stderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr)
				}
			}
			if len(p.Lines()) != 0 {
				t.Errorf("router wrote to stdout before failing: %q", p.Lines())
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	p := launch(t, nil, "serve-please")
	if code := p.waitExit(10 * time.Second); code != 2 || !strings.Contains(p.Stderr(), "usage: router [demo | stats]") {
		t.Errorf("exit %d, stderr %q; want 2 and a usage line", code, p.Stderr())
	}
}

// TestDemo runs the demo with no configuration at all and walks the
// newcomer's path from the README.
func TestDemo(t *testing.T) {
	t.Parallel()
	rt := startRouter(t, nil, "demo")
	if _, ok := rt.waitLog(`curl -s -b /tmp/router-demo-pin http://127.0.0.1:\d+/notes`, 5*time.Second); !ok {
		t.Error("demo did not print the curl commands with its port")
	}
	resp, body, _ := do(t, "POST", rt.URL+"/notes", strings.NewReader("text=hello+demo"),
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
	pin := pinCookie(resp)
	if resp.StatusCode != 201 || pin == nil {
		t.Fatalf("POST /notes: %d %q, pin %v; want 201 and a pin", resp.StatusCode, body, pin)
	}
	_, pinned, _ := do(t, "GET", rt.URL+"/notes", nil, http.Header{"Cookie": {pin.String()}})
	if !strings.Contains(pinned, "hello demo") || !strings.Contains(pinned, "primary") {
		t.Errorf("read with the pin = %q, want the note, from the primary", pinned)
	}
	_, stale, _ := do(t, "GET", rt.URL+"/notes", nil, nil)
	if strings.Contains(stale, "hello demo") || !strings.Contains(stale, "replica") {
		t.Errorf("read without the pin right after the write = %q, want the follower's stale view", stale)
	}
	// The follower catches up after the demo's lag.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, fresh, _ := do(t, "GET", rt.URL+"/notes", nil, nil)
		if strings.Contains(fresh, "hello demo") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower never showed the note: %q", fresh)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, body, _ = do(t, "POST", rt.URL+"/notes", nil, nil)
	if resp.StatusCode != 400 {
		t.Errorf("empty note: %d %q, want 400 from the primary", resp.StatusCode, body)
	}
}

// TestSameHostTwice starts a router whose primary and replicas share one
// address, as benchmarks and small setups do.
func TestSameHostTwice(t *testing.T) {
	t.Parallel()
	app := newUpstream(t, "app")
	env := baseEnv(app, app, app)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	m := scrape(t, rt.URL+"/_router/metrics")
	host := strings.TrimPrefix(app.URL, "http://")
	for _, key := range []string{
		`router_upstream_up{backend="` + host + `",role="primary"}`,
		`router_upstream_up{backend="` + host + `#2",role="replica"}`,
		`router_upstream_up{backend="` + host + `#3",role="replica"}`,
	} {
		if m[key] != 1 {
			t.Errorf("%s = %v, want 1", key, m[key])
		}
	}
}

// TestDemoShowsItsStatusPage: the demo makes its own admin token and
// prints the status page's URL with it; the page answers and Chromium
// renders it. ADMIN_TOKEN, when set, is the demo's token.
func TestDemoShowsItsStatusPage(t *testing.T) {
	t.Parallel()
	rt := startRouter(t, nil, "demo")
	line, ok := rt.waitLog(`^\s*http://demo:[0-9a-f]{32}@127\.0\.0\.1:\d+/_router/status$`, 5*time.Second)
	if !ok {
		t.Fatal("the demo did not print the status page's URL with its token")
	}
	page := strings.TrimSpace(line)
	u, err := url.Parse(page)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := u.User.Password()
	if _, ok := rt.waitLog(`curl -s -H 'Authorization: Bearer `+token+`' http://127\.0\.0\.1:\d+/_router/metrics`, time.Second); !ok {
		t.Error("the demo did not print a curl line for the metrics with its token")
	}
	req, _ := http.NewRequest("GET", "http://"+u.Host+u.Path, nil)
	req.SetBasicAuth("demo", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "router status") {
		t.Fatalf("the printed status URL: %d %s, want the HTML page", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	m := scrapeWith(t, rt.URL+"/_router/metrics", token)
	if _, ok := m["router_inflight_requests"]; !ok {
		t.Error("the metrics did not answer with the demo's token")
	}
	dom := string(chromium(t, requireChromium(t), page)("--dump-dom"))
	if !strings.Contains(dom, "router status") || !strings.Contains(dom, "Reads served by replicas") {
		t.Errorf("Chromium did not render the demo's status page:\n%.500s", dom)
	}

	mine := startRouter(t, map[string]string{"ADMIN_TOKEN": adminToken}, "demo")
	if _, ok := mine.waitLog(`http://demo:`+adminToken+`@127\.0\.0\.1:\d+/_router/status`, 5*time.Second); !ok {
		t.Error("the demo did not take ADMIN_TOKEN from the environment")
	}
}

// TestRouterEndpointsSayWhatTurnsThemOn: without ADMIN_TOKEN, the guarded
// endpoints say they are turned off and how to turn them on.
func TestRouterEndpointsSayWhatTurnsThemOn(t *testing.T) {
	t.Parallel()
	rt := startRouter(t, baseEnv(newUpstream(t, "primary")))
	for _, path := range []string{"/_router/status", "/_router/metrics"} {
		resp, body, _ := do(t, "GET", rt.URL+path, nil, nil)
		if resp.StatusCode != 404 || !strings.Contains(body, path+" is turned off") || !strings.Contains(body, "set ADMIN_TOKEN") {
			t.Errorf("%s without ADMIN_TOKEN: %d %q, want 404 saying ADMIN_TOKEN turns it on", path, resp.StatusCode, body)
		}
	}
	resp, body, _ := do(t, "GET", rt.URL+"/_router/nothing", nil, nil)
	if resp.StatusCode != 404 || !strings.Contains(body, "no such router endpoint") {
		t.Errorf("/_router/nothing: %d %q, want 404 no such router endpoint", resp.StatusCode, body)
	}
}
