package test

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// TestReplayReadErrors: with REPLAY_READ_ERRORS=true, a bodiless GET that
// a read-only app fails with a 5xx (a logout link writing to a follower)
// is replayed once on the primary; the route is then learned, and the next
// such read goes straight to the primary. The status page and router stats
// list the route.
func TestReplayReadErrors(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/logout" || r.URL.Path == "/broken" {
			http.Error(w, "cannot execute DELETE in a read-only transaction", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "replica page")
	})
	primary.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/broken" {
			http.Error(w, "broken everywhere", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "primary "+r.URL.Path)
	})
	env := baseEnv(primary, replica)
	env["REPLAY_READ_ERRORS"] = "true"
	env["ADMIN_TOKEN"] = adminToken
	rt := startRouter(t, env)
	replicaName := strings.TrimPrefix(replica.URL, "http://")

	resp, body, id := do(t, "GET", rt.URL+"/logout", nil, nil)
	if resp.StatusCode != 200 || body != "primary /logout" {
		t.Errorf("GET /logout failing on the read-only app: %d %q, want the primary's 200", resp.StatusCode, body)
	}
	if len(replica.received(id)) != 1 || len(primary.received(id)) != 1 {
		t.Errorf("sent %d times to the replica and %d to the primary, want once each", len(replica.received(id)), len(primary.received(id)))
	}
	line := rt.logFor(id)
	if !strings.HasPrefix(line, "at=info") || field(line, "reason") != "replay" || field(line, "replayed_from") != replicaName ||
		field(line, "replayed_status") != "500" || field(line, "replayed_service") == "" || field(line, "upstream") != "primary" {
		t.Errorf("log line %q, want at=info reason=replay replayed_from=%s replayed_status=500 replayed_service=… upstream=primary", line, replicaName)
	}

	// Learned: the next logout pays no failed attempt.
	resp, body, id = do(t, "GET", rt.URL+"/logout?next=/", nil, nil)
	if resp.StatusCode != 200 || len(replica.received(id)) != 0 || field(rt.logFor(id), "reason") != "learned" {
		t.Errorf("the next GET /logout: %d %q, %d sent to the replica, log %q; want the primary at once, reason=learned", resp.StatusCode, body, len(replica.received(id)), rt.logFor(id))
	}
	// Other reads still go to the read-only app.
	if resp, _, _ := do(t, "GET", rt.URL+"/items", nil, nil); resp.Header.Get("X-Served-By") != "replica" {
		t.Errorf("an ordinary read served by %q, want the replica", resp.Header.Get("X-Served-By"))
	}
	// A read that fails on the primary too gets the primary's answer, and
	// a 5xx from an app is no router error.
	resp, body, id = do(t, "GET", rt.URL+"/broken", nil, nil)
	if resp.StatusCode != 500 || !strings.Contains(body, "broken everywhere") || !strings.HasPrefix(rt.logFor(id), "at=info") {
		t.Errorf("a read broken everywhere: %d %q, log %q; want the primary's 500 at=info", resp.StatusCode, body, rt.logFor(id))
	}
	// A write is never replayed.
	resp, _, id = do(t, "DELETE", rt.URL+"/logout", nil, nil)
	if resp.StatusCode != 200 || len(primary.received(id)) != 1 {
		t.Errorf("a DELETE: %d, sent %d times to the primary, want once", resp.StatusCode, len(primary.received(id)))
	}

	status := adminJSON(t, rt)
	if !strings.Contains(status, `"path": "/logout"`) || !strings.Contains(status, `"replays": 1`) {
		t.Errorf("status JSON does not list the replayed route:\n%s", status)
	}
	cmd := exec.Command(binary, "stats")
	cmd.Stdin = strings.NewReader(strings.Join(rt.Lines(), "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("router stats: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "replayed on the primary: GET /logout 1 times, then sent there 1 times (learned)") {
		t.Errorf("router stats does not list the replayed route:\n%s", out)
	}
}

// TestReadErrorsPassWithoutTheOptIn: without REPLAY_READ_ERRORS, the
// read-only app's 5xx is the answer, logged at=info as any app's is.
func TestReadErrorsPassWithoutTheOptIn(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	replica.handle(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "read-only", http.StatusInternalServerError)
	})
	rt := startRouter(t, baseEnv(primary, replica))
	resp, _, id := do(t, "GET", rt.URL+"/logout", nil, nil)
	if resp.StatusCode != 500 || len(primary.received(id)) != 0 {
		t.Errorf("without the opt-in: %d, %d sent to the primary; want the replica's 500 and no replay", resp.StatusCode, len(primary.received(id)))
	}
	if line := rt.logFor(id); !strings.HasPrefix(line, "at=info") || field(line, "reason") != "read" {
		t.Errorf("log line %q, want at=info reason=read", line)
	}
}
