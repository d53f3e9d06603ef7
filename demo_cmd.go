package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/splitapp/router/config"
	"github.com/splitapp/router/demo"
)

// demoLag is how far the demo's follower is behind: long enough to see a
// stale read by hand, shorter than the default PIN_TTL.
const demoLag = 2 * time.Second

// runDemo starts the demo apps on loopback and serves the router in front of
// them, with a random cookie secret and admin token. Any variable the user
// did set still applies, those two included.
func runDemo(ctx context.Context, environ []string, stdout, stderr io.Writer) int {
	apps, err := demo.Start(demoLag)
	if err != nil {
		fmt.Fprintln(stderr, "router:", err)
		return 1
	}
	defer apps.Close()
	// The demo's own secret and admin token, random, unless the
	// environment sets them: every variable the user sets still applies.
	defaults := []string{
		"PRIMARY_URL=" + apps.PrimaryURL,
		"REPLICA_URLS=" + apps.ReplicaURL,
		"COOKIE_SECRET=" + randomHex(32),
		"ADMIN_TOKEN=" + randomHex(16),
	}
	cfg, err := config.Load(append(defaults, environ...))
	if err != nil {
		fmt.Fprintf(stderr, "router: invalid configuration:\n%s\n", indent(err.Error()))
		return 2
	}
	return serve(ctx, cfg, stdout, func(port int, out io.Writer) {
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		fmt.Fprintf(out, `
Demo: the router on %[1]s, in front of a primary app and a read-only app.
They share a notes store whose follower is %[2]s behind the leader.

  # write a note; the response sets the pin cookie (kept in /tmp/router-demo-pin)
  curl -si -c /tmp/router-demo-pin -d text=hello %[1]s/notes
  # read with the cookie: served by the primary, the note is there
  curl -s -b /tmp/router-demo-pin %[1]s/notes
  # read without it: served by the read-only app, the note shows up after %[2]s
  curl -s %[1]s/notes

The status page, in a browser (the admin token is the password; any user name):
  http://demo:%[3]s@127.0.0.1:%[4]d/_router/status
The Prometheus metrics:
  curl -s -H 'Authorization: Bearer %[3]s' %[1]s/_router/metrics

Each request logs a line with upstream= and reason=. Any variable you set
(PIN_TTL=1s, ADMIN_TOKEN=..., LOG_FORMAT=json) applies. Ctrl-C stops.

`, base, demoLag, cfg.AdminToken, port)
	})
}

// randomHex returns n random bytes, hex-encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
