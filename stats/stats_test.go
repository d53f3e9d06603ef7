package stats

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestBucketsAreWithinTenPercent(t *testing.T) {
	t.Parallel()
	for d := 200 * time.Microsecond; d < 5*time.Minute; d = d * 13 / 10 {
		got := bucketValue(bucketOf(d))
		if ratio := float64(got) / float64(d); math.Abs(ratio-1) > 0.1 {
			t.Errorf("%s lands in a bucket valued %s (%.2fx)", d, got, ratio)
		}
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	var c Counter
	for i := range 100 {
		c.Add(Sample{Upstream: "replica", Reason: "read", Read: true, Status: 200, Service: time.Duration(i+1) * time.Millisecond})
	}
	for range 50 {
		c.Add(Sample{Upstream: "primary", Reason: "pinned", Read: true, Pinned: true, Status: 200, Service: 10 * time.Millisecond})
	}
	c.Add(Sample{Upstream: "primary", Reason: "write", PinIssued: true, Status: 201, Service: 20 * time.Millisecond})
	c.Add(Sample{Upstream: "primary", Reason: "no_replica", Read: true, Status: 504, Code: "upstream_timeout", Retries: 1, Service: time.Second})
	c.Add(Sample{Upstream: "none", Reason: "primary_down", Status: 503, Code: "unavailable"})

	s := Summarize(10*time.Second, &c)
	if s.Requests != 153 || s.Reads != 151 || s.ReplicaReads != 100 || s.Pinned != 50 || s.PinsIssued != 1 ||
		s.Fallbacks != 2 || s.Retries != 1 || s.Status5xx != 2 {
		t.Errorf("counts = %+v", s)
	}
	if s.RequestsPerS != 15.3 || math.Abs(s.ReplicaShare-100.0/151) > 1e-9 {
		t.Errorf("rate %v share %v", s.RequestsPerS, s.ReplicaShare)
	}
	if s.Errors["upstream_timeout"] != 1 || s.Errors["unavailable"] != 1 || len(s.Errors) != 2 {
		t.Errorf("errors = %v", s.Errors)
	}
	r := s.Latency["replica"]
	if r.Count != 100 || !near(r.P50, 50*time.Millisecond) || !near(r.P99, 99*time.Millisecond) {
		t.Errorf("replica latency = %+v, want p50 ~50ms p99 ~99ms", r)
	}
	if p := s.Latency["primary"]; p.Count != 52 || !near(p.P50, 10*time.Millisecond) {
		t.Errorf("primary latency = %+v", p)
	}
}

func near(got, want time.Duration) bool {
	return math.Abs(float64(got)/float64(want)-1) <= 0.1
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestWindowForgetsOldSeconds(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	w := NewWindow(60*time.Second, c.now)
	for range 10 {
		w.Add(Sample{Upstream: "replica", Read: true})
	}
	c.add(30 * time.Second)
	for range 5 {
		w.Add(Sample{Upstream: "primary", Read: true})
	}
	if s := w.Last(time.Minute); s.Reads != 15 || s.ReplicaReads != 10 {
		t.Errorf("last minute: %d reads, %d from replicas; want 15 and 10", s.Reads, s.ReplicaReads)
	}
	if s := w.Last(10 * time.Second); s.Reads != 5 {
		t.Errorf("last 10s: %d reads, want 5", s.Reads)
	}
	series := w.Series(10*time.Second, 6)
	if series[5].Reads != 5 || series[5].ReplicaShare != 0 || series[2].Reads != 10 || series[2].ReplicaShare != 1 {
		t.Errorf("series = %+v", series)
	}
	// A full minute later the slot of the first second is reused.
	c.add(31 * time.Second)
	w.Add(Sample{Upstream: "replica", Read: true})
	if s := w.Last(time.Minute); s.Reads != 6 {
		t.Errorf("after the window moved on: %d reads, want 6", s.Reads)
	}
}

func TestWindowConcurrentAdd(t *testing.T) {
	t.Parallel()
	w := NewWindow(time.Minute, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				w.Add(Sample{Upstream: "replica", Read: true, Service: time.Millisecond})
			}
		})
	}
	wg.Wait()
	if s := w.Last(time.Minute); s.Requests != 8000 {
		t.Errorf("counted %d of 8000 concurrent samples", s.Requests)
	}
}

func BenchmarkWindowAdd(b *testing.B) {
	w := NewWindow(5*time.Minute, nil)
	s := Sample{Upstream: "replica", Reason: "read", Read: true, Status: 200, Service: 3 * time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		w.Add(s)
	}
}

func TestParseLogfmtRejectsRepeatedKeys(t *testing.T) {
	t.Parallel()
	if f := ParseLogfmt(`at=info status=200 path="/a b" status=999`); f != nil {
		t.Errorf("a line with status twice parsed as %v", f)
	}
	f := ParseLogfmt(`at=info path="/a \"b\"" status=200`)
	if f["path"] != `/a "b"` || f["status"] != "200" {
		t.Errorf("fields = %v", f)
	}
}

func TestRoutesListReadsThatWrote(t *testing.T) {
	t.Parallel()
	var r Routes
	for _, line := range []string{
		`at=info method=GET path="/admin/logout/" host=x request_id=a fwd="1.2.3.4" upstream=primary backend=p reason=replay pinned=false pin_issued=true retries=0 replayed_from=ro replayed_status=500 replayed_service=3ms status=302 bytes=0 connect=0ms service=9ms`,
		`at=info method=GET path="/admin/logout/?next=/" host=x request_id=b fwd="1.2.3.4" upstream=primary backend=p reason=learned pinned=false pin_issued=false retries=0 status=302 bytes=0 connect=0ms service=5ms`,
		`at=info method=GET path="/admin/logout/" host=x request_id=c fwd="1.2.3.4" upstream=primary backend=p reason=learned pinned=false pin_issued=false retries=0 status=302 bytes=0 connect=0ms service=5ms`,
		`at=info method=GET path="/touch" host=x request_id=d fwd="1.2.3.4" upstream=primary backend=p reason=replay pinned=false pin_issued=true retries=0 status=200 bytes=2 connect=0ms service=5ms`,
		`at=info method=GET path="/touch" host=x request_id=e fwd="1.2.3.4" upstream=primary backend=p reason=replay pinned=false pin_issued=true retries=0 status=200 bytes=2 connect=0ms service=5ms`,
		`at=info method=GET path="/items" host=x request_id=f fwd="1.2.3.4" upstream=replica backend=ro reason=read pinned=false pin_issued=false retries=0 status=200 bytes=2 connect=0ms service=5ms`,
	} {
		s, _, ok := ParseLine(line)
		if !ok {
			t.Fatalf("not a request line: %s", line)
		}
		r.Add(s)
	}
	want := "  replayed on the primary: GET /touch 2 times, then sent there 0 times (learned)\n" +
		"  replayed on the primary: GET /admin/logout/ 1 times, then sent there 2 times (learned)\n"
	if got := r.Format(); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	var none Routes
	if got := none.Format(); got != "" {
		t.Errorf("no replays formatted as %q, want nothing", got)
	}
}
