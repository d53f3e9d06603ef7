package router

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/splitapp/router/internal/view"
)

func TestLearnedRoutesExpireAndStayBounded(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	l := newLearnedRoutes(10 * time.Minute)
	l.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	known := func(method, path string) bool { return l.find(method, path) != nil }
	if known("GET", "/logout") {
		t.Fatal("an empty table sent a read to the primary")
	}
	l.learn("GET", "/logout")
	if !known("GET", "/logout") || known("HEAD", "/logout") || known("GET", "/logout/x") {
		t.Fatal("a learned route is not matched exactly by method and path")
	}
	l.find("GET", "/logout").served.Add(1) // as plan counts a read it routes
	advance(10*time.Minute - time.Nanosecond)
	if !known("GET", "/logout") {
		t.Fatal("a learned route expired early")
	}
	advance(time.Nanosecond)
	if known("GET", "/logout") {
		t.Fatal("a learned route outlived REPLAY_LEARN_TTL")
	}
	l.learn("GET", "/logout") // replayed again: learned again
	snap := l.snapshot()
	if len(snap) != 1 || snap[0].Replays != 2 || snap[0].Served != 1 {
		t.Errorf("snapshot %+v, want one route with 2 replays and 1 read served", snap)
	}

	l.max = 8
	for i := range 20 {
		advance(time.Second)
		l.learn("GET", fmt.Sprintf("/notes/%d/read", i))
	}
	if n := len(l.snapshot()); n != 8 {
		t.Errorf("table holds %d routes, want the bound of 8", n)
	}
	if !known("GET", "/notes/19/read") || known("GET", "/notes/0/read") {
		t.Error("the bound evicted the newest route instead of the oldest")
	}

	var off *learnedRoutes // REPLAY_LEARN_TTL=0
	off.learn("GET", "/x")
	if off.find("GET", "/x") != nil || off.snapshot() != nil {
		t.Error("a disabled table learned")
	}
}

func BenchmarkLearnedLookupEmpty(b *testing.B) {
	l := newLearnedRoutes(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		l.find("GET", "/items")
	}
}

// TestLearnedRoutesKeepTheirOwnKeys: a route is learned from views of a
// request's buffer, which later requests overwrite; the table must not.
func TestLearnedRoutesKeepTheirOwnKeys(t *testing.T) {
	t.Parallel()
	l := newLearnedRoutes(time.Minute)
	buf := []byte("GET/logout")
	l.learn(view.String(buf[:3]), view.String(buf[3:]))
	copy(buf, "PUT/lo9out")
	if l.find("GET", "/logout") == nil {
		t.Error("the learned route changed with the buffer it was read from")
	}
}
