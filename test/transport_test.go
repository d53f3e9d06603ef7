package test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestIdleConnectionClosedByTheApp: apps close idle keep-alive connections
// (Puma, Heroku's router); a write must not go down such a connection and
// fail, nor be sent twice.
func TestIdleConnectionClosedByTheApp(t *testing.T) {
	t.Parallel()
	primary := newUpstreamIdle(t, "primary", 50*time.Millisecond)
	rt := startRouter(t, baseEnv(primary))
	for i := range 3 {
		resp, _, id := do(t, "POST", rt.URL+"/items", strings.NewReader("x"), nil)
		if resp.StatusCode != 200 {
			t.Errorf("write %d after the app closed the idle connection: %d, want 200", i, resp.StatusCode)
		}
		if n := len(primary.received(id)); n != 1 {
			t.Errorf("write %d reached the primary %d times, want 1", i, n)
		}
		time.Sleep(150 * time.Millisecond) // the app closes the idle connection
	}
}

// TestEarlyHintsThenResponse: informational responses pass through and the
// final response follows.
func TestEarlyHintsThenResponse(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	rt := startRouter(t, baseEnv(primary))
	conn := rt.dial()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	raw, _ := io.ReadAll(conn)
	text := string(raw)
	if !strings.HasPrefix(text, "HTTP/1.1 103 Early Hints") || !strings.Contains(text, "HTTP/1.1 200 OK") || !strings.HasSuffix(text, "final") {
		t.Errorf("client got:\n%s\nwant a 103 with the Link header, then the 200", text)
	}
}

// TestEarlyAnswerToUpload: an app may refuse a large upload before reading
// it; the client gets the app's answer, not a 502.
func TestEarlyAnswerToUpload(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})
	rt := startRouter(t, baseEnv(primary))
	resp, body, _ := do(t, "POST", rt.URL+"/upload", io.LimitReader(zeros{}, 32<<20), nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "too large") {
		t.Errorf("early refusal of a 32 MB upload: %d %q, want the app's 413", resp.StatusCode, body)
	}
}

// TestClientGoneMidBody: a client that leaves while the app is still
// sending frees the app's connection at once.
func TestClientGoneMidBody(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	appSaw := make(chan error, 1)
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := io.WriteString(w, strings.Repeat("x", 1024)+"\n"); err != nil {
				appSaw <- err
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				appSaw <- r.Context().Err()
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	rt := startRouter(t, baseEnv(primary, replica))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", rt.URL+"/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	cancel()
	resp.Body.Close()
	select {
	case <-appSaw:
	case <-time.After(5 * time.Second):
		t.Fatal("the app kept streaming 5 s after the client left")
	}
}
