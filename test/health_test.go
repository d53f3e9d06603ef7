package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// healthEnv checks fast so fault tests finish in seconds.
func healthEnv(primary *upstream, replicas ...*upstream) map[string]string {
	env := baseEnv(primary, replicas...)
	env["HEALTH_CHECK_INTERVAL"] = "300ms"
	env["HEALTH_CHECK_TIMEOUT"] = "200ms"
	env["HEALTH_FALL"] = "2"
	env["HEALTH_RISE"] = "2"
	return env
}

// load sends GETs from several clients until stop is closed and counts
// the failures.
type load struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(url string, clients int) *load {
	l := &load{stop: make(chan struct{})}
	for range clients {
		l.wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					l.ok.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *load) finish(t *testing.T) {
	t.Helper()
	l.finishAllowing(t, 0)
}

// finishAllowing stops the load and fails the test if more than the given
// share of GETs failed.
func (l *load) finishAllowing(t *testing.T, share float64) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	ok, failed := l.ok.Load(), l.failed.Load()
	t.Logf("load: %d GETs succeeded, %d failed", ok, failed)
	if float64(failed) > share*float64(ok+failed) {
		t.Errorf("%d of %d GETs failed under load (first: %v), want at most %.0f%%", failed, ok+failed, l.firstErr.Load(), share*100)
	}
	if ok == 0 {
		t.Error("no GET succeeded")
	}
}

// succeeded waits until the load has had n more successful GETs.
func (l *load) succeeded(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	deadline := time.Now().Add(20 * time.Second)
	for l.ok.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("the load did not get %d more GETs through in 20 s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, 10*time.Second, what, cond)
}

// waitWithin polls cond until it holds or limit passes.
func waitWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countLog counts access lines matching all the given field=value pairs.
func countLog(p *routerProc, fields ...string) int {
	n := 0
	for _, line := range p.Lines() {
		if !strings.HasPrefix(line, "at=") || !strings.Contains(line, " request_id=") {
			continue
		}
		match := true
		for i := 0; i < len(fields); i += 2 {
			if field(line, fields[i]) != fields[i+1] {
				match = false
			}
		}
		if match {
			n++
		}
	}
	return n
}

func TestReplicaCrashAndRecovery(t *testing.T) {
	t.Parallel()
	primary, a, b := newUpstream(t, "primary"), newUpstream(t, "a"), newUpstream(t, "b")
	env := healthEnv(primary, a, b)
	// Long enough that only a passing check can bring a back in time.
	env["EJECT_DURATION"] = "30s"
	rt := startRouter(t, env)
	aName := regexp.QuoteMeta(strings.TrimPrefix(a.URL, "http://"))

	l := startLoad(rt.URL+"/items", 8)
	waitFor(t, "the load to reach both replicas", func() bool { return a.count() > 0 && b.count() > 0 })
	a.crash()
	if _, ok := rt.waitLog(`msg="upstream down" backend=`+aName, 5*time.Second); !ok {
		t.Fatal("crashed replica never marked down")
	}
	before := a.count()
	l.succeeded(t, 400)
	l.finish(t)
	if n := a.count(); n != before {
		t.Errorf("the crashed replica still received %d requests", n-before)
	}
	// Only requests already headed for a when it died are retried; after
	// the first failure it is ejected and no request is sent there.
	retried := countLog(rt, "retries", "1")
	t.Logf("retried reads: %d", retried)
	if retried > 16 {
		t.Errorf("%d reads had to be retried, want at most the 8 clients' in-flight requests (twice over)", retried)
	}

	// Recovery: within HEALTH_RISE x interval plus one interval (2 x 300ms
	// + 300ms), with the checker's ±10% jitter on each.
	seen := a.count()
	if err := a.restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	recovered := false
	for time.Since(restarted) < 5*time.Second {
		do(t, "GET", rt.URL+"/items", nil, nil)
		if a.count() > seen {
			recovered = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(restarted)
	t.Logf("restarted replica took reads again after %s", took.Round(time.Millisecond))
	if !recovered {
		t.Fatal("restarted replica never received reads again")
	}
	if limit := 3 * 330 * time.Millisecond; took > limit+150*time.Millisecond {
		t.Errorf("recovery took %s, want within %s (rise x interval + interval)", took, limit)
	}
}

func TestHealthPathFailing(t *testing.T) {
	t.Parallel()
	primary, a, b := newUpstream(t, "primary"), newUpstream(t, "a"), newUpstream(t, "b")
	env := healthEnv(primary, a, b)
	env["HEALTH_CHECK_PATH"] = "/up"
	rt := startRouter(t, env)
	aName := regexp.QuoteMeta(strings.TrimPrefix(a.URL, "http://"))

	var path atomic.Value
	a.handleChecks(func(w http.ResponseWriter, r *http.Request) {
		path.Store(r.URL.Path)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	failing := time.Now()
	if _, ok := rt.waitLog(`msg="upstream down" backend=`+aName+` role=replica cause="health check: status 503"`, 5*time.Second); !ok {
		t.Fatal("replica with a failing health path was not taken out")
	}
	took := time.Since(failing)
	t.Logf("taken out %s after its health path began failing", took.Round(time.Millisecond))
	if limit := 3 * 330 * time.Millisecond; took > limit+150*time.Millisecond {
		t.Errorf("took %s, want within HEALTH_FALL intervals plus the one in progress (%s)", took, limit)
	}
	if got := path.Load(); got != "/up" {
		t.Errorf("health checks asked for %v, want HEALTH_CHECK_PATH /up", got)
	}
	before := a.count()
	for range 10 {
		resp, _, _ := do(t, "GET", rt.URL+"/items", nil, nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "b" {
			t.Errorf("read served %d by %q, want 200 by b", resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
	}
	if a.count() != before {
		t.Error("the out-of-rotation replica still got reads")
	}

	a.handleChecks(nil)
	if _, ok := rt.waitLog(`msg="upstream up" backend=`+aName, 5*time.Second); !ok {
		t.Fatal("replica not re-admitted after its health path recovered")
	}
	for range 4 {
		do(t, "GET", rt.URL+"/items", nil, nil)
	}
	if a.count() == before {
		t.Error("re-admitted replica got no reads")
	}
}

// hungListener accepts connections and never answers on them.
func hungListener(t *testing.T) string {
	t.Helper()
	done := make(chan struct{})
	url := rawUpstream(t, func(net.Conn) { <-done })
	t.Cleanup(func() { close(done) }) // before rawUpstream's own cleanup
	return url
}

// TestHungReplica: a replica that accepts connections and never answers.
// A timeout is not retried, so the reads sent there before it is taken out
// fail; it is taken out after EJECT_AFTER_FAILURES timeouts (or by its
// failing health checks), and the reads after that succeed.
func TestHungReplica(t *testing.T) {
	t.Parallel()
	primary, b := newUpstream(t, "primary"), newUpstream(t, "b")
	hung := hungListener(t)
	env := healthEnv(primary, b)
	env["REPLICA_URLS"] = hung + "," + b.URL
	env["UPSTREAM_TIMEOUT"] = "1s"
	rt := startRouter(t, env)

	start := time.Now()
	l := startLoad(rt.URL+"/items", 4)
	if _, ok := rt.waitLog(`msg="upstream (ejected|down)" backend=`+regexp.QuoteMeta(strings.TrimPrefix(hung, "http://")), 10*time.Second); !ok {
		t.Fatal("hung replica was never taken out")
	}
	time.Sleep(time.Until(start.Add(6 * time.Second))) // 4 clients for 6 s
	l.finishAllowing(t, 0.05)
	resp, _, id := do(t, "GET", rt.URL+"/items", nil, nil)
	if resp.StatusCode != 200 || field(rt.logFor(id), "retries") != "0" {
		t.Errorf("read after the hung replica was taken out: %d, log %q; want 200 without retry", resp.StatusCode, rt.logFor(id))
	}
}

func TestEveryReplicaDown(t *testing.T) {
	t.Parallel()
	primary, a, b := newUpstream(t, "primary"), newUpstream(t, "a"), newUpstream(t, "b")
	rt := startRouter(t, healthEnv(primary, a, b))
	a.crash()
	b.crash()
	for i := range 20 {
		resp, _, id := do(t, "GET", rt.URL+"/items", nil, nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "primary" {
			t.Fatalf("read %d with every replica down: %d from %q, want 200 from the primary", i, resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
		if i > 2 && field(rt.logFor(id), "reason") != "no_replica" {
			t.Errorf("read %d: reason=%s, want no_replica", i, field(rt.logFor(id), "reason"))
		}
	}
}

func TestPrimaryDown(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	rt := startRouter(t, healthEnv(primary, replica))
	resp, _, _ := do(t, "POST", rt.URL+"/items", nil, nil)
	pin := pinCookie(resp)
	if pin == nil {
		t.Fatal("no pin from the write")
	}
	primary.crash()
	if _, ok := rt.waitLog(`msg="upstream down" backend=\S+ role=primary`, 5*time.Second); !ok {
		t.Fatal("primary never marked down")
	}
	start := time.Now()
	resp, body, id := do(t, "POST", rt.URL+"/items", strings.NewReader("x"), nil)
	took := time.Since(start)
	t.Logf("write with the primary down answered in %s", took)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "primary unavailable") {
		t.Errorf("write with the primary down: %d Retry-After=%q %q; want 503, Retry-After, \"primary unavailable\"", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if took > 500*time.Millisecond {
		t.Errorf("write took %s to fail, want well under a second", took)
	}
	if line := rt.logFor(id); field(line, "reason") != "primary_down" {
		t.Errorf("log %q, want reason=primary_down", line)
	}
	for _, h := range []http.Header{nil, {"Cookie": {pin.String()}}} {
		resp, _, id := do(t, "GET", rt.URL+"/items", nil, h)
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "replica" {
			t.Errorf("read (cookie %v) with the primary down: %d from %q, want 200 from the replica", h != nil, resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
		if h != nil && field(rt.logFor(id), "reason") != "primary_down" {
			t.Errorf("pinned read logged reason=%s, want primary_down", field(rt.logFor(id), "reason"))
		}
	}
}

func TestWritesAreNeverRepeated(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	// The primary reads each request whole, then dies without answering.
	die := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	primary.handle(die)
	rt := startRouter(t, healthEnv(primary, replica))
	for _, method := range []string{"POST", "PATCH", "DELETE", "PUT"} {
		// Warm a pooled connection first: a reused connection is where a
		// transport is most tempted to retry.
		primary.handle(nil)
		do(t, method, rt.URL+"/warm", strings.NewReader("x"), nil)
		primary.handle(die)
		resp, _, id := do(t, method, rt.URL+"/items/1", strings.NewReader(`{"n":1}`), nil)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s whose connection died: %d, want 502", method, resp.StatusCode)
		}
		if n := len(primary.received(id)); n != 1 {
			t.Errorf("%s reached the primary %d times, want exactly 1", method, n)
		}
		if f := field(rt.logFor(id), "failure"); f != "reset" {
			t.Errorf("%s whose connection died logged failure=%q, want reset", method, f)
		}
		// One broken request says nothing about the primary: the next
		// write, at once, goes through.
		primary.handle(nil)
		resp, _, _ = do(t, method, rt.URL+"/items/2", strings.NewReader("x"), nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "primary" {
			t.Errorf("%s right after a broken one: %d from %q, want 200 from the primary", method, resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
	}

	// A GET in the same trouble on a replica is retried and succeeds.
	primary.handle(nil)
	replica.handle(die)
	resp, _, id := do(t, "GET", rt.URL+"/items", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "primary" {
		t.Errorf("GET whose replica died: %d from %q, want 200 from the primary", resp.StatusCode, resp.Header.Get("X-Served-By"))
	}
	if field(rt.logFor(id), "retries") != "1" {
		t.Errorf("log %q, want retries=1", rt.logFor(id))
	}
}

func TestSpilloverGuard(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	held, release := make(chan struct{}, 4), make(chan struct{})
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	env := healthEnv(primary, replica)
	env["PRIMARY_READ_LIMIT"] = "1"
	rt := startRouter(t, env)
	replica.crash()
	if _, ok := rt.waitLog(`msg="upstream down" backend=\S+ role=replica`, 5*time.Second); !ok {
		t.Fatal("replica never marked down")
	}
	defer close(release)

	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(rt.URL + "/hold")
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-held // the one fallback slot is taken

	resp, body, _ := do(t, "GET", rt.URL+"/items", nil, nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "busy") {
		t.Errorf("second fallback read: %d Retry-After=%q %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	resp, _, _ = do(t, "POST", rt.URL+"/items", nil, nil)
	if resp.StatusCode != 200 {
		t.Errorf("a write while fallback reads are capped: %d, want 200", resp.StatusCode)
	}
	pin := pinCookie(resp)
	resp, _, _ = do(t, "GET", rt.URL+"/items", nil, http.Header{"Cookie": {pin.String()}})
	if resp.StatusCode != 200 {
		t.Errorf("a pinned read while fallback reads are capped: %d, want 200", resp.StatusCode)
	}
	release <- struct{}{}
	if code := <-first; code != 200 {
		t.Errorf("the fallback read holding the slot: %d, want 200", code)
	}
}

func TestReadShare(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	env := baseEnv(primary, replica)
	env["READ_SHARE"] = "50"
	rt := startRouter(t, env)
	var id string
	for range 200 {
		_, _, id = do(t, "GET", rt.URL+"/items", nil, nil)
	}
	rt.logFor(id) // every line is in
	toReplica := countLog(rt, "upstream", "replica")
	shared := countLog(rt, "reason", "primary_share")
	if toReplica+shared != 200 || toReplica < 60 || toReplica > 140 {
		t.Errorf("READ_SHARE=50 sent %d of 200 reads to the replica and %d to the primary, want about half", toReplica, shared)
	}
}

func TestLeastOutstanding(t *testing.T) {
	t.Parallel()
	primary, a, b := newUpstream(t, "primary"), newUpstream(t, "a"), newUpstream(t, "b")
	held, release := make(chan string, 1), make(chan struct{})
	hold := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				held <- name
				<-release
			}
			io.WriteString(w, name)
		}
	}
	a.handle(hold("a"))
	b.handle(hold("b"))
	env := baseEnv(primary, a, b)
	env["BALANCE"] = "least_outstanding"
	rt := startRouter(t, env)
	go func() {
		if resp, err := http.Get(rt.URL + "/hold"); err == nil {
			resp.Body.Close()
		}
	}()
	busy := <-held
	defer close(release)
	for range 6 {
		resp, _, _ := do(t, "GET", rt.URL+"/items", nil, nil)
		if got := resp.Header.Get("X-Served-By"); got == busy {
			t.Errorf("read sent to %s, which has a request in flight, while the other replica is idle", got)
		}
	}
}

// TestHealthCheckSaysWhy: a check that fails with an answer names its
// status and path, in the log line and on the status page, so that an
// app refusing the router's Host (Rails' config.hosts: 403) is found at
// once.
func TestHealthCheckSaysWhy(t *testing.T) {
	t.Parallel()
	primary, a := newUpstream(t, "primary"), newUpstream(t, "a")
	env := healthEnv(primary, a)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	a.handleChecks(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Blocked host: "+r.Host, http.StatusForbidden)
	})
	aName := regexp.QuoteMeta(strings.TrimPrefix(a.URL, "http://"))
	if _, ok := rt.waitLog(`at=warn msg="upstream down" backend=`+aName+` role=replica cause="health check: status 403" check_status=403 path=/`, 5*time.Second); !ok {
		t.Fatal("no warn line naming the check's status and path")
	}
	if json := adminJSON(t, rt); !strings.Contains(json, `"check_status": 403`) {
		t.Errorf("status JSON does not show the check's 403:\n%s", json)
	}
}
