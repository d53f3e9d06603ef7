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
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
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
	cert, err := selfSigned()
	if err != nil {
		return err
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
		return err
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	upstream := ln.Addr().String()

	targets, stop, err := startTargets(work, upstream)
	defer stop()
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: burst, DisableCompression: true}, Timeout: 30 * time.Second}
	get := func(target string) (time.Duration, error) {
		req, _ := http.NewRequest("GET", targets[target]+"/", nil)
		req.Header.Set("X-Bench-Target", target)
		start := time.Now()
		resp, err := client.Do(req)
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
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range targets {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names { // warm: every proxy holds a session
		for range 3 {
			if _, err := get(n); err != nil {
				return err
			}
		}
	}
	a.mu.Lock()
	clear(a.full)
	clear(a.resumed)
	a.mu.Unlock()

	single := map[string][]time.Duration{}
	p99s := map[string][]time.Duration{}
	for r := range rounds {
		order := append(append([]string{}, names[r%len(names):]...), names[:r%len(names)]...)
		for _, n := range order {
			time.Sleep(idleClose * 3 / 2) // the app closes every idle connection
			d, err := get(n)
			if err != nil {
				return err
			}
			single[n] = append(single[n], d)
		}
		for _, n := range order {
			time.Sleep(idleClose * 3 / 2)
			var mu sync.Mutex
			var lat []time.Duration
			var wg sync.WaitGroup
			end := time.Now().Add(time.Second)
			for range burst {
				wg.Go(func() {
					for time.Now().Before(end) {
						d, err := get(n)
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
			p99s[n] = append(p99s[n], lat[len(lat)*99/100])
		}
	}
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }
	fmt.Printf("\nHTTPS app; %d rounds; the app closes idle connections after %s\n\n", rounds, idleClose)
	fmt.Println("| target | one request after idle, ms (median) | 1 s burst at c" + fmt.Sprint(burst) + " after idle, p99 ms (median) | full handshakes | resumed |")
	fmt.Println("|---|---|---|---|---|")
	for _, n := range names {
		a.mu.Lock()
		full, resumed := a.full[n], a.resumed[n]
		a.mu.Unlock()
		fmt.Printf("| %s | %s | %s | %d | %d |\n", n, ms(median(single[n])), ms(median(p99s[n])), full, resumed)
	}
	if _, ok := targets["haproxy"]; ok {
		fmt.Println()
		for _, ref := range []string{"haproxy", "nginx"} {
			if _, ok := targets[ref]; !ok {
				continue
			}
			fmt.Printf("router / %s: one request %.2fx, burst p99 %.2fx\n", ref,
				float64(median(single["router"]))/float64(median(single[ref])),
				float64(median(p99s["router"]))/float64(median(p99s[ref])))
		}
	}
	return nil
}

// startTargets runs the router and, where installed, HAProxy and nginx,
// each in front of upstream over HTTPS, and returns their URLs.
func startTargets(work, upstream string) (map[string]string, func(), error) {
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	targets := map[string]string{}
	start := func(name string, port int, cmd *exec.Cmd) error {
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		cmds = append(cmds, cmd)
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		for range 100 {
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				c.Close()
				targets[name] = url
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return fmt.Errorf("%s did not come up", name)
	}
	bin := filepath.Join(work, "router")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return nil, stop, fmt.Errorf("building the router (run from the repository's root): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, stop, err
	}
	router := exec.Command(bin)
	router.Env = []string{"PATH=" + os.Getenv("PATH"), fmt.Sprintf("PORT=%d", port), "PRIMARY_URL=https://" + upstream,
		"COOKIE_SECRET=tlscold-secret-0123456789abcdef0123456789", "UPSTREAM_TLS_INSECURE_SKIP_VERIFY=true",
		"HEALTH_CHECK_INTERVAL=1h", "LOG_LEVEL=warn"}
	router.Stdout = io.Discard
	if err := start("router", port, router); err != nil {
		return nil, stop, err
	}
	if _, err := exec.LookPath("haproxy"); err == nil {
		port, _ := freePort()
		cfg := filepath.Join(work, "haproxy.cfg")
		os.WriteFile(cfg, fmt.Appendf(nil, `global
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
`, port, upstream), 0o644)
		if err := start("haproxy", port, exec.Command("haproxy", "-db", "-f", cfg)); err != nil {
			return nil, stop, err
		}
	}
	if _, err := exec.LookPath("nginx"); err == nil {
		port, _ := freePort()
		cfg := filepath.Join(work, "nginx.conf")
		os.WriteFile(cfg, fmt.Appendf(nil, `worker_processes 1;
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
`, work, upstream, port), 0o644)
		if err := start("nginx", port, exec.Command("nginx", "-c", cfg, "-p", work)); err != nil {
			return nil, stop, err
		}
	}
	return targets, stop, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// selfSigned makes an RSA-2048 certificate for 127.0.0.1, the key size
// *.herokuapp.com uses: its signature is most of a full handshake's cost.
func selfSigned() (tls.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
