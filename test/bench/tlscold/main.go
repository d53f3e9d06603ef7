// Command tlscold measures what new connections to an HTTPS app cost the
// router, beside HAProxy and nginx: a request after the pools have gone
// idle (one new connection), and a 1 s burst from 64 clients after the
// pools have gone idle (64 new connections at once). Apps restart and idle
// pools are closed, so new connections are routine in production; a
// proxy that resumes TLS sessions pays an abbreviated handshake for them,
// one that does not pays a full one.
//
// The app is an HTTPS server in this process (a self-signed RSA-2048
// certificate, as *.herokuapp.com's; every proxy skips verification), which
// closes connections idle for a second: waiting 1.5 s empties every pool.
// It counts the full and the resumed handshakes each proxy made. Run by
// hand, from the repository's root (uses HAProxy and nginx when
// installed):
//
//	go run ./test/bench/tlscold
//	go run ./test/bench/tlscold -rounds 20
//
// Everything listens on 127.0.0.1.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/splitapp/router/test/bench/selfsigned"
)

func main() {
	rounds := flag.Int("rounds", 10, "rounds; each measures every target once, in rotating order")
	burst := flag.Int("conns", 64, "clients in the burst")
	flag.Parse()
	if err := run(*rounds, *burst); err != nil {
		log.Fatal(err)
	}
}

// idleClose is how long the app keeps an idle connection.
const idleClose = time.Second

// app is the HTTPS app, counting each proxy's full and resumed
// handshakes; the client names the proxy in X-Bench-Target, which every
// proxy passes on.
type app struct {
	mu      sync.Mutex
	full    map[string]int
	resumed map[string]int
}

func (a *app) count(r *http.Request) {
	who := r.Header.Get("X-Bench-Target")
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.TLS.DidResume {
		a.resumed[who]++
	} else {
		a.full[who]++
	}
}

func run(rounds, burst int) error {
	work, err := os.MkdirTemp("", "router-tlscold-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	a, upstream, stopApp, err := startApp()
	if err != nil {
		return err
	}
	defer stopApp()
	l := &launcher{work: work, targets: map[string]string{}}
	defer l.stop()
	if err := l.startAll(upstream); err != nil {
		return err
	}
	b := &bench{targets: l.targets, burst: burst,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: burst, DisableCompression: true}, Timeout: 30 * time.Second}}
	for n := range l.targets {
		b.names = append(b.names, n)
	}
	slices.Sort(b.names)
	for _, n := range b.names { // warm: every proxy holds a session
		for range 3 {
			if _, err := b.get(n); err != nil {
				return err
			}
		}
	}
	a.mu.Lock()
	clear(a.full)
	clear(a.resumed)
	a.mu.Unlock()
	single, p99s, err := b.measure(rounds)
	if err != nil {
		return err
	}
	b.report(a, rounds, single, p99s)
	return nil
}

// startApp starts the HTTPS app and returns it, its address, and what
// stops it.
func startApp() (*app, string, func(), error) {
	cert, err := selfsigned.Certificate()
	if err != nil {
		return nil, "", nil, err
	}
	a := &app{full: map[string]int{}, resumed: map[string]int{}}
	body := make([]byte, 128)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	// The first request on each connection tells the handshake.
	type connKey struct{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if first := r.Context().Value(connKey{}).(*atomic.Bool); first.CompareAndSwap(true, false) {
				a.count(r)
			}
			w.Write(body)
		}),
		TLSConfig:   &tls.Config{Certificates: []tls.Certificate{cert}},
		IdleTimeout: idleClose,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			first := &atomic.Bool{}
			first.Store(true)
			return context.WithValue(ctx, connKey{}, first)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	go srv.ServeTLS(ln, "", "")
	return a, ln.Addr().String(), func() { srv.Close() }, nil
}

// bench is the client side: the targets by name, and the client that
// asks them.
type bench struct {
	targets map[string]string
	names   []string
	client  *http.Client
	burst   int
}

// get makes one request through a target and returns how long it took.
func (b *bench) get(target string) (time.Duration, error) {
	req, _ := http.NewRequest("GET", b.targets[target]+"/", nil)
	req.Header.Set("X-Bench-Target", target)
	start := time.Now()
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("%s: status %d", target, resp.StatusCode)
	}
	return time.Since(start), nil
}

// measure runs the rounds: in each, every target in rotating order gets
// one request after its pool went idle, then a burst after it went idle
// again. It returns each target's single-request times and burst p99s.
func (b *bench) measure(rounds int) (single, p99s map[string][]time.Duration, err error) {
	single, p99s = map[string][]time.Duration{}, map[string][]time.Duration{}
	for r := range rounds {
		order := append(append([]string{}, b.names[r%len(b.names):]...), b.names[:r%len(b.names)]...)
		for _, n := range order {
			time.Sleep(idleClose * 3 / 2) // the app closes every idle connection
			d, err := b.get(n)
			if err != nil {
				return nil, nil, err
			}
			single[n] = append(single[n], d)
		}
		for _, n := range order {
			time.Sleep(idleClose * 3 / 2)
			p99s[n] = append(p99s[n], b.burstP99(n))
		}
	}
	return single, p99s, nil
}

// burstP99 runs a 1 s burst of b.burst clients through a target and
// returns its 99th percentile latency.
func (b *bench) burstP99(target string) time.Duration {
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(time.Second)
	for range b.burst {
		wg.Go(func() {
			for time.Now().Before(end) {
				d, err := b.get(target)
				if err != nil {
					log.Print(err)
					return
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(lat)
	return lat[len(lat)*99/100]
}

// report prints the table and the router's ratios to HAProxy and nginx.
func (b *bench) report(a *app, rounds int, single, p99s map[string][]time.Duration) {
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }
	fmt.Printf("\nHTTPS app; %d rounds; the app closes idle connections after %s\n\n", rounds, idleClose)
	fmt.Println("| target | one request after idle, ms (median) | 1 s burst at c" + fmt.Sprint(b.burst) + " after idle, p99 ms (median) | full handshakes | resumed |")
	fmt.Println("|---|---|---|---|---|")
	for _, n := range b.names {
		a.mu.Lock()
		full, resumed := a.full[n], a.resumed[n]
		a.mu.Unlock()
		fmt.Printf("| %s | %s | %s | %d | %d |\n", n, ms(median(single[n])), ms(median(p99s[n])), full, resumed)
	}
	if _, ok := b.targets["haproxy"]; ok {
		fmt.Println()
		for _, ref := range []string{"haproxy", "nginx"} {
			if _, ok := b.targets[ref]; !ok {
				continue
			}
			fmt.Printf("router / %s: one request %.2fx, burst p99 %.2fx\n", ref,
				float64(median(single["router"]))/float64(median(single[ref])),
				float64(median(p99s["router"]))/float64(median(p99s[ref])))
		}
	}
}

// launcher runs the proxies under test, each in front of the app over
// HTTPS, and keeps their URLs by name.
type launcher struct {
	work    string
	cmds    []*exec.Cmd
	targets map[string]string
}

func (l *launcher) stop() {
	for _, c := range l.cmds {
		c.Process.Kill()
		c.Wait()
	}
}

// start runs cmd and waits for it to listen on port.
func (l *launcher) start(name string, port int, cmd *exec.Cmd) error {
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	l.cmds = append(l.cmds, cmd)
	for range 100 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			l.targets[name] = fmt.Sprintf("http://127.0.0.1:%d", port)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not come up", name)
}

// startAll runs the router and, where installed, HAProxy and nginx.
func (l *launcher) startAll(upstream string) error {
	bin := filepath.Join(l.work, "router")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the router (run from the repository's root): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	router := exec.Command(bin)
	router.Env = []string{"PATH=" + os.Getenv("PATH"), fmt.Sprintf("PORT=%d", port), "PRIMARY_URL=https://" + upstream,
		"COOKIE_SECRET=tlscold-secret-0123456789abcdef0123456789", "UPSTREAM_TLS_INSECURE_SKIP_VERIFY=true",
		"HEALTH_CHECK_INTERVAL=1h", "LOG_LEVEL=warn"}
	if err := l.start("router", port, router); err != nil {
		return err
	}
	if _, err := exec.LookPath("haproxy"); err == nil {
		port, _ := freePort()
		cfg := filepath.Join(l.work, "haproxy.cfg")
		os.WriteFile(cfg, fmt.Appendf(nil, haproxyConfig, port, upstream), 0o644)
		if err := l.start("haproxy", port, exec.Command("haproxy", "-db", "-f", cfg)); err != nil {
			return err
		}
	}
	if _, err := exec.LookPath("nginx"); err == nil {
		port, _ := freePort()
		cfg := filepath.Join(l.work, "nginx.conf")
		os.WriteFile(cfg, fmt.Appendf(nil, nginxConfig, l.work, upstream, port), 0o644)
		if err := l.start("nginx", port, exec.Command("nginx", "-c", cfg, "-p", l.work)); err != nil {
			return err
		}
	}
	return nil
}

// haproxyConfig takes the port to listen on and the app's address.
const haproxyConfig = `global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:%d
  default_backend b
backend b
  server u %s ssl verify none
`

// nginxConfig takes the working directory, the app's address and the port
// to listen on.
const nginxConfig = `worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  upstream u { server %[2]s; keepalive 1024; }
  server {
    listen 127.0.0.1:%[3]d;
    location / {
      proxy_pass https://u;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_verify off;
      proxy_ssl_session_reuse on;
    }
  }
}
`

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
