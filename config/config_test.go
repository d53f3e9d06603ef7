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
		if _, ok := app.Env[name]; !ok {
			t.Errorf("%s is missing from app.json", name)
		}
		if !strings.Contains(string(readme), "| `"+name+"` |") {
			t.Errorf("%s is missing from README's configuration table", name)
		}
	}
}
