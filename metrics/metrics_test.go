package metrics

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/splitapp/router/health"
	"github.com/splitapp/router/replication"
	"github.com/splitapp/router/stats"
)

func TestLabelsStayBounded(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	replica := health.NewUpstream(&url.URL{Scheme: "http", Host: "ro.example.com"}, health.Replica, 1, nil)
	m := New(reg, Options{Upstreams: []*health.Upstream{replica}, Databases: func() []replication.State { return nil }})

	m.Observe(stats.Sample{Method: "GET", Upstream: "replica", Reason: "read", Status: 200, Service: time.Millisecond})
	m.Observe(stats.Sample{Method: "GET", Upstream: "replica", Reason: "read", Status: 204})
	m.Observe(stats.Sample{Method: "PROPFIND", Upstream: "primary", Reason: "write", Status: 207, PinIssued: true})
	m.Observe(stats.Sample{Method: "GET", Upstream: "none", Reason: "all_down", Status: 499})
	m.Observe(stats.Sample{Method: "GET", Upstream: "replica", Reason: "caught_up", Status: 200, Retries: 2})
	m.Observe(stats.Sample{Method: "GET", Upstream: "primary", Reason: "replay", Status: 200})
	m.Observe(stats.Sample{Method: "GET", Upstream: "primary", Reason: "something new", Status: 999})

	want := map[[4]string]float64{
		{"replica", "read", "GET", "2xx"}:      2,
		{"primary", "write", "other", "2xx"}:   1,
		{"none", "all_down", "GET", "4xx"}:     1,
		{"replica", "caught_up", "GET", "2xx"}: 1,
		{"primary", "replay", "GET", "2xx"}:    1,
		{"primary", "other", "GET", "5xx"}:     1,
	}
	for labels, n := range want {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(labels[:]...)); got != n {
			t.Errorf("router_requests_total%v = %v, want %v", labels, got, n)
		}
	}
	if got := testutil.CollectAndCount(m.requests); got != len(want) {
		t.Errorf("%d request series, want %d: unknown values must fold into existing labels", got, len(want))
	}
	for name, want := range map[string]float64{"pins": 1, "retries": 2, "released": 1, "replays": 1} {
		c := map[string]prometheus.Counter{"pins": m.pinsIssued, "retries": m.retries, "released": m.released, "replays": m.replays}[name]
		if got := testutil.ToFloat64(c); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	replica.RecordReplication(100, 3*time.Second, true, 4096, nil)
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP router_replica_lag_bytes WAL the follower behind the replica has yet to replay; NaN while unknown.
# TYPE router_replica_lag_bytes gauge
router_replica_lag_bytes{backend="ro.example.com"} 4096
# HELP router_replica_lag_seconds How far the follower behind the replica is behind the primary, in time; NaN while unknown.
# TYPE router_replica_lag_seconds gauge
router_replica_lag_seconds{backend="ro.example.com"} 3
# HELP router_upstream_up 1 while the upstream takes requests, 0 while checks or an ejection hold it out.
# TYPE router_upstream_up gauge
router_upstream_up{backend="ro.example.com",role="replica"} 1
`), "router_replica_lag_bytes", "router_replica_lag_seconds", "router_upstream_up")
	if err != nil {
		t.Error(err)
	}
}

func BenchmarkObserve(b *testing.B) {
	m := New(prometheus.NewRegistry(), Options{})
	s := stats.Sample{Method: "GET", Upstream: "replica", Reason: "read", Status: 200, Service: 3 * time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		m.Observe(s)
	}
}

// TestVocabularyAgrees: the roles health names are the upstream= words the
// log and the metrics use, and every reason has its own label.
func TestVocabularyAgrees(t *testing.T) {
	t.Parallel()
	if health.Primary.String() != stats.UpstreamPrimary || health.Replica.String() != stats.UpstreamReplica {
		t.Errorf("health's roles %q and %q are not the log's %q and %q", health.Primary, health.Replica, stats.UpstreamPrimary, stats.UpstreamReplica)
	}
	for _, r := range stats.Reasons {
		if i := index(reasonNames[:], string(r)); reasonNames[i] != string(r) {
			t.Errorf("reason %q has no label of its own", r)
		}
	}
}
