package http1

import (
	"net"
	"testing"
	"time"
)

// connPair returns a connection to an app, as the pool holds one, and the
// app's end of it.
func connPair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	app := <-accepted
	t.Cleanup(func() { c.Close(); app.Close() })
	return newConn(testTarget, c, c), app
}

// testTarget is the pool of the test connections.
var testTarget = &Target{scheme: "http", host: "x"}

// eventually polls cond until it holds, failing the test after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5 s for %s", what)
		}
	}
}

func TestAliveSeesTheUpstreamClose(t *testing.T) {
	t.Parallel()
	c, app := connPair(t)
	if !c.Alive() {
		t.Fatal("an open idle connection is reported dead")
	}
	app.Write([]byte("HTTP/1.1 200 OK\r\n")) // bytes nobody asked for
	eventually(t, "a connection with unsolicited bytes to be reported dead", func() bool { return !c.Alive() })

	c2, app2 := connPair(t)
	app2.Close()
	eventually(t, "a connection the upstream closed to be reported dead", func() bool { return !c2.Alive() })
}

func TestPoolIsAStackThatDropsExpiredConnections(t *testing.T) {
	t.Parallel()
	tr := &transport{maxIdlePerHost: 2, idleTimeout: time.Minute}
	a, _ := connPair(t)
	b, _ := connPair(t)
	c, _ := connPair(t)
	tr.put(a)
	tr.put(b)
	tr.put(c) // over maxIdlePerHost: closed
	if got := tr.popIdle(testTarget); got != b {
		t.Error("pop did not return the most recently pooled connection")
	}
	tr.put(b)
	tr.idle[testTarget][0].idleSince = time.Now().Add(-2 * time.Minute) // a is stale
	d, _ := connPair(t)
	tr.popIdle(testTarget) // b
	tr.put(d)
	if list := tr.idle[testTarget]; len(list) != 1 || list[0] != d {
		t.Errorf("pool after a put = %d connections, want only the fresh one (the stale one dropped)", len(list))
	}
	tr.closeIdle()
	e, _ := connPair(t)
	tr.put(e)
	if tr.popIdle(testTarget) != nil {
		t.Error("a closed transport pooled a connection")
	}
}

// TestOneLookAtASocket: the probe every check shares tells a quiet socket
// from one with bytes waiting and one its peer closed.
func TestOneLookAtASocket(t *testing.T) {
	t.Parallel()
	c, app := connPair(t)
	var p probe
	if got := p.lookAt(c.raw); got != socketQuiet {
		t.Errorf("idle socket: %d, want quiet (%d)", got, socketQuiet)
	}
	app.Write([]byte("x"))
	eventually(t, "the byte to be seen", func() bool { return p.lookAt(c.raw) == socketData })
	c.raw.Read(make([]byte, 1))
	app.Close()
	eventually(t, "the close to be seen", func() bool { return p.lookAt(c.raw) == socketClosed })
}
