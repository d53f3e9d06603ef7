package config

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

const secret = "0123456789abcdef0123456789abcdef"

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load([]string{"PRIMARY_URL=https://myapp-primary.herokuapp.com", "COOKIE_SECRET=" + secret})
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8080 || c.PinTTL != 5*time.Second || c.UpstreamTimeout != 30*time.Second ||
		c.ShutdownTimeout != 25*time.Second || c.ConnectTimeout != 5*time.Second ||
		c.CookieName != "router_pin" || c.PreserveHost || len(c.Replicas) != 0 {
		t.Errorf("defaults = %+v", c)
	}
	if c.PrimaryURL.Host != "myapp-primary.herokuapp.com" || len(c.CookieKeys) != 1 {
		t.Errorf("parsed primary %v, %d keys", c.PrimaryURL, len(c.CookieKeys))
	}
}

func TestLoadParsesLists(t *testing.T) {
	t.Parallel()
	c, err := Load([]string{
		"PRIMARY_URL=http://p.example.com",
		"REPLICA_URLS= http://a.example.com , https://b.example.com/base weight=3,",
		"COOKIE_SECRET=" + secret + ", " + strings.Repeat("z", 40),
		"PRIMARY_PATHS=/admin/, /auth/*/callback",
		"READ_PATHS=POST /search",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Replicas) != 2 || c.Replicas[0].Weight != 1 || c.Replicas[1].Weight != 3 || c.Replicas[1].URL.Path != "/base" {
		t.Errorf("replicas = %+v", c.Replicas)
	}
	if len(c.CookieKeys) != 2 || string(c.CookieKeys[1]) != strings.Repeat("z", 40) {
		t.Errorf("keys = %q", c.CookieKeys)
	}
	if !c.PrimaryPaths.Match("GET", "/auth/x/callback") || !c.ReadPaths.Match("POST", "/search") {
		t.Error("path rules not parsed")
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := Load([]string{"PIN_TTL=soon", "PORT=x", "REPLICA_URLS=nope"})
	if err == nil {
		t.Fatal("Load accepted a bad environment")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{"PIN_TTL=", "PORT=", "REPLICA_URLS", "PRIMARY_URL is required", "COOKIE_SECRET is required"} {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, want) && strings.Contains(l, "e.g.") {
				found = true
			}
		}
		if !found {
			t.Errorf("no line starting %q with an example in:\n%s", want, err)
		}
	}
}

func FuzzParseReplicas(f *testing.F) {
	f.Add("http://a.example.com, https://b.example.com weight=2")
	f.Add("ftp://x,,")
	f.Fuzz(func(t *testing.T, raw string) {
		replicas, err := ParseReplicas(raw)
		if err != nil {
			return
		}
		for _, r := range replicas {
			if r.URL.Host == "" || (r.URL.Scheme != "http" && r.URL.Scheme != "https") || r.Weight < 1 || r.Weight > 100 {
				t.Fatalf("accepted %+v from %q", r, raw)
			}
		}
	})
}

// TestEveryVariableIsDocumented: each setting the router reads appears in
// app.json (so Heroku's deploy form offers it) and in README's table.
func TestEveryVariableIsDocumented(t *testing.T) {
	appJSON, err := os.ReadFile("../app.json")
	if err != nil {
		t.Fatal(err)
	}
	var app struct{ Env map[string]json.RawMessage }
	if err := json.Unmarshal(appJSON, &app); err != nil {
		t.Fatalf("app.json: %v", err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(Config{})
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("env"), ",")
		if name == "" || name == "PORT" {
			continue // PORT is the platform's to set
		}
		// DYNO is Heroku's to set: no deploy form offers it.
		if _, ok := app.Env[name]; !ok && name != "DYNO" {
			t.Errorf("%s is missing from app.json", name)
		}
		if !strings.Contains(string(readme), "| `"+name+"` |") {
			t.Errorf("%s is missing from README's configuration table", name)
		}
	}
}

// TestDatabaseURLsMayNameVariables: each database setting is a URL or the
// name of a variable that holds one (Heroku keeps an attached database's
// current URL in its own variable, and rotates it there).
func TestDatabaseURLsMayNameVariables(t *testing.T) {
	t.Parallel()
	base := []string{"PRIMARY_URL=http://p", "REPLICA_URLS=http://a,http://b", "COOKIE_SECRET=" + secret}
	c, err := Load(append(base,
		"PRIMARY_DATABASE_URL=HEROKU_POSTGRESQL_ONYX_URL", "HEROKU_POSTGRESQL_ONYX_URL=postgres://u:p@primary/db",
		"REPLICA_DATABASE_URLS=FOLLOWER_DATABASE_URL, postgres://u:p@f2/db", "FOLLOWER_DATABASE_URL=postgres://u:p@f1/db"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PrimaryDatabaseURL != "postgres://u:p@primary/db" || c.PrimaryDatabaseVar != "HEROKU_POSTGRESQL_ONYX_URL" {
		t.Errorf("primary database %q from %q", c.PrimaryDatabaseURL, c.PrimaryDatabaseVar)
	}
	if c.FollowerURL(0) != "postgres://u:p@f1/db" || c.FollowerVariable(0) != "FOLLOWER_DATABASE_URL" ||
		c.FollowerURL(1) != "postgres://u:p@f2/db" || c.FollowerVariable(1) != "REPLICA_DATABASE_URLS" {
		t.Errorf("followers %q from %q", c.ReplicaDatabaseURLs, c.ReplicaDatabaseVars)
	}
	for _, tc := range []struct{ env, want string }{
		{"PRIMARY_DATABASE_URL=MISSING_URL", "PRIMARY_DATABASE_URL names MISSING_URL, which is not set"},
		{"PRIMARY_DATABASE_URL=mysql://x", "PRIMARY_DATABASE_URL must be postgres:// URLs"},
		{"PRIMARY_DATABASE_URL=HOLDS_JUNK", "PRIMARY_DATABASE_URL names HOLDS_JUNK, which does not hold a postgres:// URL"},
	} {
		_, err := Load(append(base, tc.env, "HOLDS_JUNK=junk", "REPLICA_DATABASE_URLS=postgres://f/db"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one saying %q", tc.env, err, tc.want)
		}
	}
}
