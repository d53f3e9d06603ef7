package http1

import (
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"
)

// tunnel hands the client's connection over to the upgraded protocol
// (WebSocket): once the 101 is relayed, bytes are copied both ways. A side
// that finishes sending is half-closed on the other (CloseWrite), as
// httputil's copier does, and the tunnel ends when both directions have.
// Writes that make no progress for CLIENT_SEND_TIMEOUT (to the client) or
// UPSTREAM_SEND_TIMEOUT (to the app) end it too, and so does shutdown. The
// stream's done is told then.
func (p *Proxy) tunnel(s *Stream, c *Conn) {
	c.setReadDeadline(time.Time{})
	head := append([]byte(nil), s.Ctx.Response.Header.Header()...)
	s.Ctx.HijackSetNoResponse(true)
	s.Ctx.Hijack(func(hijacked net.Conn) {
		// fasthttp's hijacked connection reads what the client sent after
		// its request first; its Close does nothing, so the socket itself
		// is what is half-closed and closed.
		client := hijacked
		if u, ok := hijacked.(interface{ UnsafeConn() net.Conn }); ok {
			client = u.UnsafeConn()
		}
		tun := p.tunnels.add(client, c.conn)
		var panicked error
		defer func() {
			if v := recover(); v != nil {
				panicked = &PanicError{Where: "in an upgraded connection", Value: v, Stack: debug.Stack()}
			}
			p.tunnels.remove(tun)
			client.Close()
			c.conn.Close()
			s.done(panicked)
		}()
		toClient := &stallWriter{conn: client, timeout: p.clientSendTimeout}
		if _, err := toClient.Write(head); err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(&stallWriter{conn: c.conn, timeout: p.transport.sendTimeout}, hijacked)
			closeWrite(c.conn)
		}()
		if _, err := io.Copy(toClient, c.br); err != nil {
			// The client stopped reading, or went: nothing more can reach
			// it, and nothing it sends has anywhere to go.
			client.Close()
			c.conn.Close()
		} else {
			// The app has finished: the client hears so, and has a moment
			// to finish its side too.
			closeWrite(client)
			client.SetReadDeadline(time.Now().Add(tunnelLinger))
		}
		<-done
	})
}

// tunnelLinger is how long a tunnel the app has finished waits for the
// client to finish its side.
const tunnelLinger = 10 * time.Second

// stallWriter writes to a connection with a deadline moved before each
// write: a peer that reads nothing for timeout ends the copy, one that
// keeps reading never does. Zero timeout: no deadline.
type stallWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (w *stallWriter) Write(p []byte) (int, error) {
	if w.timeout > 0 {
		w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	return w.conn.Write(p)
}

// closeWrite shuts down the writing side of c, so its peer reads an end
// while it may still send; a connection without half-close is closed.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// tunnels are the upgraded connections open now, closed at shutdown: they
// carry no request the server could wait for, and their clients reconnect
// to another router process sooner for being told at once. (Caddy closes
// its upgraded connections when its config unloads.)
type tunnels struct {
	mu     sync.Mutex
	open   map[*tunnel]struct{}
	closed bool
}

type tunnel struct{ client, app net.Conn }

func (ts *tunnels) add(client, app net.Conn) *tunnel {
	t := &tunnel{client, app}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		client.Close()
		app.Close()
		return t
	}
	if ts.open == nil {
		ts.open = map[*tunnel]struct{}{}
	}
	ts.open[t] = struct{}{}
	return t
}

func (ts *tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	delete(ts.open, t)
	ts.mu.Unlock()
}

// closeAll closes every tunnel, and every one opened from now on.
func (ts *tunnels) closeAll() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.closed = true
	for t := range ts.open {
		t.client.Close()
		t.app.Close()
	}
	return len(ts.open)
}
