// Package test holds the end-to-end tests: they build the router binary and
// run it as a process in front of real upstream servers on 127.0.0.1.
package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/splitapp/router/health"
)

// secret is the COOKIE_SECRET the tests' routers share.
const secret = "test-secret-0123456789abcdef0123456789"

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "router-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "router")
	args := []string{"build", "-o", binary}
	if os.Getenv("ROUTER_E2E_RACE") != "" {
		// The binary itself under the race detector: test/run.sh runs the
		// fault tests this way; a race fails the test that saw it.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "..")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the router:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// routerProc is a running router binary.
type routerProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	URL  string
	Port string

	mu     sync.Mutex
	lines  []string
	stderr strings.Builder
	update chan struct{}
	exited chan struct{}
}

var listeningRE = regexp.MustCompile(`"?msg"?[=:]"?listening"?[ ,]"?port"?[=:](\d+)`)

// startRouter runs the binary with env (PORT=0 unless given) and waits until
// it listens. The process is killed when the test ends.
func startRouter(t *testing.T, env map[string]string, args ...string) *routerProc {
	t.Helper()
	return startBinary(t, binary, env, args...)
}

// startBinary is startRouter for another build of the router.
func startBinary(t *testing.T, bin string, env map[string]string, args ...string) *routerProc {
	t.Helper()
	p := launchBinary(t, bin, env, args...)
	line, ok := p.waitLog(listeningRE.String(), 10*time.Second)
	if !ok {
		t.Fatalf("router did not start listening; stderr:\n%s\nstdout:\n%s", p.Stderr(), strings.Join(p.Lines(), "\n"))
	}
	p.Port = listeningRE.FindStringSubmatch(line)[1]
	p.URL = "http://127.0.0.1:" + p.Port
	return p
}

// launch starts the binary without waiting for it.
func launch(t *testing.T, env map[string]string, args ...string) *routerProc {
	t.Helper()
	return launchBinary(t, binary, env, args...)
}

func launchBinary(t *testing.T, bin string, env map[string]string, args ...string) *routerProc {
	t.Helper()
	p := &routerProc{t: t, update: make(chan struct{}, 1), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "PORT=0"}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.update <- struct{}{}:
			default:
			}
		}
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if strings.Contains(p.Stderr(), "WARNING: DATA RACE") {
			t.Errorf("the router binary reported a data race:\n%s", p.Stderr())
		}
		if t.Failed() {
			t.Logf("router log:\n%s\nstderr:\n%s", strings.Join(p.Lines(), "\n"), p.Stderr())
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (p *routerProc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

func (p *routerProc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLog waits for a stdout line matching the regular expression.
func (p *routerProc) waitLog(pattern string, timeout time.Duration) (string, bool) {
	re := regexp.MustCompile(pattern)
	deadline := time.After(timeout)
	for {
		for _, l := range p.Lines() {
			if re.MatchString(l) {
				return l, true
			}
		}
		select {
		case <-p.update:
		case <-p.exited:
			for _, l := range p.Lines() {
				if re.MatchString(l) {
					return l, true
				}
			}
			return "", false
		case <-deadline:
			return "", false
		}
	}
}

// dial opens a raw connection to the router, closed when the test ends.
func (p *routerProc) dial() net.Conn {
	p.t.Helper()
	conn, err := net.Dial("tcp", "127.0.0.1:"+p.Port)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { conn.Close() })
	return conn
}

// logFor returns the access log line of the request with the given id.
func (p *routerProc) logFor(requestID string) string {
	p.t.Helper()
	line, ok := p.waitLog(`request_id(=|":")`+regexp.QuoteMeta(requestID)+`[ "]`, 5*time.Second)
	if !ok {
		p.t.Fatalf("no log line for request_id=%s", requestID)
	}
	return line
}

// signal sends sig to the router and returns a channel closed on exit.
func (p *routerProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// waitExit waits for the process to end and returns its exit code.
func (p *routerProc) waitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("router did not exit within %s", timeout)
		return -1
	}
}

// upstream is a real HTTP server on 127.0.0.1 that records what it
// received and answers with X-Served-By naming it. It can crash and come
// back on the same address.
type upstream struct {
	URL         string
	addr        string
	name        string
	idleTimeout time.Duration

	mu       sync.Mutex
	srv      *http.Server
	requests []*http.Request
	handler  http.HandlerFunc
	// checks answers the router's health checks, which are not recorded.
	checks http.HandlerFunc
}

func newUpstream(t *testing.T, name string) *upstream {
	t.Helper()
	return newUpstreamIdle(t, name, 0)
}

// newUpstreamIdle is newUpstream with the server closing keep-alive
// connections idle for idleTimeout (0: net/http's default).
func newUpstreamIdle(t *testing.T, name string, idleTimeout time.Duration) *upstream {
	t.Helper()
	u := &upstream{name: name, idleTimeout: idleTimeout}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	u.URL = "http://" + u.addr
	u.serve(ln)
	t.Cleanup(u.crash)
	return u
}

func (u *upstream) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(u.ServeHTTP), ErrorLog: log.New(io.Discard, "", 0), IdleTimeout: u.idleTimeout}
	u.mu.Lock()
	u.srv = srv
	u.mu.Unlock()
	go srv.Serve(ln)
}

// crash closes the listener and every connection at once, as a dyno that
// dies does.
func (u *upstream) crash() {
	u.mu.Lock()
	srv := u.srv
	u.mu.Unlock()
	srv.Close()
}

// restart serves again on the same address.
func (u *upstream) restart() error {
	ln, err := net.Listen("tcp", u.addr)
	if err != nil {
		return fmt.Errorf("restarting %s on %s: %w", u.name, u.addr, err)
	}
	u.serve(ln)
	return nil
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Served-By", u.name)
	if r.UserAgent() == health.UserAgent {
		u.mu.Lock()
		h := u.checks
		u.mu.Unlock()
		if h != nil {
			h(w, r)
		}
		return
	}
	u.mu.Lock()
	u.requests = append(u.requests, r.Clone(context.Background()))
	h := u.handler
	u.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	io.Copy(io.Discard, r.Body)
	fmt.Fprintf(w, "%s %s %s\n", u.name, r.Method, r.URL.Path)
}

// handle replaces the upstream's answer.
func (u *upstream) handle(h http.HandlerFunc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handler = h
}

// handleChecks replaces the answer to health checks (by default 200).
func (u *upstream) handleChecks(h http.HandlerFunc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.checks = h
}

// received returns the requests that carried the given X-Request-Id.
func (u *upstream) received(requestID string) []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []*http.Request
	for _, r := range u.requests {
		if r.Header.Get("X-Request-Id") == requestID {
			out = append(out, r)
		}
	}
	return out
}

// sawPath reports whether the upstream received a request for path.
func (u *upstream) sawPath(path string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, r := range u.requests {
		if r.URL.Path == path {
			return true
		}
	}
	return false
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.requests)
}

// baseEnv is a valid configuration in front of the given upstreams.
func baseEnv(primary *upstream, replicas ...*upstream) map[string]string {
	env := map[string]string{"PRIMARY_URL": primary.URL, "COOKIE_SECRET": secret}
	var urls []string
	for _, r := range replicas {
		urls = append(urls, r.URL)
	}
	if len(urls) > 0 {
		env["REPLICA_URLS"] = strings.Join(urls, ",")
	}
	return env
}

var idSeq struct {
	sync.Mutex
	n int
}

// newID returns a request id valid under Heroku's rule and unique per run.
func newID(t *testing.T) string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	return fmt.Sprintf("test-%d-%016d", os.Getpid(), idSeq.n)
}

// do sends a request with a fresh X-Request-Id and returns the response
// with its body read, and the id.
func do(t *testing.T, method, url string, body io.Reader, header http.Header) (*http.Response, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	id := req.Header.Get("X-Request-Id")
	if id == "" {
		id = newID(t)
		req.Header.Set("X-Request-Id", id)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, string(b), id
}

var noRedirect = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// field returns a logfmt field's raw value from a line.
func field(line, key string) string {
	m := regexp.MustCompile(`(?:^| )` + key + `=("(?:[^"\\]|\\.)*"|\S*)`).FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	return strings.Trim(m[1], `"`)
}
