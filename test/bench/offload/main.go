// Command offload measures what the router's pins cost and buy against a
// real Postgres primary and streaming standby: the share of reads the
// follower serves, and the stale reads (a user not shown their own last
// write), for time pins of 1 s, 2 s and 5 s and for WAL pins, with the
// follower 0, 500 and 3,000 ms behind.
//
// Simulated users, each with its own cookie jar, write a note every few
// seconds and read at human pace, through two router processes (a user's
// requests alternate between them, as a front router spreads them over
// dynos). Every cell replays the same trace. It runs by hand, not in CI:
//
//	go run ./test/bench/offload                 # 100 users, 60 s a cell: about 13 minutes
//	go run ./test/bench/offload -users 50 -duration 20s
//
// It needs PostgreSQL's server (Debian's postgresql) and runs the router
// built from this checkout. Everything listens on 127.0.0.1.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/splitapp/router/test/pgapp"
	"github.com/splitapp/router/test/pgcluster"
)

func main() {
	users := flag.Int("users", 100, "simulated users")
	duration := flag.Duration("duration", 60*time.Second, "time per cell")
	seed := flag.Uint64("seed", 1, "the trace's random seed")
	flag.Parse()
	if err := run(*users, *duration, *seed); err != nil {
		log.Fatal(err)
	}
}

// mode is one column: pins by time, or by WAL position.
type mode struct {
	name string
	env  func(pg *pgcluster.Cluster) []string
}

func timePins(ttl string) mode {
	return mode{"time pin " + ttl, func(*pgcluster.Cluster) []string { return []string{"PIN_TTL=" + ttl} }}
}

var modes = []mode{
	timePins("1s"), timePins("2s"), timePins("5s"),
	{"WAL pins", func(pg *pgcluster.Cluster) []string {
		return []string{"PRIMARY_DATABASE_URL=" + pg.PrimaryURL, "REPLICA_DATABASE_URLS=" + pg.StandbyURL}
	}},
}

var lags = []time.Duration{0, 500 * time.Millisecond, 3 * time.Second}

func run(users int, duration time.Duration, seed uint64) error {
	work, err := os.MkdirTemp("", "router-offload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "router")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the router (run from the repository's root): %w", err)
	}
	pg, err := pgcluster.Start(pgcluster.Options{MaxConnections: 200})
	if err != nil {
		return err
	}
	defer pg.Stop()
	if err := pg.Exec(pg.PrimaryURL, pgapp.Schema); err != nil {
		return err
	}
	primaryApp, replicaApp, closeApps, err := startApps(pg)
	if err != nil {
		return err
	}
	defer closeApps()
	trace := newTrace(users, duration, seed)

	results := map[string]map[time.Duration]result{}
	for _, lag := range lags {
		if err := pg.SetApplyDelay(lag); err != nil {
			return err
		}
		// The delay applies to WAL written from now on; let it show.
		time.Sleep(lag + time.Second)
		for _, m := range modes {
			env := append([]string{"PRIMARY_URL=" + primaryApp, "REPLICA_URLS=" + replicaApp,
				"COOKIE_SECRET=offload-secret-0123456789abcdef0123456789", "HEALTH_CHECK_PATH=/health",
				"LOG_LEVEL=warn"}, m.env(pg)...)
			routers, stop, err := startRouters(bin, env, 2)
			if err != nil {
				return err
			}
			res := trace.replay(routers)
			stop()
			if results[m.name] == nil {
				results[m.name] = map[time.Duration]result{}
			}
			results[m.name][lag] = res
			fmt.Fprintf(os.Stderr, "lag %s, %s: %d reads, %.1f%% from the follower, %d stale, %d errors\n",
				lag, m.name, res.reads, res.share(), res.stale, res.errors)
		}
	}
	fmt.Printf("\n%d users, %s a cell: share of reads the follower served, and stale reads\n\n", users, duration)
	fmt.Print("| follower delay |")
	for _, m := range modes {
		fmt.Printf(" %s |", m.name)
	}
	fmt.Print("\n|---|")
	for range modes {
		fmt.Print("---|")
	}
	fmt.Println()
	for _, lag := range lags {
		fmt.Printf("| %s |", lag)
		for _, m := range modes {
			r := results[m.name][lag]
			fmt.Printf(" %.1f%%, %d stale |", r.share(), r.stale)
		}
		fmt.Println()
	}
	return nil
}

func startApps(pg *pgcluster.Cluster) (primary, replica string, closeAll func(), err error) {
	pdb, err := pgxpool.New(context.Background(), pg.PrimaryURL)
	if err != nil {
		return "", "", nil, err
	}
	sdb, err := pgxpool.New(context.Background(), pg.StandbyURL)
	if err != nil {
		pdb.Close()
		return "", "", nil, err
	}
	p := httptest.NewServer(pgapp.Handler(pdb, "primary"))
	r := httptest.NewServer(pgapp.Handler(sdb, "replica"))
	return p.URL, r.URL, func() { p.Close(); r.Close(); pdb.Close(); sdb.Close() }, nil
}

// startRouters runs n router processes and waits until each answers.
func startRouters(bin string, env []string, n int) (urls []string, stop func(), err error) {
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		cmd := exec.Command(bin)
		cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH")}, env...), fmt.Sprintf("PORT=%d", port))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			stop()
			return nil, nil, err
		}
		cmds = append(cmds, cmd)
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		ready := false
		for range 100 {
			if resp, err := http.Get(url + "/_router/health"); err == nil {
				resp.Body.Close()
				ready = true
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !ready {
			stop()
			return nil, nil, fmt.Errorf("router on %s did not come up", url)
		}
		urls = append(urls, url)
	}
	return urls, stop, nil
}

// step is one user action, at its time from the start.
type step struct {
	at     time.Duration
	write  bool
	router int // which router process takes it
}

type trace struct{ users [][]step }

// newTrace makes each user's schedule: a write every 2-6 s, and between
// writes, reads of their last note every 0.3-1.5 s (the first within
// 0.5 s of the write: a page load after a form post).
func newTrace(users int, duration time.Duration, seed uint64) *trace {
	t := &trace{}
	for u := range users {
		rng := rand.New(rand.NewPCG(seed, uint64(u)))
		var steps []step
		at := time.Duration(rng.Int64N(int64(3 * time.Second)))
		nextWrite := at
		for at < duration {
			write := at >= nextWrite
			if write {
				nextWrite = at + 2*time.Second + time.Duration(rng.Int64N(int64(4*time.Second)))
			}
			steps = append(steps, step{at: at, write: write, router: rng.IntN(2)})
			if write {
				at += time.Duration(rng.Int64N(int64(500 * time.Millisecond)))
			} else {
				at += 300*time.Millisecond + time.Duration(rng.Int64N(int64(1200*time.Millisecond)))
			}
		}
		t.users = append(t.users, steps)
	}
	return t
}

type result struct {
	reads, fromFollower, stale, errors int64
}

func (r result) share() float64 {
	if r.reads == 0 {
		return 0
	}
	return 100 * float64(r.fromFollower) / float64(r.reads)
}

// replay runs every user's schedule in real time against the routers.
func (t *trace) replay(routers []string) result {
	var res result
	start := time.Now()
	var wg sync.WaitGroup
	for _, steps := range t.users {
		wg.Go(func() {
			jar, _ := cookiejar.New(nil)
			client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
			var last string
			for _, s := range steps {
				time.Sleep(time.Until(start.Add(s.at)))
				base := routers[s.router%len(routers)]
				if s.write {
					resp, err := client.Post(base+"/notes", "text/plain", strings.NewReader("mine"))
					if err != nil {
						atomic.AddInt64(&res.errors, 1)
						continue
					}
					id, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						atomic.AddInt64(&res.errors, 1)
						continue
					}
					last = string(id)
					continue
				}
				if last == "" {
					continue
				}
				resp, err := client.Get(base + "/notes/" + last)
				if err != nil {
					atomic.AddInt64(&res.errors, 1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				atomic.AddInt64(&res.reads, 1)
				switch {
				case resp.StatusCode == http.StatusNotFound:
					atomic.AddInt64(&res.stale, 1)
				case resp.StatusCode != http.StatusOK:
					atomic.AddInt64(&res.errors, 1)
				}
				if resp.Header.Get("X-Served-By") == "replica" {
					atomic.AddInt64(&res.fromFollower, 1)
				}
			}
		})
	}
	wg.Wait()
	return res
}
