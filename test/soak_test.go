package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak runs mixed reads and writes at steady concurrency for
// SOAK_DURATION while faults are injected: a replica killed and restarted,
// a slow replica path, clients that give up mid-request. It checks that
// every acknowledged write reached the primary exactly once, that no write
// was repeated, that failures are only the faults', and that the router's
// memory and goroutines stay flat. test/run.sh runs it on its own.
func TestSoak(t *testing.T) {
	raw := os.Getenv("SOAK_DURATION")
	if raw == "" {
		t.Skip("set SOAK_DURATION (e.g. 2m) to run the soak test; test/run.sh does")
	}
	duration, err := time.ParseDuration(raw)
	if err != nil || duration < 20*time.Second {
		t.Fatalf("SOAK_DURATION=%q: want a duration of at least 20s", raw)
	}

	primary, a, b := newUpstream(t, "primary"), newUpstream(t, "a"), newUpstream(t, "b")
	var writesMu sync.Mutex
	writes := map[string]int{}
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Method == "POST" {
			writesMu.Lock()
			writes[r.Header.Get("X-Request-Id")]++
			writesMu.Unlock()
			w.WriteHeader(201)
		}
		io.WriteString(w, "ok")
	})
	slow := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(200 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "ok")
	}
	a.handle(slow)
	b.handle(slow)
	env := healthEnv(primary, a, b)
	env["ADMIN_TOKEN"] = adminToken
	env["UPSTREAM_TIMEOUT"] = "2s"
	rt := startRouter(t, env)

	ctx, stop := context.WithTimeout(context.Background(), duration)
	defer stop()
	var (
		reads, writesSent, aborted atomic.Int64
		readFails, writeFails      atomic.Int64
		ackedMu                    sync.Mutex
		acked                      []string
		firstFailure               atomic.Value
		seq                        atomic.Int64
	)
	fail := func(counter *atomic.Int64, what string) {
		counter.Add(1)
		firstFailure.CompareAndSwap(nil, what)
	}
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for w := range 12 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				n := seq.Add(1)
				id := fmt.Sprintf("soak-%d-%016d", w, n)
				switch {
				case i%40 == 39: // a client that gives up on a slow read
					actx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
					req, _ := http.NewRequestWithContext(actx, "GET", rt.URL+"/slow", nil)
					if resp, err := client.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					cancel()
					aborted.Add(1)
				case i%3 == 0:
					writesSent.Add(1)
					req, _ := http.NewRequest("POST", rt.URL+"/items", strings.NewReader(`{"n":1}`))
					req.Header.Set("X-Request-Id", id)
					resp, err := client.Do(req)
					if err != nil {
						fail(&writeFails, "write: "+err.Error())
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 == 2 {
						ackedMu.Lock()
						acked = append(acked, id)
						ackedMu.Unlock()
					} else {
						fail(&writeFails, fmt.Sprintf("write: status %d", resp.StatusCode))
					}
				default:
					reads.Add(1)
					path := "/items"
					if i%10 == 5 {
						path = "/slow"
					}
					resp, err := client.Get(rt.URL + path)
					if err != nil {
						fail(&readFails, "read: "+err.Error())
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						fail(&readFails, fmt.Sprintf("read: status %d", resp.StatusCode))
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}

	// The upstream recorder keeps every request; the soak only needs the
	// primary's write ledger, so the recorders are emptied as it runs.
	wg.Go(func() {
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			for _, u := range []*upstream{primary, a, b} {
				u.mu.Lock()
				u.requests = nil
				u.mu.Unlock()
			}
		}
	})

	// Faults: replica a dies every 15 s and comes back 4 s later.
	wg.Go(func() {
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(15 * time.Second):
			}
			a.crash()
			select {
			case <-ctx.Done():
			case <-time.After(4 * time.Second):
			}
			if err := a.restart(); err != nil {
				t.Error(err)
				return
			}
		}
	})

	// Samples of the router's memory and goroutines every 5 s.
	type sample struct {
		at         time.Duration
		rssKB      int
		goroutines float64
	}
	var samples []sample
	start := time.Now()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			m := scrape(t, rt.URL+"/_router/metrics")
			samples = append(samples, sample{time.Since(start), currentRSSKB(t, rt.cmd.Process.Pid), m["go_goroutines"]})
		}
	})
	wg.Wait()

	t.Logf("soak: %s, %d reads, %d writes (%d acknowledged), %d client aborts, %d read failures, %d write failures",
		duration, reads.Load(), writesSent.Load(), len(acked), aborted.Load(), readFails.Load(), writeFails.Load())
	if f := firstFailure.Load(); f != nil {
		t.Logf("soak: first failure: %v", f)
	}
	if readFails.Load() != 0 || writeFails.Load() != 0 {
		t.Errorf("failures beyond the injected client aborts: %d reads, %d writes", readFails.Load(), writeFails.Load())
	}
	writesMu.Lock()
	for _, id := range acked {
		if n := writes[id]; n != 1 {
			t.Errorf("acknowledged write %s reached the primary %d times, want exactly 1", id, n)
		}
	}
	for id, n := range writes {
		if n > 1 {
			t.Errorf("write %s was repeated: the primary got it %d times", id, n)
		}
	}
	writesMu.Unlock()

	// Flat: compare the first third of the samples with the last third.
	if len(samples) < 3 {
		t.Fatalf("only %d samples", len(samples))
	}
	third := len(samples) / 3
	avg := func(ss []sample) (rss, gr float64) {
		for _, s := range ss {
			rss += float64(s.rssKB)
			gr += s.goroutines
		}
		return rss / float64(len(ss)), gr / float64(len(ss))
	}
	rss1, gr1 := avg(samples[:third])
	rss2, gr2 := avg(samples[len(samples)-third:])
	t.Logf("soak: router RSS %.1f MB -> %.1f MB, goroutines %.0f -> %.0f (first vs last third of %d samples)",
		rss1/1024, rss2/1024, gr1, gr2, len(samples))
	if rss2 > rss1*1.25+4096 {
		t.Errorf("router RSS grew from %.1f MB to %.1f MB", rss1/1024, rss2/1024)
	}
	if gr2 > gr1*1.25+20 {
		t.Errorf("router goroutines grew from %.0f to %.0f", gr1, gr2)
	}
}

// currentRSSKB reads VmRSS from /proc.
func currentRSSKB(t *testing.T, pid int) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var kb int
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
		}
	}
	return kb
}
