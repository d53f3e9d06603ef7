package router

import (
	"bufio"
	"net"
	"testing"
	"time"
)

func pipePconn(t *testing.T) (*pconn, net.Conn) {
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
	server := <-accepted
	t.Cleanup(func() { c.Close(); server.Close() })
	return &pconn{key: connKey{"http", "x"}, conn: c, raw: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}, server
}

func TestAliveSeesTheUpstreamClose(t *testing.T) {
	t.Parallel()
	pc, server := pipePconn(t)
	if !pc.alive() {
		t.Fatal("an open idle connection is reported dead")
	}
	server.Write([]byte("HTTP/1.1 200 OK\r\n")) // bytes nobody asked for
	time.Sleep(20 * time.Millisecond)
	if pc.alive() {
		t.Error("a connection with unsolicited bytes is reported alive")
	}

	pc2, server2 := pipePconn(t)
	server2.Close()
	deadline := time.Now().Add(2 * time.Second)
	for pc2.alive() {
		if time.Now().After(deadline) {
			t.Fatal("a connection the upstream closed is still reported alive")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPoolIsAStackThatDropsExpiredConnections(t *testing.T) {
	t.Parallel()
	tr := &transport{maxIdlePerHost: 2, idleTimeout: time.Minute}
	a, _ := pipePconn(t)
	b, _ := pipePconn(t)
	c, _ := pipePconn(t)
	tr.put(a)
	tr.put(b)
	tr.put(c) // over maxIdlePerHost: closed
	if got := tr.popIdle(connKey{"http", "x"}); got != b {
		t.Error("pop did not return the most recently pooled connection")
	}
	tr.put(b)
	tr.idle[connKey{"http", "x"}][0].idleSince = time.Now().Add(-2 * time.Minute) // a is stale
	d, _ := pipePconn(t)
	tr.popIdle(connKey{"http", "x"}) // b
	tr.put(d)
	if list := tr.idle[connKey{"http", "x"}]; len(list) != 1 || list[0] != d {
		t.Errorf("pool after a put = %d connections, want only the fresh one (the stale one dropped)", len(list))
	}
	tr.CloseIdleConnections()
	e, _ := pipePconn(t)
	tr.put(e)
	if tr.popIdle(connKey{"http", "x"}) != nil {
		t.Error("a closed transport pooled a connection")
	}
}
