package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckOnce(t *testing.T) {
	t.Parallel()
	var status atomic.Int32
	status.Store(200)
	var userAgent, path atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userAgent.Store(r.UserAgent())
		path.Store(r.URL.Path)
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	u := NewUpstream(mustURL(t, srv.URL), Replica, 1, &Policy{Fall: 2, Rise: 2})
	var events []Event
	c := NewChecker(CheckerOptions{Upstreams: []*Upstream{u}, Path: "/up", Timeout: time.Second,
		OnEvent: func(e Event) { events = append(events, e) }})
	ctx := context.Background()

	c.CheckOnce(ctx)
	if userAgent.Load() != UserAgent || path.Load() != "/up" {
		t.Errorf("check sent User-Agent %q to %q, want %q to /up", userAgent.Load(), path.Load(), UserAgent)
	}
	status.Store(302)
	c.CheckOnce(ctx)
	if !u.Available() || len(events) != 0 {
		t.Fatalf("2xx and 3xx must pass; events %v", events)
	}
	status.Store(503)
	c.CheckOnce(ctx)
	c.CheckOnce(ctx)
	if u.Available() || len(events) != 1 || events[0].Kind != "down" || !strings.Contains(events[0].Cause, "status 503") {
		t.Fatalf("after two 503s: available=%v events=%+v", u.Available(), events)
	}
	status.Store(200)
	c.CheckOnce(ctx)
	c.CheckOnce(ctx)
	if !u.Available() || len(events) != 2 || events[1].Kind != "up" {
		t.Fatalf("after two passes: available=%v events=%+v", u.Available(), events)
	}
}

func TestCheckTimesOutOnHungUpstream(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		// Accept and never answer.
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	u := NewUpstream(mustURL(t, "http://"+ln.Addr().String()), Replica, 1, &Policy{Fall: 1})
	c := NewChecker(CheckerOptions{Upstreams: []*Upstream{u}, Timeout: 100 * time.Millisecond})
	c.CheckOnce(context.Background())
	if u.Available() {
		t.Fatal("a hung upstream passed its check")
	}
	if got := u.Snapshot().LastError; !strings.Contains(got, "no answer within 100ms") {
		t.Errorf("last error %q, want it to say the check timed out", got)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	var checks atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { checks.Add(1) }))
	defer srv.Close()
	u := NewUpstream(mustURL(t, srv.URL), Primary, 1, nil)
	c := NewChecker(CheckerOptions{Upstreams: []*Upstream{u}, Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Run(ctx)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for checks.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("checker did not run repeatedly")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSwitchingProtocolsFailsACheck: a check answered with 101 fails at
// once; its body is the switched connection, which need never end, so it
// is not read.
func TestSwitchingProtocolsFailsACheck(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	defer close(hold)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		buf.Flush()
		<-hold
	}))
	defer srv.Close()
	u := NewUpstream(mustURL(t, srv.URL), Replica, 1, &Policy{Fall: 1})
	var events []Event
	c := NewChecker(CheckerOptions{Upstreams: []*Upstream{u}, Timeout: time.Minute,
		OnEvent: func(e Event) { events = append(events, e) }})
	done := make(chan struct{})
	go func() {
		c.CheckOnce(context.Background())
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a check answered with 101 did not return")
	}
	if len(events) != 1 || events[0].Kind != "down" || !strings.Contains(events[0].Cause, "status 101") {
		t.Errorf("events %+v, want the upstream down for status 101", events)
	}
}
