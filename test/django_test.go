package test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Django tests run a real Django admin site (Debian's python3-django,
// psycopg2 and gunicorn; test/run.sh installs them) twice: on the primary
// and on the standby the consistency tests start, with the router in front.

const (
	djangoPython   = "/usr/bin/python3"
	djangoGunicorn = "/usr/bin/gunicorn"
)

// requireDjango skips, or fails under test/run.sh, when Django is missing.
func requireDjango(t *testing.T) {
	t.Helper()
	if err := exec.Command(djangoPython, "-c", "import django, psycopg2").Run(); err == nil {
		if _, err := os.Stat(djangoGunicorn); err == nil {
			return
		}
	}
	if os.Getenv("ROUTER_REQUIRE_DJANGO") != "" {
		t.Fatal("Django is not installed; test/run.sh installs python3-django, python3-psycopg2 and gunicorn")
	}
	t.Skip("Django not installed (test/run.sh installs Debian's python3-django, python3-psycopg2, gunicorn)")
}

// djangoEnv is the environment of the site on the database at dbURL.
func djangoEnv(t *testing.T, dbURL string, middleware bool) []string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("django")
	kit, _ := filepath.Abs("../contrib/django")
	env := []string{
		"PATH=/usr/bin:/bin", "PYTHONPATH=" + dir + ":" + kit, "DJANGO_SETTINGS_MODULE=notesite.settings",
		"SECRET_KEY=split-app-test-secret-key-0123456789abcdef",
		"DB_HOST=" + u.Hostname(), "DB_PORT=" + u.Port(), "DB_USER=" + u.User.Username(), "DB_NAME=" + strings.TrimPrefix(u.Path, "/"),
	}
	if middleware {
		env = append(env, "ROUTER_REPLAY_MIDDLEWARE=1")
	}
	return env
}

// migrateDjango creates the site's tables and its admin user on the
// primary.
func migrateDjango(t *testing.T, primaryURL string) {
	t.Helper()
	for _, args := range [][]string{
		{"-m", "django", "migrate", "--noinput"},
		{"-m", "django", "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"},
	} {
		cmd := exec.Command(djangoPython, args...)
		cmd.Env = append(djangoEnv(t, primaryURL, false), "DJANGO_SUPERUSER_PASSWORD=correct-horse-battery")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("django %s: %v\n%s", args[2], err, out)
		}
	}
}

// startDjango serves the site with gunicorn and waits until it answers.
func startDjango(t *testing.T, dbURL string, middleware bool) string {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(djangoGunicorn, "--bind", "127.0.0.1:"+strconv.Itoa(port), "--workers", "2", "--access-logfile", "-", "notesite.wsgi")
	cmd.Env = djangoEnv(t, dbURL, middleware)
	runApp(t, cmd, "gunicorn on "+dbURL)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	waitAnswers(t, "gunicorn to serve the Django site", base+"/admin/login/")
	return base
}

var csrfRE = regexp.MustCompile(`name="csrfmiddlewaretoken" value="([^"]+)"`)

// djangoSession logs in, adds a note through the admin and reads it back,
// then, once the follower has the writes, logs out with a GET. It returns
// the logout's status and whether the session is gone afterwards.
func djangoSession(t *testing.T, pg *pgCluster, rt *routerProc, note string) (logoutStatus int, sessionGone bool, u *browser) {
	t.Helper()
	u = newBrowser(t, rt)
	_, page, _ := u.do("login form (read-only app's CSRF)", "GET", "/admin/login/", nil)
	status, _, _ := u.do("log in", "POST", "/admin/login/", url.Values{
		"csrfmiddlewaretoken": {u.token(page, csrfRE)}, "username": {"admin"}, "password": {"correct-horse-battery"}, "next": {"/admin/"},
	})
	if status != http.StatusFound || u.cookie("sessionid") == "" {
		t.Fatalf("log in: %d, session %q; want a redirect and a session", status, u.cookie("sessionid"))
	}
	status, page, _ = u.do("admin index", "GET", "/admin/", nil)
	if status != 200 || !strings.Contains(page, "Site administration") {
		t.Fatalf("admin index after login: %d; the session was lost", status)
	}
	_, page, _ = u.do("add-note form", "GET", "/admin/notes/note/add/", nil)
	status, _, _ = u.do("add a note", "POST", "/admin/notes/note/add/", url.Values{
		"csrfmiddlewaretoken": {u.token(page, csrfRE)}, "body": {note}, "_save": {"Save"},
	})
	if status != http.StatusFound {
		t.Fatalf("adding a note: %d, want a redirect to the list", status)
	}
	status, page, _ = u.do("the list shows the note", "GET", "/admin/notes/note/", nil)
	if status != 200 || !strings.Contains(page, note) {
		t.Fatalf("the note list right after adding: %d, note shown %v; want read-your-writes", status, strings.Contains(page, note))
	}
	// Once the follower has the writes, the pin releases reads to it, and
	// the logout link reaches the read-only app.
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, _, line := u.do("admin index, until released", "GET", "/admin/", nil)
		if status != 200 {
			t.Fatalf("admin index while pinned: %d", status)
		}
		if field(line, "reason") == "caught_up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the follower never caught up with the session's writes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	session := u.cookie("sessionid")
	logoutStatus, page, _ = u.do("log out (a GET that writes)", "GET", "/admin/logout/", nil)
	if logoutStatus == 200 && !strings.Contains(page, "Logged out") {
		t.Errorf("logout answered 200 without the logged-out page:\n%.500s", page)
	}
	status, _, _ = u.do("admin index after logout", "GET", "/admin/", nil)
	var rows int
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool := pg.pool(pg.PrimaryURL)
	defer pool.Close()
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM django_session WHERE session_key = $1", session).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	return logoutStatus, status == http.StatusFound && rows == 0, u
}

// testDjango runs the admin session three ways: with the documented
// middleware, with no middleware and REPLAY_READ_ERRORS, and with neither,
// which shows the failure the other two fix.
func testDjango(t *testing.T, pg *pgCluster) {
	requireDjango(t)
	start := time.Now()
	pg.exec(pg.StandbyURL, "ALTER SYSTEM SET recovery_min_apply_delay = '1s'")
	pg.exec(pg.StandbyURL, "SELECT pg_reload_conf()")
	defer func() {
		pg.exec(pg.StandbyURL, "ALTER SYSTEM SET recovery_min_apply_delay = '0'")
		pg.exec(pg.StandbyURL, "SELECT pg_reload_conf()")
	}()
	migrateDjango(t, pg.PrimaryURL)
	type apps struct{ primary, replica string }
	start2 := func(middleware bool) apps {
		return apps{startDjango(t, pg.PrimaryURL, middleware), startDjango(t, pg.StandbyURL, middleware)}
	}
	withMiddleware, plain := start2(true), start2(false)
	router := func(a apps, extra ...string) *routerProc {
		env := map[string]string{
			"PRIMARY_URL": a.primary, "REPLICA_URLS": a.replica, "COOKIE_SECRET": secret,
			"PRIMARY_DATABASE_URL": pg.PrimaryURL, "REPLICA_DATABASE_URLS": pg.StandbyURL, "LAG_POLL_INTERVAL": "50ms",
			"HEALTH_CHECK_PATH": "/admin/login/", "PIN_TTL": "1s",
		}
		return startRouter(t, withEnv(env, extra...))
	}
	for _, run := range []struct {
		name       string
		rt         *routerProc
		wantStatus int
		wantGone   bool
		replayed   string
	}{
		{"documented middleware", router(withMiddleware), 200, true, "503"},
		{"no middleware, REPLAY_READ_ERRORS=true", router(plain, "REPLAY_READ_ERRORS", "true"), 200, true, "500"},
		{"neither (the failure)", router(plain), 500, false, ""},
	} {
		status, gone, u := djangoSession(t, pg, run.rt, "read your writes: "+run.name)
		t.Logf("Django admin, %s:\n  %s", run.name, strings.Join(u.steps, "\n  "))
		if status != run.wantStatus || gone != run.wantGone {
			t.Errorf("%s: logout %d, session gone %v; want %d, %v", run.name, status, gone, run.wantStatus, run.wantGone)
		}
		if run.replayed != "" && !strings.Contains(strings.Join(u.steps, "\n"), "reason=replay replayed_status="+run.replayed) {
			t.Errorf("%s: the logout was not replayed from a %s", run.name, run.replayed)
		}
	}
	t.Logf("the Django runs took %s", time.Since(start).Round(100*time.Millisecond))
}
