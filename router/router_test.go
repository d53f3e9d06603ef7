package router

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/stats"
)

// TestConcurrentTraffic runs the whole proxy path in-process under the race
// detector: reads, writes with pins, pinned reads released to a caught-up
// follower, replays and retries from many goroutines at once. Half the
// clients keep cookies, so their reads after a write are pinned; the other
// half never are.
func TestConcurrentTraffic(t *testing.T) {
	t.Parallel()
	app := func(name string, replay bool) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if replay && r.URL.Path == "/touch" {
				w.Header().Set("X-Router-Replay", "primary")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, name)
		}))
	}
	primaryApp, replicaApp := app("primary", false), app("replica", true)
	defer primaryApp.Close()
	defer replicaApp.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // a replica that refuses connections: reads to it are retried

	up := func(raw string, role health.Role) *health.Upstream {
		u, _ := url.Parse(raw)
		return health.NewUpstream(u, role, 1, &health.Policy{EjectFor: 1})
	}
	pinner, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}})
	var mu sync.Mutex
	counted := map[string]int{}
	replica := up(replicaApp.URL, health.Replica)
	// The follower behind the live replica has replayed the pins' position
	// (42); the dead one's has not, so no pinned read is sent there.
	replica.RecordReplication(100, 0, true, 0, nil)
	rt := New(Options{
		Primary:  up(primaryApp.URL, health.Primary),
		Replicas: []*health.Upstream{replica, up(dead.URL, health.Replica)},
		Pinner:   pinner,
		PinTTL:   1e9,
		LSN:      func(context.Context, bool) (uint64, error) { return 42, nil },
		OnRequest: func(s stats.Sample) {
			mu.Lock()
			counted[string(s.Reason)]++
			mu.Unlock()
		},
		AccessLog: io.Discard,
	})
	defer rt.Close()
	front := serveRouter(t, rt)

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			client := &http.Client{}
			if g%2 == 0 {
				client.Jar, _ = cookiejar.New(nil)
			}
			for i := range 40 {
				var req *http.Request
				switch i % 4 {
				case 0:
					req, _ = http.NewRequest("POST", front+"/items", strings.NewReader("x"))
				case 1:
					req, _ = http.NewRequest("GET", front+"/touch", nil)
				default:
					req, _ = http.NewRequest("GET", front+"/items", nil)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("goroutine %d request %d: %v", g, i, err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("%s %s: %d %q", req.Method, req.URL.Path, resp.StatusCode, body)
				}
			}
		})
	}
	wg.Wait()
	if rt.Inflight() != 0 {
		t.Errorf("%d requests still counted in flight", rt.Inflight())
	}
	mu.Lock()
	defer mu.Unlock()
	// Each client's 40 requests: 10 writes, 10 reads that replay, 20 reads;
	// a client with cookies has its 20 reads released to the caught-up
	// follower.
	if counted["write"] != 80 || counted["replay"] != 80 || counted["read"] != 80 || counted["caught_up"] != 80 {
		t.Errorf("reasons counted: %v, want 80 writes, 80 replays, 80 reads, 80 caught_up", counted)
	}
}
