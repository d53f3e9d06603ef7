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
// them. Any variable the user did set still applies.
func runDemo(ctx context.Context, environ []string, stdout, stderr io.Writer) int {
	apps, err := demo.Start(demoLag)
	if err != nil {
		fmt.Fprintln(stderr, "router:", err)
		return 1
	}
	defer apps.Close()
	secret := make([]byte, 32)
	rand.Read(secret)
	environ = append([]string{
		"PRIMARY_URL=" + apps.PrimaryURL,
		"REPLICA_URLS=" + apps.ReplicaURL,
		"COOKIE_SECRET=" + hex.EncodeToString(secret),
	}, environ...)
	cfg, err := config.Load(environ)
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

Each request logs a line with upstream= and reason=. Ctrl-C stops.

`, base, demoLag)
	})
}
