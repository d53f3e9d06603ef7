package test

import (
	"bufio"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const adminToken = "admin-token-0123456789"

// scrape returns the value of every sample in a Prometheus exposition,
// keyed by the line's name and labels as written.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	return scrapeWith(t, url, adminToken)
}

// scrapeWith is scrape with another admin token.
func scrapeWith(t *testing.T, url, token string) map[string]float64 {
	t.Helper()
	resp, body, _ := do(t, "GET", url, nil, http.Header{"Authorization": {"Bearer " + token}})
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %d %s", url, resp.StatusCode, body)
	}
	samples := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndex(line, " ")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		samples[line[:i]] = v
	}
	return samples
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	open := startRouter(t, baseEnv(primary))
	for _, path := range []string{"/_router/metrics", "/_router/status", "/_router/debug/pprof/"} {
		if resp, _, _ := do(t, "GET", open.URL+path, nil, nil); resp.StatusCode != 404 {
			t.Errorf("%s without ADMIN_TOKEN set: %d, want 404", path, resp.StatusCode)
		}
	}

	env := baseEnv(primary)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	basic := func(user, pass string) http.Header {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pass)
		return req.Header
	}
	tests := []struct {
		name   string
		header http.Header
		want   int
	}{
		{"no credentials", nil, 401},
		{"wrong bearer", http.Header{"Authorization": {"Bearer wrong-token-0123456789"}}, 401},
		{"token prefix", http.Header{"Authorization": {"Bearer " + adminToken[:10]}}, 401},
		{"token with more", http.Header{"Authorization": {"Bearer " + adminToken + "x"}}, 401},
		{"wrong basic password", basic("admin", "nope"), 401},
		{"token as basic user", basic(adminToken, ""), 401},
		{"right bearer", http.Header{"Authorization": {"Bearer " + adminToken}}, 200},
		{"right basic password", basic("anyone", adminToken), 200},
	}
	for _, path := range []string{"/_router/metrics", "/_router/status", "/_router/debug/pprof/"} {
		for _, tt := range tests {
			resp, _, _ := do(t, "GET", rt.URL+path, nil, tt.header)
			if resp.StatusCode != tt.want {
				t.Errorf("%s, %s: %d, want %d", path, tt.name, resp.StatusCode, tt.want)
			}
			if tt.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("%s, %s: no WWW-Authenticate challenge", path, tt.name)
			}
		}
	}
	if primary.count() != 0 {
		t.Error("an admin request reached the app")
	}
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	env := baseEnv(primary, replica)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	before := scrape(t, rt.URL+"/_router/metrics")
	const reads, writes = 7, 3
	for range reads {
		do(t, "GET", rt.URL+"/items", nil, nil)
	}
	var id string
	for range writes {
		_, _, id = do(t, "POST", rt.URL+"/items", nil, nil)
	}
	rt.logFor(id)
	after := scrape(t, rt.URL+"/_router/metrics")
	diff := func(key string) float64 { return after[key] - before[key] }
	checks := map[string]float64{
		`router_requests_total{code="2xx",method="GET",reason="read",upstream="replica"}`:   reads,
		`router_requests_total{code="2xx",method="POST",reason="write",upstream="primary"}`: writes,
		`router_pins_issued_total`:                                  writes,
		`router_request_duration_seconds_count{upstream="replica"}`: reads,
		`router_request_duration_seconds_count{upstream="primary"}`: writes,
		`router_retries_total`:                                      0,
	}
	for key, want := range checks {
		if got := diff(key); got != want {
			t.Errorf("%s moved by %v, want %v", key, got, want)
		}
	}
	for _, key := range []string{
		`router_upstream_up{backend="` + strings.TrimPrefix(primary.URL, "http://") + `",role="primary"}`,
		`router_upstream_up{backend="` + strings.TrimPrefix(replica.URL, "http://") + `",role="replica"}`,
	} {
		if after[key] != 1 {
			t.Errorf("%s = %v, want 1", key, after[key])
		}
	}
	for _, name := range []string{"router_inflight_requests", "go_goroutines", "process_resident_memory_bytes",
		`router_ejections_total{backend="` + strings.TrimPrefix(replica.URL, "http://") + `"}`} {
		if _, ok := after[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	if !hasPrefix(after, `router_health_check_duration_seconds_count{backend=`) {
		t.Error("no health check durations recorded")
	}
}

func hasPrefix(m map[string]float64, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

func TestMetricsAddrServesWithoutToken(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	env := baseEnv(primary)
	env["METRICS_ADDR"] = addr
	startRouter(t, env)
	resp, body, _ := do(t, "GET", "http://"+addr+"/metrics", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "router_requests_total") && !strings.Contains(body, "router_pins_issued_total") {
		t.Errorf("METRICS_ADDR /metrics: %d, want 200 with router metrics", resp.StatusCode)
	}
}

func TestStatusJSONShowsStoppedUpstream(t *testing.T) {
	t.Parallel()
	primary, a, b := newUpstream(t, "primary"), newUpstream(t, "a"), newUpstream(t, "b")
	env := healthEnv(primary, a, b)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	for range 4 {
		do(t, "GET", rt.URL+"/items", nil, nil)
	}
	a.crash()
	if _, ok := rt.waitLog(`msg="upstream down" backend=`+regexp.QuoteMeta(strings.TrimPrefix(a.URL, "http://")), 5*time.Second); !ok {
		t.Fatal("stopped replica never marked down")
	}
	_, body, _ := do(t, "GET", rt.URL+"/_router/status", nil, http.Header{
		"Authorization": {"Bearer " + adminToken}, "Accept": {"application/json"}})
	var status struct {
		Upstreams []struct {
			Name, Role, State string
			LastError         string `json:"last_error"`
			Up                bool
		} `json:"upstreams"`
		LastMinute struct {
			Reads        int64   `json:"reads"`
			ReplicaShare float64 `json:"replica_read_share"`
		} `json:"last_minute"`
		Split []struct{} `json:"split"`
	}
	if err := json.Unmarshal([]byte(body), &status); err != nil {
		t.Fatalf("status is not JSON: %v\n%s", err, body)
	}
	got := map[string]string{}
	for _, u := range status.Upstreams {
		got[u.Name] = u.Role + " " + u.State
	}
	want := map[string]string{
		strings.TrimPrefix(primary.URL, "http://"): "primary up",
		strings.TrimPrefix(a.URL, "http://"):       "replica down",
		strings.TrimPrefix(b.URL, "http://"):       "replica up",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("status of %s = %q, want %q (all: %v)", name, got[name], w, got)
		}
	}
	if status.LastMinute.Reads < 4 || status.LastMinute.ReplicaShare != 1 || len(status.Split) != 30 {
		t.Errorf("last minute = %+v, %d split points; want >= 4 reads, all from replicas, 30 points", status.LastMinute, len(status.Split))
	}
}

// TestStatusPageInBrowser renders the HTML status page in headless Chromium,
// keeps a screenshot, and checks the text a person would read.
func TestStatusPageInBrowser(t *testing.T) {
	t.Parallel()
	browser := requireChromium(t)
	primary, a, b := newUpstream(t, "primary"), newUpstream(t, "a"), newUpstream(t, "b")
	env := healthEnv(primary, a, b)
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	for range 10 {
		do(t, "GET", rt.URL+"/items", nil, nil)
	}
	do(t, "POST", rt.URL+"/items", nil, nil)
	b.crash()
	if _, ok := rt.waitLog(`msg="upstream down" backend=`+regexp.QuoteMeta(strings.TrimPrefix(b.URL, "http://")), 5*time.Second); !ok {
		t.Fatal("stopped replica never marked down")
	}

	page := "http://admin:" + adminToken + "@127.0.0.1:" + rt.Port + "/_router/status"
	shot := filepath.Join(t.TempDir(), "status.png")
	if out := os.Getenv("STATUS_SCREENSHOT"); out != "" {
		shot = out // for refreshing docs/status.png
	}
	run := chromium(t, browser, page)
	run("--window-size=1100,760", "--screenshot="+shot)
	if info, err := os.Stat(shot); err != nil || info.Size() < 10_000 {
		t.Fatalf("no screenshot written (%v)", err)
	}
	dom := string(run("--dump-dom"))
	text := regexp.MustCompile(`<[^>]*>`).ReplaceAllString(dom, " ")
	for _, want := range []string{
		"router status", "of reads from replicas", "pins issued",
		strings.TrimPrefix(primary.URL, "http://"), strings.TrimPrefix(a.URL, "http://"), strings.TrimPrefix(b.URL, "http://"),
		" down ", "Reads served by replicas",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered page does not show %q", want)
		}
	}
	if n := strings.Count(dom, "<tr>"); n != 4 {
		t.Errorf("upstream table has %d rows, want a header and 3 upstreams", n)
	}
}

// chromium returns a function that runs headless Chromium on page with
// extra flags and returns its output, with a fresh profile and the flags
// a closed network needs.
func chromium(t *testing.T, browser, page string) func(extra ...string) []byte {
	t.Helper()
	profile := filepath.Join(t.TempDir(), "profile")
	common := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"}
	return func(extra ...string) []byte {
		t.Helper()
		args := append(append(append([]string{}, common...), "--user-data-dir="+profile), extra...)
		out, err := exec.Command(browser, append(args, page)...).Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", extra, err)
		}
		return out
	}
}

// requireChromium returns the browser, or skips (fails under test/run.sh).
func requireChromium(t *testing.T) string {
	t.Helper()
	browser, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("ROUTER_REQUIRE_BROWSER") != "" {
			t.Fatal("chromium is not installed; test/run.sh installs it")
		}
		t.Skip("chromium not installed (test/run.sh installs it)")
	}
	return browser
}

func TestStatsSubcommand(t *testing.T) {
	t.Parallel()
	fixture, err := os.Open("testdata/router.log")
	if err != nil {
		t.Fatal(err)
	}
	defer fixture.Close()
	cmd := exec.Command(binary, "stats")
	cmd.Stdin = fixture
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("router stats: %v\n%s", err, out)
	}
	total := ""
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "total: ") {
			total = sc.Text()
			sc.Scan()
			total += "\n" + sc.Text()
		}
	}
	for _, want := range []string{
		"0.8 req/s (8 in 10s)",
		"reads from replicas 50% (3 of 6)",
		"pinned 12%",
		"pins issued 1",
		"fallbacks 2",
		"retries 1",
		"5xx 2 (unavailable 1, upstream_timeout 1)",
	} {
		if !strings.Contains(total, want) {
			t.Errorf("summary lacks %q:\n%s", want, total)
		}
	}
	quantile := regexp.MustCompile(`(primary|replica) service p50 ([\d.]+)ms p99 ([\d.]+)ms \(n=(\d+)\)`)
	want := map[string][3]float64{"primary": {40, 30000, 4}, "replica": {10, 20, 3}}
	found := 0
	for _, m := range quantile.FindAllStringSubmatch(total, -1) {
		found++
		w := want[m[1]]
		p50, _ := strconv.ParseFloat(m[2], 64)
		p99, _ := strconv.ParseFloat(m[3], 64)
		n, _ := strconv.ParseFloat(m[4], 64)
		if math.Abs(p50/w[0]-1) > 0.1 || math.Abs(p99/w[1]-1) > 0.1 || n != w[2] {
			t.Errorf("%s: p50 %v p99 %v n %v, want about %v %v and n=%v", m[1], p50, p99, n, w[0], w[1], w[2])
		}
	}
	if found != 2 {
		t.Errorf("found %d latency summaries in:\n%s", found, total)
	}
}

func TestLogOptions(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")

	env := baseEnv(primary)
	env["LOG_FORMAT"] = "json"
	rt := startRouter(t, env)
	_, _, id := do(t, "GET", rt.URL+"/items?q=1", nil, http.Header{"X-Request-Start": {strconv.FormatInt(time.Now().Add(-40*time.Millisecond).UnixMilli(), 10)}})
	line := rt.logFor(id)
	var fields map[string]any
	if err := json.Unmarshal([]byte(line), &fields); err != nil {
		t.Fatalf("LOG_FORMAT=json line is not JSON: %q", line)
	}
	if fields["at"] != "info" || fields["path"] != "/items?q=1" || fields["upstream"] != "primary" {
		t.Errorf("JSON fields = %v", fields)
	}
	if q, ok := fields["queue_ms"].(float64); !ok || q < 40 || q > 5000 {
		t.Errorf("queue_ms = %v, want at least the 40 ms the request started before", fields["queue_ms"])
	}
	for _, l := range rt.Lines() {
		if !strings.HasPrefix(l, "{") {
			t.Errorf("LOG_FORMAT=json wrote a non-JSON line: %q", l)
		}
	}

	// logfmt: queue= appears only when X-Request-Start came.
	plain := startRouter(t, baseEnv(primary))
	_, _, id = do(t, "GET", plain.URL+"/items", nil, http.Header{"X-Request-Start": {"t=" + strconv.FormatFloat(float64(time.Now().UnixMicro())/1e6-0.05, 'f', 6, 64)}})
	if q := field(plain.logFor(id), "queue"); !regexp.MustCompile(`^\d+ms$`).MatchString(q) {
		t.Errorf("queue=%q, want milliseconds", q)
	}
	_, _, id = do(t, "GET", plain.URL+"/items", nil, nil)
	if strings.Contains(plain.logFor(id), "queue=") {
		t.Error("queue= logged without X-Request-Start")
	}

	// LOG_LEVEL=error silences the router's own info messages, not requests.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	env = baseEnv(primary)
	env["LOG_LEVEL"] = "error"
	env["PORT"] = port
	quiet := launch(t, env)
	quiet.t = t
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := http.Get("http://127.0.0.1:" + port + "/_router/health"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("router with LOG_LEVEL=error never answered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, _, id = do(t, "GET", "http://127.0.0.1:"+port+"/items", nil, nil)
	quiet.logFor(id)
	for _, l := range quiet.Lines() {
		if strings.Contains(l, "msg=") {
			t.Errorf("LOG_LEVEL=error still logged %q", l)
		}
	}
}
