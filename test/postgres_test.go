package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/splitapp/router/test/pgapp"
	"github.com/splitapp/router/test/pgcluster"
)

// pgCluster is a real primary and a streaming standby for one test.
type pgCluster struct {
	*pgcluster.Cluster
	t *testing.T
}

// startPostgres starts the cluster, with the standby applying WAL
// applyDelay late so lag is real and deterministic.
func startPostgres(t *testing.T, applyDelay time.Duration) *pgCluster {
	t.Helper()
	if !pgcluster.Installed() {
		if os.Getenv("ROUTER_REQUIRE_POSTGRES") != "" {
			t.Fatal("PostgreSQL is not installed; test/run.sh installs it")
		}
		t.Skip("PostgreSQL not installed (test/run.sh installs Debian's postgresql)")
	}
	c, err := pgcluster.Start(pgcluster.Options{ApplyDelay: applyDelay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	pg := &pgCluster{Cluster: c, t: t}
	pg.exec(pg.PrimaryURL, pgapp.Schema)
	return pg
}

func (c *pgCluster) startStandby() {
	c.t.Helper()
	if err := c.StartStandby(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *pgCluster) stopStandby() {
	c.t.Helper()
	if err := c.StopStandby(); err != nil {
		c.t.Fatal(err)
	}
}

// exec runs SQL on a database.
func (c *pgCluster) exec(url, sql string) {
	c.t.Helper()
	if err := c.Exec(url, sql); err != nil {
		c.t.Fatal(err)
	}
}

// waitBehind waits until the standby replays commits made since since
// more than d after they were made: an apply delay of more than d in
// effect. (Its last replayed commit alone can be old merely because the
// primary was idle.)
func (c *pgCluster) waitBehind(since time.Time, d time.Duration) {
	c.t.Helper()
	query := fmt.Sprintf(`SELECT coalesce(pg_last_xact_replay_timestamp() > to_timestamp(%f)
		AND now() - pg_last_xact_replay_timestamp() > interval '%d milliseconds', false)`,
		float64(since.UnixMicro())/1e6, d.Milliseconds())
	waitFor(c.t, fmt.Sprintf("the standby to replay new commits %s late", d), func() bool {
		var behind bool
		return queryRow(c.StandbyURL, query, &behind) == nil && behind
	})
}

func (c *pgCluster) pool(url string) *pgxpool.Pool {
	c.t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		c.t.Fatal(err)
	}
	return pool
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startApps runs the test app twice: on the primary and on the standby.
func (c *pgCluster) startApps() (primary, replica *httptest.Server) {
	c.t.Helper()
	pdb, sdb := c.pool(c.PrimaryURL), c.pool(c.StandbyURL)
	primary = httptest.NewServer(pgapp.Handler(pdb, "primary"))
	replica = httptest.NewServer(pgapp.Handler(sdb, "replica"))
	c.t.Cleanup(func() {
		primary.Close()
		replica.Close()
		pdb.Close()
		sdb.Close()
	})
	return primary, replica
}

// readYourWrites has clients each write a note and read it back at once
// and then several times over the next 1.4 s. It counts reads that missed
// the client's own write and reads served by the follower.
type rywResult struct {
	reads, stale, fromReplica int64
	firstErr                  atomic.Value
}

func readYourWrites(t *testing.T, routerURL string, clients, writesEach int, useHeader bool) *rywResult {
	t.Helper()
	res := &rywResult{}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			jar, _ := cookiejar.New(nil)
			client := &http.Client{Timeout: 10 * time.Second}
			if !useHeader {
				client.Jar = jar
			}
			var token string
			for range writesEach {
				req, _ := http.NewRequest("POST", routerURL+"/notes", strings.NewReader("note"))
				if useHeader && token != "" {
					req.Header.Set("X-Router-Pin-Token", token)
				}
				resp, err := client.Do(req)
				if err != nil {
					res.firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				idText, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 201 {
					res.firstErr.CompareAndSwap(nil, fmt.Sprintf("write: %d %s", resp.StatusCode, idText))
					return
				}
				if useHeader {
					token = resp.Header.Get("X-Router-Pin-Token")
				}
				for i := range 8 {
					if i > 0 {
						time.Sleep(200 * time.Millisecond)
					}
					req, _ := http.NewRequest("GET", routerURL+"/notes/"+string(idText), nil)
					if useHeader {
						req.Header.Set("X-Router-Pin-Token", token)
					}
					resp, err := client.Do(req)
					if err != nil {
						res.firstErr.CompareAndSwap(nil, err.Error())
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					atomic.AddInt64(&res.reads, 1)
					if resp.StatusCode == 404 {
						atomic.AddInt64(&res.stale, 1)
					} else if resp.StatusCode != 200 {
						res.firstErr.CompareAndSwap(nil, fmt.Sprintf("read: %d", resp.StatusCode))
					}
					if resp.Header.Get("X-Served-By") == "replica" {
						atomic.AddInt64(&res.fromReplica, 1)
					}
				}
			}
		})
	}
	wg.Wait()
	if e := res.firstErr.Load(); e != nil {
		t.Fatalf("read-your-writes run failed: %v", e)
	}
	return res
}

func TestPostgresConsistency(t *testing.T) {
	t.Parallel()
	pg := startPostgres(t, 500*time.Millisecond)
	primaryApp, replicaApp := pg.startApps()
	env := map[string]string{
		"PRIMARY_URL":           primaryApp.URL,
		"REPLICA_URLS":          replicaApp.URL,
		"COOKIE_SECRET":         secret,
		"PIN_TTL":               "5s",
		"HEALTH_CHECK_PATH":     "/health",
		"HEALTH_CHECK_INTERVAL": "300ms",
		"ADMIN_TOKEN":           adminToken,
	}
	ttlOnly := startRouter(t, env)
	env["PRIMARY_DATABASE_URL"] = pg.PrimaryURL
	env["REPLICA_DATABASE_URLS"] = pg.StandbyURL
	env["LAG_POLL_INTERVAL"] = "50ms"
	rt := startRouter(t, env)

	t.Run("LSN pins: no stale read, follower serves once caught up", func(t *testing.T) {
		lsn := readYourWrites(t, rt.URL, 16, 2, false)
		ttl := readYourWrites(t, ttlOnly.URL, 16, 2, false)
		t.Logf("LSN pins: %d reads after writes, %d stale, %.0f%% from the follower", lsn.reads, lsn.stale, 100*float64(lsn.fromReplica)/float64(lsn.reads))
		t.Logf("TTL pins: %d reads after writes, %d stale, %.0f%% from the follower", ttl.reads, ttl.stale, 100*float64(ttl.fromReplica)/float64(ttl.reads))
		if lsn.stale != 0 || ttl.stale != 0 {
			t.Errorf("stale reads: %d with LSN pins, %d with TTL pins; want 0", lsn.stale, ttl.stale)
		}
		if lsn.fromReplica <= ttl.fromReplica || float64(lsn.fromReplica) < 0.25*float64(lsn.reads) {
			t.Errorf("followers served %d of %d post-write reads with LSN pins, %d with TTL pins; want a large gain",
				lsn.fromReplica, lsn.reads, ttl.fromReplica)
		}
		if countLog(rt, "reason", "caught_up") == 0 {
			t.Error("no read logged reason=caught_up")
		}
		m := scrape(t, rt.URL+"/_router/metrics")
		if m["router_pins_released_early_total"] == 0 {
			t.Error("router_pins_released_early_total did not move")
		}
	})

	t.Run("pin token header without cookies", func(t *testing.T) {
		res := readYourWrites(t, rt.URL, 4, 2, true)
		if res.stale != 0 || res.fromReplica == 0 {
			t.Errorf("with X-Router-Pin-Token: %d stale of %d reads, %d from the follower; want 0 stale and some released", res.stale, res.reads, res.fromReplica)
		}
	})

	t.Run("a GET that writes is replayed on the primary", func(t *testing.T) {
		resp, body, id := do(t, "GET", rt.URL+"/touch", nil, nil)
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "visit ") || resp.Header.Get("X-Served-By") != "primary" {
			t.Errorf("GET /touch: %d %q from %q, want 200 from the primary", resp.StatusCode, body, resp.Header.Get("X-Served-By"))
		}
		if resp.Header.Get("X-Router-Replay") != "" {
			t.Error("X-Router-Replay reached the client")
		}
		if pinCookie(resp) == nil {
			t.Error("the replayed read did not pin the client")
		}
		if line := rt.logFor(id); field(line, "reason") != "replay" || field(line, "upstream") != "primary" {
			t.Errorf("log %q, want reason=replay upstream=primary", line)
		}
	})

	t.Run("lagging follower out, back when caught up", func(t *testing.T) {
		env := map[string]string{}
		for k, v := range envCopy(rt) {
			env[k] = v
		}
		lagged := startRouter(t, withEnv(env, "MAX_REPLICA_LAG", "1s"))
		pg.exec(pg.StandbyURL, "ALTER SYSTEM SET recovery_min_apply_delay = '3s'")
		pg.exec(pg.StandbyURL, "SELECT pg_reload_conf()")
		stop := writeSteadily(t, pg.PrimaryURL)
		if _, ok := lagged.waitLog(`msg="upstream lagging"`, 15*time.Second); !ok {
			stop()
			t.Fatal("follower 3 s behind was not taken out with MAX_REPLICA_LAG=1s")
		}
		resp, _, id := do(t, "GET", lagged.URL+"/notes/1", nil, nil)
		if resp.Header.Get("X-Served-By") != "primary" || field(lagged.logFor(id), "reason") != "no_replica" {
			t.Errorf("read while the only follower lags: served by %q, want the primary (no_replica)", resp.Header.Get("X-Served-By"))
		}
		pg.exec(pg.StandbyURL, "ALTER SYSTEM SET recovery_min_apply_delay = '0'")
		pg.exec(pg.StandbyURL, "SELECT pg_reload_conf()")
		if _, ok := lagged.waitLog(`msg="upstream caught up"`, 15*time.Second); !ok {
			stop()
			t.Fatal("follower did not rejoin after the delay was lifted")
		}
		stop()
		resp, _, _ = do(t, "GET", lagged.URL+"/notes/1", nil, nil)
		if resp.Header.Get("X-Served-By") != "replica" {
			t.Errorf("read after the follower caught up: served by %q, want the replica", resp.Header.Get("X-Served-By"))
		}
	})

	t.Run("a follower lagging past PIN_TTL serves no stale read", func(t *testing.T) {
		// PIN_TTL is a guess at the lag; with the database URLs the pin
		// knows the write's position and holds until a follower has it.
		// Without them, the pin expires at PIN_TTL: the contrast shows
		// that the check below can fail.
		env := withEnv(envCopy(rt), "PIN_TTL", "1s")
		lsnPins := startRouter(t, env)
		delete(env, "PRIMARY_DATABASE_URL")
		delete(env, "REPLICA_DATABASE_URLS")
		timePins := startRouter(t, env)
		pg.exec(pg.StandbyURL, "ALTER SYSTEM SET recovery_min_apply_delay = '3s'")
		pg.exec(pg.StandbyURL, "SELECT pg_reload_conf()")
		defer func() {
			pg.exec(pg.StandbyURL, "ALTER SYSTEM SET recovery_min_apply_delay = '0'")
			pg.exec(pg.StandbyURL, "SELECT pg_reload_conf()")
		}()
		// The delay applies to WAL written from now on; wait until it
		// shows, so the run below meets a follower 3 s behind. With no
		// requests the router reads positions once a second, so a 3 s
		// delay reads as 2-3 s: 1.5 s is past any lag the follower has
		// without the delay and short of what it shows with it.
		stop := writeSteadily(t, pg.PrimaryURL)
		waitFor(t, "the follower to fall 1.5 s behind", func() bool {
			var lag float64
			for k, v := range scrape(t, lsnPins.URL+"/_router/metrics") {
				if strings.HasPrefix(k, "router_replica_lag_seconds") {
					lag = v
				}
			}
			return lag > 1.5
		})
		stop()
		// A browser drops the cookie at its Max-Age: a cookie jar does too.
		writeThenRead := func(routerURL string) (reads, stale, fromReplica int) {
			jar, _ := cookiejar.New(nil)
			client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
			resp, err := client.Post(routerURL+"/notes", "text/plain", strings.NewReader("mine"))
			if err != nil {
				t.Fatal(err)
			}
			id, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			start := time.Now()
			for time.Since(start) < 3500*time.Millisecond {
				time.Sleep(150 * time.Millisecond)
				resp, err := client.Get(routerURL + "/notes/" + string(id))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				reads++
				if resp.StatusCode == 404 {
					stale++
				}
				if resp.Header.Get("X-Served-By") == "replica" {
					fromReplica++
				}
			}
			return reads, stale, fromReplica
		}
		reads, stale, fromReplica := writeThenRead(lsnPins.URL)
		t.Logf("WAL-position pins, follower 3 s behind, PIN_TTL=1s: %d reads, %d stale, %d from the follower once it had the write", reads, stale, fromReplica)
		if stale != 0 {
			t.Errorf("%d of %d reads missed the client's own write, want 0", stale, reads)
		}
		tReads, tStale, _ := writeThenRead(timePins.URL)
		t.Logf("time pins (no database URLs), same follower: %d reads, %d stale", tReads, tStale)
		if tStale == 0 {
			t.Error("time pins saw no stale read: the follower was not behind, so the check above proved nothing")
		}
		resp, _, _ := do(t, "POST", lsnPins.URL+"/notes", strings.NewReader("x"), nil)
		if c := pinCookie(resp); c == nil || c.MaxAge != 600 {
			t.Errorf("a WAL-position pin's cookie: %v, want Max-Age=600 (LSN_PIN_TTL)", c)
		}
	})

	t.Run("Django admin: read your writes, and a logout that writes", func(t *testing.T) {
		testDjango(t, pg)
	})

	t.Run("poller survives the follower restarting", func(t *testing.T) {
		pg.stopStandby()
		if _, ok := rt.waitLog(`msg="upstream replication unknown"`, 10*time.Second); !ok {
			t.Error("a stopped follower was not reported")
		}
		pg.startStandby()
		if _, ok := rt.waitLog(`msg="upstream replication known"`, 15*time.Second); !ok {
			t.Fatal("poller did not reconnect to the restarted follower")
		}
		// The read-only app's own pool holds connections the restart broke;
		// wait until it answers again, as its health check would show.
		deadline := time.Now().Add(15 * time.Second)
		for {
			resp, err := http.Get(replicaApp.URL + "/notes/1")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the read-only app never recovered from the follower's restart")
			}
			time.Sleep(50 * time.Millisecond)
		}
		for {
			res := readYourWrites(t, rt.URL, 2, 1, false)
			if res.stale != 0 {
				t.Fatalf("%d stale reads after the follower restarted", res.stale)
			}
			if res.fromReplica > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no pin released to the restarted follower")
			}
		}
	})
}

// writeSteadily inserts a note every 50 ms until the returned stop is
// called, so a delayed follower has WAL to fall behind on.
func writeSteadily(t *testing.T, url string) (stop func()) {
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pool.Exec(ctx, "INSERT INTO notes (body) VALUES ('tick')")
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			pool.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// envCopy returns the environment a router was started with, without PORT.
func envCopy(p *routerProc) map[string]string {
	env := map[string]string{}
	for _, kv := range p.cmd.Env {
		k, v, _ := strings.Cut(kv, "=")
		if k != "PORT" && k != "PATH" {
			env[k] = v
		}
	}
	return env
}

func withEnv(env map[string]string, kv ...string) map[string]string {
	for i := 0; i < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}
