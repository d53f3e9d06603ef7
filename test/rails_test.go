package test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	encbin "encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Rails tests run a real Rails 6.1 app (test/rails; Debian's
// ruby-rails, ruby-pg, puma and ruby-devise, which test/run.sh installs)
// in production mode twice, on a Postgres primary and a streaming standby
// that lags, with the router in front, and drive it as a browser would.

const railsPuma = "/usr/bin/puma"

// requireRails skips, or fails under test/run.sh, when Rails is missing.
func requireRails(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(railsPuma); err == nil {
		if exec.Command("ruby", "-e", `require "rails"; require "pg"; require "devise"`).Run() == nil {
			return
		}
	}
	if os.Getenv("ROUTER_REQUIRE_RAILS") != "" {
		t.Fatal("Rails is not installed; test/run.sh installs ruby-rails, ruby-pg, puma and ruby-devise")
	}
	t.Skip("Rails not installed (test/run.sh installs Debian's ruby-rails, ruby-pg, puma, ruby-devise)")
}

// railsOrigin is the public site's origin, as a browser on it sends it;
// the apps allow it for ActionCable.
const railsOrigin = "http://www.example.com"

func railsEnv(dbURL string, kit bool) []string {
	return railsEnvIn("production", dbURL, kit)
}

// railsHosts is the apps' config.hosts: the public site, and the apps' own
// host, which requests through the router (and its health checks) carry
// in Host.
const railsHosts = "www.example.com,127.0.0.1"

// railsEnvIn is railsEnv for a Rails environment.
func railsEnvIn(environment, dbURL string, kit bool) []string {
	env := []string{"PATH=/usr/bin:/bin", "RAILS_ENV=" + environment, "DATABASE_URL=" + dbURL,
		"SECRET_KEY_BASE=split-app-test-secret-key-base-0123456789abcdef0123456789abcdef",
		"CABLE_ORIGINS=" + railsOrigin, "RAILS_HOSTS=" + railsHosts}
	if kit {
		env = append(env, "ROUTER_KIT=1")
	}
	return env
}

// setupRails loads the app's schema on the primary.
func setupRails(t *testing.T, primaryURL string) {
	t.Helper()
	cmd := exec.Command("ruby", "db/setup.rb")
	cmd.Dir = "rails"
	cmd.Env = railsEnv(primaryURL, false)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("loading the Rails schema: %v\n%s", err, out)
	}
}

// railsApp is one puma serving the app; log is its output.
type railsApp struct {
	URL string
	log *lockedBuffer
}

// startRails serves the app with puma, in production; wait waits until it
// answers.
func startRails(t *testing.T, dbURL string, kit bool) *railsApp {
	t.Helper()
	return startRailsIn(t, "production", dbURL, kit)
}

// startRailsIn is startRails in a Rails environment, with extra
// variables.
func startRailsIn(t *testing.T, environment, dbURL string, kit bool, extra ...string) *railsApp {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(railsPuma, "--bind", "tcp://127.0.0.1:"+strconv.Itoa(port), "--threads", "2:4", "--environment", environment, "config.ru")
	cmd.Dir = "rails"
	cmd.Env = append(railsEnvIn(environment, dbURL, kit), extra...)
	return &railsApp{URL: "http://127.0.0.1:" + strconv.Itoa(port), log: runApp(t, cmd, "puma on "+dbURL)}
}

// wait waits until the app answers its health path.
func (a *railsApp) wait(t *testing.T) {
	t.Helper()
	waitAnswers(t, "puma to serve the Rails app", a.URL+"/up")
}

var (
	railsTokenRE = regexp.MustCompile(`name="authenticity_token" value="([^"]+)"`)
	railsWhoRE   = regexp.MustCompile(`<p id="who">([^<]*)</p>`)
)

// railsUser drives the app through the router as a browser would.
type railsUser struct {
	*browser
	t *testing.T
	// landed is where the last form's redirect led.
	landed string
}

func newRailsUser(t *testing.T, rt *routerProc) *railsUser {
	// A browser on the public site: its Host, and Origin on every request
	// as browsers send it on form posts (Rails checks it against the
	// forwarded host).
	u := &railsUser{browser: newBrowser(t, rt), t: t}
	u.host = strings.TrimPrefix(railsOrigin, "http://")
	u.header.Set("Origin", railsOrigin)
	return u
}

// get fetches a page and returns its status and body.
func (u *railsUser) get(step, path string) (int, string, string) {
	u.t.Helper()
	return u.do(step, "GET", path, nil)
}

// submit posts a form with the token of the page it came from, then
// follows the redirect, one hop: the page the user lands on.
func (u *railsUser) submit(step, path, page string, form url.Values, landing string) (int, string, string) {
	u.t.Helper()
	form.Set("authenticity_token", u.token(page, railsTokenRE))
	status, body, line := u.do(step, "POST", path, form)
	if status != http.StatusFound {
		return status, body, line
	}
	target, err := url.Parse(u.location)
	if err != nil {
		u.t.Fatalf("%s: redirect to %q", step, u.location)
	}
	u.landed = target.RequestURI()
	return u.get(landing, u.landed)
}

// who reads who the page says is signed in.
func who(page string) string {
	if m := railsWhoRE.FindStringSubmatch(page); m != nil {
		return m[1]
	}
	return "(no page)"
}

// untilReleased reads a page until the router sends it to the follower
// (caught_up, for a pinned client), and returns the page.
func (u *railsUser) untilReleased(step, path string) string {
	u.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, page, line := u.get(step, path)
		if status != 200 {
			u.t.Fatalf("%s: %d", step, status)
		}
		if field(line, "upstream") == "replica" {
			return page // released, or never pinned
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("%s: the follower never caught up", step)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// railsJourney is what a user of the app does: the scaffold, a session
// login, a Devise sign-up and sign-in, and the two GETs that write. It
// fails the test where the user does not see their own write.
func railsJourney(t *testing.T, u *railsUser, note string) {
	t.Helper()
	_, _, line := u.get("notes index", "/notes")
	if field(line, "upstream") != "replica" {
		t.Errorf("notes index: %s, want a read-only app", line)
	}
	_, page, _ := u.get("new-note form (read-only app's CSRF)", "/notes/new")
	status, page, _ := u.submit("create a note", "/notes", page, url.Values{"note[body]": {note}}, "the note, after the redirect")
	if status != 200 || !strings.Contains(page, note) {
		t.Fatalf("the note right after creating it: %d, shown %v; want read-your-writes", status, strings.Contains(page, note))
	}
	notePath := u.landed
	_, page, _ = u.get("edit form", notePath+"/edit")
	status, page, _ = u.submit("update the note", notePath, page, url.Values{"_method": {"patch"}, "note[body]": {note + " (edited)"}}, "the note, updated")
	if status != 200 || !strings.Contains(page, note+" (edited)") {
		t.Fatalf("the note right after editing it: %d; want the edit shown", status)
	}
	if page := u.untilReleased("the note, until released", notePath); !strings.Contains(page, note+" (edited)") {
		t.Error("the follower served the note without the edit")
	}

	_, page, _ = u.get("log-in form", "/login")
	_, page, _ = u.submit("log in (cookie session)", "/login", page, url.Values{"name": {"alice"}}, "home, logged in")
	if got := who(page); got != "Logged in as alice" {
		t.Errorf("home after logging in says %q", got)
	}
	_, page, _ = u.submit("log out", "/logout", page, url.Values{"_method": {"delete"}}, "home, logged out")
	if got := who(page); got != "Not signed in" {
		t.Errorf("home after logging out says %q", got)
	}

	email := fmt.Sprintf("user-%d@example.com", time.Now().UnixNano())
	_, page, _ = u.get("sign-up form (Devise)", "/users/sign_up")
	_, page, _ = u.submit("sign up", "/users", page, url.Values{"user[email]": {email}, "user[password]": {"secret-123"},
		"user[password_confirmation]": {"secret-123"}}, "home, signed up")
	if got := who(page); got != "Signed in as "+email {
		t.Fatalf("home right after signing up says %q", got)
	}
	if got := who(u.untilReleased("home, until released", "/")); got != "Signed in as "+email {
		t.Errorf("home from the follower after signing up says %q, want still signed in", got)
	}
	_, page, _ = u.submit("sign out", "/users/sign_out", page, url.Values{"_method": {"delete"}}, "home, signed out")
	if got := who(page); got != "Not signed in" {
		t.Errorf("home after signing out says %q", got)
	}
	_, page, _ = u.get("sign-in form", "/users/sign_in")
	_, page, _ = u.submit("sign in", "/users/sign_in", page, url.Values{"user[email]": {email}, "user[password]": {"secret-123"}}, "home, signed in")
	if got := who(page); got != "Signed in as "+email {
		t.Errorf("home after signing in says %q", got)
	}
}

// getsThatWrite runs the two GETs that write, then the first again for
// another user, and returns their statuses: with a replay, the third is
// learned and goes to the primary straight.
func getsThatWrite(t *testing.T, u *railsUser) (controller, view, again int) {
	t.Helper()
	// Each once the client's pin is released, so that it reaches the
	// read-only app (a replay pins the client too).
	u.untilReleased("home, until released", "/")
	controller, _, _ = u.get("a GET that writes (controller)", "/visits/touch")
	u.untilReleased("home, until released", "/")
	view, _, _ = u.get("a GET that writes (view)", "/visits/page")
	// Another user, without a pin: a replayed route goes to the primary
	// straight (learned).
	other := newRailsUser(u.t, u.rt)
	other.browser.steps = u.steps
	again, _, _ = other.get("the first, by another user", "/visits/touch")
	u.steps = other.steps
	return controller, view, again
}

// cableEcho speaks ActionCable over a WebSocket through the router and
// returns what EchoChannel sent back, or the handshake's status.
func cableEcho(t *testing.T, rt *routerProc, origin, text string) (string, int) {
	t.Helper()
	conn := rt.dial()
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(conn, "GET /cable HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Protocol: actioncable-v1-json\r\nOrigin: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(key), origin)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("cable handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return "", resp.StatusCode
	}
	identifier := `{"channel":"EchoChannel"}`
	send := func(v any) {
		payload, _ := json.Marshal(v)
		wsWrite(conn, payload)
	}
	for {
		msg := wsRead(t, br)
		var m struct {
			Type    string          `json:"type"`
			Message json.RawMessage `json:"message"`
		}
		json.Unmarshal(msg, &m)
		switch {
		case m.Type == "welcome":
			send(map[string]string{"command": "subscribe", "identifier": identifier})
		case m.Type == "confirm_subscription":
			data, _ := json.Marshal(map[string]string{"action": "echo", "text": text})
			send(map[string]string{"command": "message", "identifier": identifier, "data": string(data)})
		case m.Type == "" && m.Message != nil:
			var echo struct{ Echo string }
			json.Unmarshal(m.Message, &echo)
			return echo.Echo, 101
		}
	}
}

// wsWrite sends one masked text frame (RFC 6455 §5.2).
func wsWrite(w io.Writer, payload []byte) {
	frame := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	default:
		frame = append(frame, 0x80|126, byte(n>>8), byte(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	w.Write(frame)
}

// wsRead reads one unmasked frame from the server and returns its payload.
func wsRead(t *testing.T, br *bufio.Reader) []byte {
	t.Helper()
	var head [2]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		t.Fatalf("cable: %v", err)
	}
	n := uint64(head[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		io.ReadFull(br, ext[:])
		n = uint64(encbin.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		io.ReadFull(br, ext[:])
		n = encbin.BigEndian.Uint64(ext[:])
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatalf("cable: %v", err)
	}
	return payload
}

func TestRails(t *testing.T) {
	t.Parallel()
	requireRails(t)
	start := time.Now()
	pg := startPostgres(t, 0)
	setupRails(t, pg.PrimaryURL)
	if err := pg.SetApplyDelay(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	type apps struct{ primary, replica *railsApp }
	launch := func(kit bool) apps {
		return apps{startRails(t, pg.PrimaryURL, kit), startRails(t, pg.StandbyURL, kit)}
	}
	withKit, plain := launch(true), launch(false)
	// The kit in development, where DebugExceptions renders an error
	// instead of raising it on.
	develop := apps{withKit.primary, startRailsIn(t, "development", pg.StandbyURL, true)}
	// config.hosts with the public site alone: Rails 6.1 checks Host as
	// well as X-Forwarded-Host, and Host is the app's own behind the
	// router.
	publicHostOnly := startRailsIn(t, "production", pg.StandbyURL, true, "RAILS_HOSTS=www.example.com")
	for _, a := range []*railsApp{withKit.primary, withKit.replica, plain.primary, plain.replica, develop.replica} {
		a.wait(t)
	}
	router := func(a apps, database bool, extra ...string) *routerProc {
		env := map[string]string{
			"PRIMARY_URL": a.primary.URL, "REPLICA_URLS": a.replica.URL, "COOKIE_SECRET": secret,
			"HEALTH_CHECK_PATH": "/up", "PIN_TTL": "1s",
		}
		if database {
			env["PRIMARY_DATABASE_URL"], env["REPLICA_DATABASE_URLS"] = pg.PrimaryURL, pg.StandbyURL
		}
		return startRouter(t, withEnv(env, extra...))
	}

	t.Run("the kit, with the database URLs", func(t *testing.T) {
		rt := router(withKit, true)
		u := newRailsUser(t, rt)
		railsJourney(t, u, "read your writes, Rails")
		controller, view, again := getsThatWrite(t, u)
		t.Logf("Rails, with the kit and the database URLs, the follower 2 s behind:\n  %s", strings.Join(u.steps, "\n  "))
		steps := strings.Join(u.steps, "\n")
		if controller != 200 || view != 200 || again != 200 {
			t.Errorf("GETs that write: %d, %d, %d; want each replayed to a 200", controller, view, again)
		}
		if n := strings.Count(steps, "reason=replay replayed_status=503"); n != 2 || !strings.Contains(steps, "/visits/touch                200  upstream=primary reason=learned") {
			t.Errorf("want two replays of the kit's 503, then the route learned:\n%s", steps)
		}
		replicaLog := withKit.replica.log.String()
		if strings.Contains(replicaLog, "FATAL") || strings.Contains(replicaLog, "Completed 500") {
			t.Errorf("the read-only app logged a crash for a replay:\n%s", replicaLog)
		}
		if !strings.Contains(replicaLog, "[router_replay] GET /visits/page") || !strings.Contains(replicaLog, "Completed 503") {
			t.Errorf("the read-only app did not log the replay as one info line:\n%s", replicaLog)
		}
		if echo, status := cableEcho(t, rt, railsOrigin, "hello over the cable"); echo != "hello over the cable" {
			t.Errorf("ActionCable through the router: status %d, echo %q", status, echo)
		}
		if _, status := cableEcho(t, rt, "http://elsewhere.example", "x"); status == 101 {
			t.Error("ActionCable accepted an origin it does not list: the check shows nothing")
		}
	})

	t.Run("the kit, the read-only app in development", func(t *testing.T) {
		u := newRailsUser(t, router(develop, true))
		controller, view, _ := getsThatWrite(t, u)
		t.Logf("Rails, the kit in development:\n  %s", strings.Join(u.steps, "\n  "))
		if controller != 200 || view != 200 || strings.Count(strings.Join(u.steps, "\n"), "reason=replay replayed_status=503") != 2 {
			t.Errorf("GETs that write, the read-only app in development: %d, %d; want each replayed from the kit's 503", controller, view)
		}
	})

	t.Run("config.hosts without the apps' own host", func(t *testing.T) {
		rt := router(apps{withKit.primary, publicHostOnly}, false, "HEALTH_CHECK_INTERVAL", "300ms")
		line, ok := rt.waitLog(`at=warn msg="upstream down" .*check_status=403 path=/up`, 10*time.Second)
		if !ok {
			t.Fatal("a read-only app refusing the router's Host was not reported with the check's 403")
		}
		t.Logf("the router's line: %s", line)
	})

	t.Run("no kit, REPLAY_READ_ERRORS=true", func(t *testing.T) {
		u := newRailsUser(t, router(plain, true, "REPLAY_READ_ERRORS", "true"))
		controller, view, again := getsThatWrite(t, u)
		t.Logf("Rails, no kit, REPLAY_READ_ERRORS=true:\n  %s", strings.Join(u.steps, "\n  "))
		if controller != 200 || view != 200 || again != 200 || strings.Count(strings.Join(u.steps, "\n"), "reason=replay replayed_status=500") != 2 {
			t.Errorf("GETs that write: %d, %d, %d; want each replayed from the read-only app's 500", controller, view, again)
		}
	})

	t.Run("neither (the failure)", func(t *testing.T) {
		u := newRailsUser(t, router(plain, true))
		controller, view, _ := getsThatWrite(t, u)
		t.Logf("Rails, neither:\n  %s", strings.Join(u.steps, "\n  "))
		if controller != 500 || view != 500 {
			t.Errorf("GETs that write with neither: %d, %d; want the read-only app's 500s, which the other runs fix", controller, view)
		}
	})

	// Devise keeps the user's id in the cookie session and looks the user
	// up on every request. A follower that lags past PIN_TTL has no row
	// for a new sign-up yet: Warden drops the session key, and the user is
	// logged out for good. The database URLs hold the pin until the
	// follower has the row.
	signUp := func(t *testing.T, rt *routerProc) []string {
		u := newRailsUser(t, rt)
		email := fmt.Sprintf("lag-%d@example.com", time.Now().UnixNano())
		_, page, _ := u.get("sign-up form", "/users/sign_up")
		signedUp := time.Now()
		_, page, _ = u.submit("sign up", "/users", page, url.Values{"user[email]": {email}, "user[password]": {"secret-123"},
			"user[password_confirmation]": {"secret-123"}}, "home, signed up")
		seen := []string{who(page)}
		// A time pin is a cookie whose Max-Age is PIN_TTL=1s; the jar
		// drops it then. The follower is 3 s behind: it has no row yet.
		time.Sleep(time.Until(signedUp.Add(1100 * time.Millisecond)))
		_, page, _ = u.get("home, past PIN_TTL", "/")
		seen = append(seen, who(page))
		waitFor(t, "the follower to have the new user", func() bool {
			var n int
			return queryRow(pg.StandbyURL, fmt.Sprintf("SELECT count(*)::int FROM users WHERE email = '%s'", email), &n) == nil && n == 1
		})
		_, page, _ = u.get("home, the follower caught up", "/")
		seen = append(seen, who(page))
		t.Logf("Devise sign-up:\n  %s", strings.Join(u.steps, "\n  "))
		for i := range seen {
			seen[i] = strings.Replace(seen[i], email, "the new user", 1)
		}
		return seen
	}
	t.Run("Devise sign-up, the follower lagging past PIN_TTL", func(t *testing.T) {
		if err := pg.SetApplyDelay(3 * time.Second); err != nil {
			t.Fatal(err)
		}
		defer pg.SetApplyDelay(2 * time.Second)
		since := time.Now()
		stop := writeSteadily(t, pg.PrimaryURL) // the delay shows on WAL written from now on
		defer stop()
		pg.waitBehind(since, 2500*time.Millisecond) // the 3 s delay, not the 2 s before it

		withURLs := signUp(t, router(withKit, true))
		timePins := signUp(t, router(withKit, false))
		t.Logf("with the database URLs: %q; time pins only: %q", withURLs, timePins)
		for _, got := range withURLs {
			if got != "Signed in as the new user" {
				t.Errorf("with the database URLs the new user saw %q, want signed in throughout", withURLs)
				break
			}
		}
		if timePins[len(timePins)-1] == "Signed in as the new user" {
			t.Errorf("with time pins the new user stayed signed in (%q): the follower was not behind, so the check above proved nothing", timePins)
		}
	})
	t.Logf("the Rails runs took %s", time.Since(start).Round(100*time.Millisecond))
}
