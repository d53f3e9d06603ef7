package health

import (
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestUpstream(p Policy) (*Upstream, *fakeClock) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	p.Now = clock.Now
	return NewUpstream(&url.URL{Scheme: "http", Host: "ro.example.com"}, Replica, 1, &p), clock
}

func TestFallAndRise(t *testing.T) {
	t.Parallel()
	u, _ := newTestUpstream(Policy{Fall: 2, Rise: 3})
	if !u.Available() {
		t.Fatal("a new upstream must be available before its first check")
	}
	steps := []struct {
		passed    bool
		wantAvail bool
		wantEvent string
	}{
		{false, true, ""},
		{false, false, "down"},
		{false, false, ""},
		{true, false, ""},
		{true, false, ""},
		{false, false, ""}, // a failure resets the rise count
		{true, false, ""},
		{true, false, ""},
		{true, true, "up"},
		{true, true, ""},
		{false, true, ""},
		{true, true, ""}, // a pass resets the fall count
		{false, true, ""},
		{false, false, "down"},
	}
	for i, s := range steps {
		ev, changed := u.RecordCheck(s.passed, time.Millisecond, "status 503")
		gotEvent := ""
		if changed {
			gotEvent = string(ev.Kind)
		}
		if gotEvent != s.wantEvent || u.Available() != s.wantAvail {
			t.Fatalf("step %d (passed=%v): event %q available %v, want %q %v", i, s.passed, gotEvent, u.Available(), s.wantEvent, s.wantAvail)
		}
	}
	if snap := u.Snapshot(); !snap.CheckedDown || snap.LastError != "status 503" || snap.LastCheck.IsZero() {
		t.Errorf("snapshot = %+v", snap)
	}
}

func TestEjectionBackoff(t *testing.T) {
	t.Parallel()
	u, clock := newTestUpstream(Policy{EjectFor: time.Second, EjectMax: 5 * time.Second})
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		ev, changed := u.Eject("connection refused")
		if !changed || ev.Kind != "ejected" || ev.For != want {
			t.Fatalf("ejection %d: %+v changed=%v, want ejected for %s", i+1, ev, changed, want)
		}
		if u.Available() {
			t.Fatalf("ejection %d: still available", i+1)
		}
		if _, again := u.Eject("another in-flight failure"); again {
			t.Fatalf("ejection %d was extended by a failure during it", i+1)
		}
		clock.Advance(want - time.Millisecond)
		if u.Available() {
			t.Fatalf("ejection %d ended early", i+1)
		}
		clock.Advance(time.Millisecond)
		if !u.Available() {
			t.Fatalf("ejection %d did not end after %s", i+1, want)
		}
	}
	u.RecordResponse(200)
	if ev, _ := u.Eject("refused"); ev.For != time.Second {
		t.Errorf("after a success the ejection lasts %s, want the base 1s", ev.For)
	}
	if got := u.Snapshot().Ejections; got != 6 {
		t.Errorf("ejections = %d, want 6", got)
	}
}

func TestPassingCheckReadmitsEjected(t *testing.T) {
	t.Parallel()
	u, _ := newTestUpstream(Policy{EjectFor: time.Hour})
	u.Eject("reset")
	if u.Available() {
		t.Fatal("ejected upstream available")
	}
	ev, changed := u.RecordCheck(true, time.Millisecond, "")
	if !changed || ev.Kind != "up" || !u.Available() {
		t.Errorf("a passing check during ejection: %+v changed=%v available=%v, want re-admitted", ev, changed, u.Available())
	}
}

func TestEjectAfter5xx(t *testing.T) {
	t.Parallel()
	u, _ := newTestUpstream(Policy{EjectAfter5xx: 3})
	u.RecordResponse(500)
	u.RecordResponse(502)
	u.RecordResponse(200) // breaks the run
	u.RecordResponse(500)
	u.RecordResponse(503)
	if !u.Available() {
		t.Fatal("ejected before 3 consecutive 5xx")
	}
	if ev, changed := u.RecordResponse(500); !changed || ev.Kind != "ejected" || u.Available() {
		t.Errorf("third consecutive 5xx: %+v changed=%v, want ejected", ev, changed)
	}

	off, _ := newTestUpstream(Policy{})
	for range 100 {
		off.RecordResponse(500)
	}
	if !off.Available() {
		t.Error("5xx ejected an upstream with EjectAfter5xx off")
	}
}

func TestConcurrentEjectFiresOnce(t *testing.T) {
	t.Parallel()
	u, _ := newTestUpstream(Policy{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	events := 0
	for range 50 {
		wg.Go(func() {
			if _, changed := u.Eject("refused"); changed {
				mu.Lock()
				events++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if events != 1 {
		t.Errorf("50 concurrent failures fired %d ejections, want 1", events)
	}
}

func BenchmarkAvailable(b *testing.B) {
	u, _ := newTestUpstream(Policy{})
	b.ReportAllocs()
	for b.Loop() {
		if !u.Available() {
			b.Fatal("unavailable")
		}
	}
}

func TestLagEjection(t *testing.T) {
	t.Parallel()
	u, _ := newTestUpstream(Policy{MaxLag: time.Second})
	steps := []struct {
		lag       time.Duration
		err       error
		wantAvail bool
		wantEvent string
	}{
		{100 * time.Millisecond, nil, true, ""},
		{2 * time.Second, nil, false, "lagging"},
		{3 * time.Second, nil, false, ""},
		{0, errPoll, false, "replication unknown"}, // unknown keeps the last verdict
		{0, errPoll, false, ""},
		{900 * time.Millisecond, nil, true, "caught up"},
		{0, errPoll, true, "replication unknown"},
		{0, nil, true, "replication known"},
	}
	for i, s := range steps {
		ev, changed := u.RecordReplication(uint64(100+i), s.lag, true, 0, s.err)
		got := ""
		if changed {
			got = string(ev.Kind)
		}
		if got != s.wantEvent || u.Available() != s.wantAvail {
			t.Fatalf("step %d: event %q available %v, want %q %v", i, got, u.Available(), s.wantEvent, s.wantAvail)
		}
	}
}

func TestFailedPollForgetsReplayPosition(t *testing.T) {
	t.Parallel()
	u, _ := newTestUpstream(Policy{})
	u.RecordReplication(500, 0, true, 0, nil)
	u.RecordReplication(0, 0, true, 0, errPoll)
	if got := u.Replayed(); got != 0 {
		t.Errorf("Replayed after a failed poll = %d, want 0 (unknown)", got)
	}
	u.RecordReplication(300, 0, true, 0, nil) // a restarted follower that lost some replay
	if got := u.Replayed(); got != 300 {
		t.Errorf("Replayed = %d, want what the follower says now, 300", got)
	}
}

var errPoll = errors.New("connection refused")

// TestConcurrentFailuresFirstEjectionLastsEjectFor: however many failures
// arrive at once, the first ejection lasts exactly EjectFor, and the streak
// grows by one per ejection, not per failure.
func TestConcurrentFailuresFirstEjectionLastsEjectFor(t *testing.T) {
	t.Parallel()
	u, clock := newTestUpstream(Policy{EjectFor: time.Second, EjectMax: time.Hour})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var durations []time.Duration
	start := make(chan struct{})
	for range 64 {
		wg.Go(func() {
			<-start
			if ev, changed := u.RecordFailure(Connect, "connection refused"); changed {
				mu.Lock()
				durations = append(durations, ev.For)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(durations) != 1 || durations[0] != time.Second {
		t.Fatalf("64 concurrent failures: ejections %v, want exactly one of 1s", durations)
	}
	clock.Advance(time.Second - time.Nanosecond)
	if u.Available() {
		t.Fatal("the first ejection ended early")
	}
	clock.Advance(time.Nanosecond)
	if !u.Available() {
		t.Fatal("the first ejection lasted longer than EjectFor")
	}
	if ev, _ := u.RecordFailure(Connect, "refused"); ev.For != 2*time.Second {
		t.Errorf("second ejection lasts %s, want 2s (the streak grew once)", ev.For)
	}
}

// TestNoFailureLostToAnExpiringEjection: a failure that arrives while
// Available clears an expired ejection still ejects.
func TestNoFailureLostToAnExpiringEjection(t *testing.T) {
	t.Parallel()
	for range 200 {
		u, clock := newTestUpstream(Policy{EjectFor: time.Second})
		u.RecordFailure(Connect, "refused")
		clock.Advance(time.Second) // the ejection has just ended
		var wg sync.WaitGroup
		var ejected bool
		wg.Go(func() { _, ejected = u.RecordFailure(Connect, "refused again") })
		wg.Go(func() { u.Available() })
		wg.Wait()
		if !ejected || u.Available() {
			t.Fatal("a failure racing the end of an ejection was dropped")
		}
	}
}

func TestGatewayFailuresEjectOnlyInARow(t *testing.T) {
	t.Parallel()
	u, _ := newTestUpstream(Policy{EjectAfterFailures: 3})
	for _, c := range []Class{Timeout, Reset} {
		u.RecordFailure(c, "x")
	}
	u.RecordResponse(200) // a success breaks the run
	for i, c := range []Class{Timeout, BadResponse} {
		if _, changed := u.RecordFailure(c, "x"); changed || !u.Available() {
			t.Fatalf("failure %d after a success ejected", i+1)
		}
	}
	for range 10 {
		u.RecordFailure(Client, "client left")
		u.RecordFailure(StaleConn, "stale")
	}
	if !u.Available() {
		t.Fatal("client and stale-connection failures ejected")
	}
	if ev, changed := u.RecordFailure(Aborted, "mid-body"); !changed || ev.Kind != "ejected" {
		t.Fatalf("third gateway failure in a row: %+v changed=%v, want ejected", ev, changed)
	}
	snap := u.Snapshot()
	if snap.LastFailure != "aborted" || u.Failures(Client) != 10 || u.Failures(Timeout) != 2 {
		t.Errorf("last failure %q, client %d, timeout %d; want aborted, 10, 2", snap.LastFailure, u.Failures(Client), u.Failures(Timeout))
	}
}

func TestPrimaryIsNeverPassivelyEjected(t *testing.T) {
	t.Parallel()
	p := NewUpstream(&url.URL{Scheme: "http", Host: "primary"}, Primary, 1, &Policy{EjectAfter5xx: 1, EjectAfterFailures: 1})
	for _, c := range []Class{Connect, Reset, Timeout, BadResponse, Aborted} {
		for range 10 {
			if _, changed := p.RecordFailure(c, "x"); changed {
				t.Fatalf("a %s failure ejected the primary", c)
			}
		}
	}
	p.RecordResponse(500)
	p.Eject("anything")
	if !p.Available() {
		t.Error("the primary was taken out passively")
	}
	if p.Snapshot().LastFailure != "aborted" {
		t.Errorf("last failure %q, want aborted", p.Snapshot().LastFailure)
	}
}

func TestAtMostHalfTheReplicasEjectedForGatewayFailures(t *testing.T) {
	t.Parallel()
	policy := &Policy{EjectAfterFailures: 1}
	var ups []*Upstream
	for _, h := range []string{"a", "b", "c", "d"} {
		ups = append(ups, NewUpstream(&url.URL{Scheme: "http", Host: h}, Replica, 1, policy))
	}
	ShareEjections(ups)
	ejected := 0
	for _, u := range ups {
		if _, changed := u.RecordFailure(Timeout, "slow"); changed {
			ejected++
		}
	}
	if ejected != 2 {
		t.Errorf("every replica timing out ejected %d of 4, want 2 (half)", ejected)
	}
	// A refused connection is no judgement call: it ejects past the cap.
	if _, changed := ups[3].RecordFailure(Connect, "refused"); !changed {
		t.Error("a refused connection did not eject beyond the cap")
	}

	single := NewUpstream(&url.URL{Scheme: "http", Host: "only"}, Replica, 1, policy)
	ShareEjections([]*Upstream{single})
	if _, changed := single.RecordFailure(Reset, "reset"); !changed {
		t.Error("a sole replica could not be ejected: the cap allows at least one")
	}
}
