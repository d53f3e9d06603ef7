// Package config reads the router's settings from the environment and
// validates them, so that a bad deployment fails at start with a message that
// names the variable, not on the first request.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/pathrule"
)

// MinSecretLen is the shortest COOKIE_SECRET key accepted: an HMAC-SHA256 key
// shorter than the hash gives away strength for nothing.
const MinSecretLen = 32

// MaxPinTTL is the longest PIN_TTL accepted.
const MaxPinTTL = cookie.MaxTTL

// Config is every setting of the router. The env tags are the public
// interface; the example tags show a valid value in error messages.
type Config struct {
	Port            int           `env:"PORT" envDefault:"8080" example:"8080"`
	PrimaryURLRaw   string        `env:"PRIMARY_URL" example:"https://myapp-primary.herokuapp.com"`
	ReplicaURLsRaw  string        `env:"REPLICA_URLS" example:"https://myapp-ro.herokuapp.com,https://myapp-ro2.herokuapp.com weight=2"`
	CookieSecretRaw string        `env:"COOKIE_SECRET" example:"$(openssl rand -hex 32)"`
	PinTTL          time.Duration `env:"PIN_TTL" envDefault:"5s" example:"5s"`
	// LSNPinTTL caps a pin that carries the write's WAL position: it lasts
	// until a follower has replayed the position, at most this long.
	LSNPinTTL time.Duration `env:"LSN_PIN_TTL" envDefault:"10m" example:"10m"`
	// ReplayReadErrors replays on the primary a bodiless GET or HEAD that
	// a read-only app answered with a 5xx.
	ReplayReadErrors bool `env:"REPLAY_READ_ERRORS" envDefault:"false" example:"true"`
	// ReplayLearnTTL is how long, after a replay, reads of that method and
	// path go straight to the primary; 0 turns learning off.
	ReplayLearnTTL  time.Duration `env:"REPLAY_LEARN_TTL" envDefault:"10m" example:"10m"`
	CookieName      string        `env:"COOKIE_NAME" envDefault:"router_pin" example:"router_pin"`
	PrimaryPathsRaw string        `env:"PRIMARY_PATHS" example:"/admin/,/auth/*/callback"`
	ReadPathsRaw    string        `env:"READ_PATHS" example:"POST /search,POST /graphql"`
	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"30s" example:"30s"`
	ConnectTimeout  time.Duration `env:"CONNECT_TIMEOUT" envDefault:"5s" example:"5s"`
	// UpstreamSendTimeout and ClientSendTimeout bound a stall while
	// sending to an app or to a client: no progress for that long ends the
	// request (nginx's proxy_send_timeout and send_timeout).
	UpstreamSendTimeout time.Duration `env:"UPSTREAM_SEND_TIMEOUT" envDefault:"60s" example:"60s"`
	ClientSendTimeout   time.Duration `env:"CLIENT_SEND_TIMEOUT" envDefault:"60s" example:"60s"`
	// ClientBodyTimeout bounds a stall while a client sends its request
	// body (nginx's client_body_timeout): then 408.
	ClientBodyTimeout time.Duration `env:"CLIENT_BODY_TIMEOUT" envDefault:"60s" example:"60s"`
	ShutdownTimeout   time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s" example:"25s"`
	PreserveHost      bool          `env:"PRESERVE_HOST" envDefault:"false" example:"true"`
	// TLSInsecureSkipVerify turns off certificate checks on HTTPS upstreams.
	TLSInsecureSkipVerify bool          `env:"UPSTREAM_TLS_INSECURE_SKIP_VERIFY" envDefault:"false" example:"false"`
	MaxConnections        int           `env:"MAX_CONNECTIONS" envDefault:"10000" example:"10000"`
	RequestHeaderTimeout  time.Duration `env:"REQUEST_HEADER_TIMEOUT" envDefault:"10s" example:"10s"`

	HealthCheckPath     string        `env:"HEALTH_CHECK_PATH" envDefault:"/" example:"/up"`
	HealthCheckInterval time.Duration `env:"HEALTH_CHECK_INTERVAL" envDefault:"5s" example:"5s"`
	HealthCheckTimeout  time.Duration `env:"HEALTH_CHECK_TIMEOUT" envDefault:"2s" example:"2s"`
	HealthFall          int           `env:"HEALTH_FALL" envDefault:"2" example:"2"`
	HealthRise          int           `env:"HEALTH_RISE" envDefault:"2" example:"2"`
	EjectDuration       time.Duration `env:"EJECT_DURATION" envDefault:"5s" example:"5s"`
	EjectAfterFailures  int           `env:"EJECT_AFTER_FAILURES" envDefault:"5" example:"5"`
	EjectAfter5xx       int           `env:"EJECT_AFTER_5XX" envDefault:"0" example:"5"`
	PrimaryReadLimit    int           `env:"PRIMARY_READ_LIMIT" envDefault:"0" example:"50"`
	ReadShare           int           `env:"READ_SHARE" envDefault:"100" example:"50"`
	Balance             string        `env:"BALANCE" envDefault:"round_robin" example:"least_outstanding"`

	// PrimaryDatabaseURL and each REPLICA_DATABASE_URLS entry are URLs, or
	// names of variables holding one; Load resolves them to URLs.
	PrimaryDatabaseURL  string        `env:"PRIMARY_DATABASE_URL" example:"postgres://user:pass@host:5432/db"`
	ReplicaDatabaseURLs []string      `env:"REPLICA_DATABASE_URLS" example:"FOLLOWER_DATABASE_URL"`
	LagPollInterval     time.Duration `env:"LAG_POLL_INTERVAL" envDefault:"100ms" example:"100ms"`
	MaxReplicaLag       time.Duration `env:"MAX_REPLICA_LAG" envDefault:"0s" example:"30s"`

	// Dyno names this process in the databases' pg_stat_activity
	// (Heroku sets DYNO=web.3).
	Dyno string `env:"DYNO"`

	AdminToken  string `env:"ADMIN_TOKEN" example:"$(openssl rand -hex 24)"`
	MetricsAddr string `env:"METRICS_ADDR" example:"127.0.0.1:9090"`
	LogFormat   string `env:"LOG_FORMAT" envDefault:"logfmt" example:"json"`
	LogLevel    string `env:"LOG_LEVEL" envDefault:"info" example:"warn"`

	// Parsed from the raw fields above by Load.
	PrimaryURL *url.URL
	// PrimaryDatabaseVar and ReplicaDatabaseVars name the variable each
	// database URL came from: the setting itself, or the one it names.
	PrimaryDatabaseVar  string
	ReplicaDatabaseVars []string
	Replicas            []Replica
	CookieKeys          [][]byte
	PrimaryPaths        pathrule.Set
	ReadPaths           pathrule.Set
}

// Replica is one read-only upstream from REPLICA_URLS.
type Replica struct {
	URL *url.URL
	// Weight is the replica's share in weighted round-robin; 1 unless the
	// entry says "weight=N".
	Weight int
}

// Load parses and validates the environment, given as os.Environ() does.
// Its error lists every problem found, one per line, each naming the
// variable and showing a valid value.
func Load(environ []string) (Config, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var c Config
	var problems []string
	if err := env.ParseWithOptions(&c, env.Options{Environment: vars}); err != nil {
		problems = append(problems, describeParseErrors(err, vars)...)
	}
	problems = append(problems, c.validate(vars)...)
	if len(problems) > 0 {
		return Config{}, errors.New(strings.Join(problems, "\n"))
	}
	return c, nil
}

// describeParseErrors turns env's errors, which name Go fields, into lines
// that name the variable the user set.
func describeParseErrors(err error, vars map[string]string) []string {
	var agg env.AggregateError
	errs := []error{err}
	if errors.As(err, &agg) {
		errs = agg.Errors
	}
	var lines []string
	for _, e := range errs {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := reflect.TypeOf(Config{}).FieldByName(pe.Name); ok {
				name := f.Tag.Get("env")
				lines = append(lines, fmt.Sprintf("%s=%q is not a valid %s; e.g. %s=%s",
					name, vars[name], kindOf(f.Type), name, f.Tag.Get("example")))
				continue
			}
		}
		lines = append(lines, e.Error())
	}
	return lines
}

func kindOf(t reflect.Type) string {
	switch t {
	case reflect.TypeOf(time.Duration(0)):
		return "duration (a number with a unit: ms, s, m)"
	case reflect.TypeOf(false):
		return "boolean (true or false)"
	case reflect.TypeOf(0):
		return "whole number"
	}
	return t.String()
}

// example returns "NAME=example" for the named variable.
func example(name string) string {
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.Tag.Get("env") == name {
			return name + "=" + f.Tag.Get("example")
		}
	}
	return name
}

// validate checks the values env could parse and fills the parsed fields.
// Fields env rejected keep their zero value and are not reported twice.
func (c *Config) validate(vars map[string]string) []string {
	var p problems
	c.validateApps(&p)
	c.validateLimits(&p)
	c.validateDatabases(&p, vars)
	c.validateOperations(&p)
	return p
}

// problems collects what is wrong, one line a problem, each naming the
// variable and showing a valid value.
type problems []string

func (p *problems) bad(name, problem string) {
	*p = append(*p, name+problem+"; e.g. "+example(name))
}

// validateApps checks where requests go and the pin's keys.
func (c *Config) validateApps(p *problems) {
	if c.Port < 0 || c.Port > 65535 {
		p.bad("PORT", fmt.Sprintf("=%d is out of range 0-65535", c.Port))
	}
	if c.PrimaryURLRaw == "" {
		p.bad("PRIMARY_URL", " is required: the base URL of the primary app")
	} else if u, err := ParseUpstreamURL(c.PrimaryURLRaw); err != nil {
		p.bad("PRIMARY_URL", " "+err.Error())
	} else {
		c.PrimaryURL = u
	}
	replicas, err := ParseReplicas(c.ReplicaURLsRaw)
	if err != nil {
		p.bad("REPLICA_URLS", " "+err.Error())
	}
	c.Replicas = replicas
	if c.CookieSecretRaw == "" {
		p.bad("COOKIE_SECRET", fmt.Sprintf(" is required: a random key of at least %d bytes that signs pin cookies", MinSecretLen))
		return
	}
	for i, key := range strings.Split(c.CookieSecretRaw, ",") {
		key = strings.TrimSpace(key)
		if len(key) < MinSecretLen {
			p.bad("COOKIE_SECRET", fmt.Sprintf(" key %d is %d bytes; every comma-separated key needs at least %d", i+1, len(key), MinSecretLen))
			continue
		}
		c.CookieKeys = append(c.CookieKeys, []byte(key))
	}
}

// validateLimits checks the timeouts, thresholds and the balancing.
func (c *Config) validateLimits(p *problems) {
	durations := []struct {
		name string
		d    time.Duration
		max  time.Duration
	}{
		{"PIN_TTL", c.PinTTL, MaxPinTTL},
		{"LSN_PIN_TTL", c.LSNPinTTL, MaxPinTTL},
		{"UPSTREAM_TIMEOUT", c.UpstreamTimeout, 0},
		{"CONNECT_TIMEOUT", c.ConnectTimeout, 0},
		{"UPSTREAM_SEND_TIMEOUT", c.UpstreamSendTimeout, 0},
		{"CLIENT_SEND_TIMEOUT", c.ClientSendTimeout, 0},
		{"CLIENT_BODY_TIMEOUT", c.ClientBodyTimeout, 0},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout, 0},
		{"HEALTH_CHECK_INTERVAL", c.HealthCheckInterval, 0},
		{"HEALTH_CHECK_TIMEOUT", c.HealthCheckTimeout, 0},
		{"EJECT_DURATION", c.EjectDuration, 0},
		{"REQUEST_HEADER_TIMEOUT", c.RequestHeaderTimeout, 0},
	}
	for _, d := range durations {
		if d.d <= 0 {
			p.bad(d.name, fmt.Sprintf("=%s must be greater than zero", d.d))
		} else if d.max > 0 && d.d > d.max {
			p.bad(d.name, fmt.Sprintf("=%s is longer than the %s maximum", d.d, d.max))
		}
	}
	ints := []struct {
		name     string
		n        int
		min, max int
	}{
		{"HEALTH_FALL", c.HealthFall, 1, 100},
		{"HEALTH_RISE", c.HealthRise, 1, 100},
		{"EJECT_AFTER_FAILURES", c.EjectAfterFailures, 1, 1000},
		{"EJECT_AFTER_5XX", c.EjectAfter5xx, 0, 1000},
		{"PRIMARY_READ_LIMIT", c.PrimaryReadLimit, 0, 100000},
		{"READ_SHARE", c.ReadShare, 0, 100},
		{"MAX_CONNECTIONS", c.MaxConnections, 1, 1000000},
	}
	for _, i := range ints {
		if i.n < i.min || i.n > i.max {
			p.bad(i.name, fmt.Sprintf("=%d is out of range %d-%d", i.n, i.min, i.max))
		}
	}
	if !strings.HasPrefix(c.HealthCheckPath, "/") {
		p.bad("HEALTH_CHECK_PATH", fmt.Sprintf("=%q must be a path starting with \"/\"", c.HealthCheckPath))
	}
	if c.Balance != "round_robin" && c.Balance != "least_outstanding" {
		p.bad("BALANCE", fmt.Sprintf("=%q is neither round_robin nor least_outstanding", c.Balance))
	}
}

// validateOperations checks the path rules, the cookie's name and what
// operators read: the admin token, metrics and logs.
func (c *Config) validateOperations(p *problems) {
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		p.bad("ADMIN_TOKEN", fmt.Sprintf(" is %d bytes; use at least 16 random bytes", len(c.AdminToken)))
	}
	if c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || port == "" {
			p.bad("METRICS_ADDR", fmt.Sprintf("=%q is not host:port", c.MetricsAddr))
		}
	}
	if c.LogFormat != "logfmt" && c.LogFormat != "json" {
		p.bad("LOG_FORMAT", fmt.Sprintf("=%q is neither logfmt nor json", c.LogFormat))
	}
	if err := new(slog.Level).UnmarshalText([]byte(c.LogLevel)); err != nil {
		p.bad("LOG_LEVEL", fmt.Sprintf("=%q is not one of debug, info, warn, error", c.LogLevel))
	}
	if !validCookieName(c.CookieName) {
		p.bad("COOKIE_NAME", fmt.Sprintf("=%q is not a valid cookie name (letters, digits and !#$%%&'*+-.^_`|~)", c.CookieName))
	}
	var err error
	if c.PrimaryPaths, err = pathrule.Parse(c.PrimaryPathsRaw); err != nil {
		p.bad("PRIMARY_PATHS", " "+err.Error())
	}
	if c.ReadPaths, err = pathrule.Parse(c.ReadPathsRaw); err != nil {
		p.bad("READ_PATHS", " "+err.Error())
	}
}

// ParseUpstreamURL accepts an absolute http or https URL with a host and no
// query, fragment or credentials.
func ParseUpstreamURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%q is not a URL", raw)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q must start with http:// or https://", raw)
	case u.Host == "":
		return nil, fmt.Errorf("%q has no host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("%q must not carry credentials", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("%q must not have a query or fragment", raw)
	}
	return u, nil
}

// ParseReplicas reads REPLICA_URLS: comma-separated entries, each a URL
// optionally followed by " weight=N" (N from 1 to 100).
func ParseReplicas(raw string) ([]Replica, error) {
	var replicas []Replica
	for _, entry := range strings.Split(raw, ",") {
		fields := strings.Fields(entry)
		if len(fields) == 0 {
			continue
		}
		u, err := ParseUpstreamURL(fields[0])
		if err != nil {
			return nil, err
		}
		r := Replica{URL: u, Weight: 1}
		for _, opt := range fields[1:] {
			v, ok := strings.CutPrefix(opt, "weight=")
			w, err := strconv.Atoi(v)
			if !ok || err != nil || w < 1 || w > 100 {
				return nil, fmt.Errorf("%q: option %q is not weight=N with N from 1 to 100", strings.TrimSpace(entry), opt)
			}
			r.Weight = w
		}
		replicas = append(replicas, r)
	}
	return replicas, nil
}

func validCookieName(name string) bool {
	if name == "" {
		return false
	}
	// http.Cookie.Valid checks the name against RFC 6265's token rule.
	return (&http.Cookie{Name: name, Value: "x"}).Valid() == nil
}

// validateDatabases checks the optional replication settings: the primary's
// and the followers' database URLs go together, one follower URL per
// REPLICA_URLS entry or one for all. Each may be a URL or the name of a
// variable holding one (as Heroku keeps an attached database's current URL
// in HEROKU_POSTGRESQL_<COLOR>_URL, or in FOLLOWER_DATABASE_URL when
// attached --as FOLLOWER_DATABASE), resolved here, once.
func (c *Config) validateDatabases(p *problems, vars map[string]string) {
	bad := p.bad
	// resolve returns the URL an entry stands for and the variable that
	// holds it.
	resolve := func(name, entry string) (url, from string, ok bool) {
		switch {
		case strings.HasPrefix(entry, "postgres://") || strings.HasPrefix(entry, "postgresql://"):
			return entry, name, true
		case isVariableName(entry):
			url = strings.TrimSpace(vars[entry])
			if url == "" {
				bad(name, fmt.Sprintf(" names %s, which is not set; set it, or give a postgres:// URL", entry))
				return "", "", false
			}
			if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
				bad(name, fmt.Sprintf(" names %s, which does not hold a postgres:// URL", entry))
				return "", "", false
			}
			return url, entry, true
		}
		bad(name, " must be postgres:// URLs, as Heroku's DATABASE_URL, or names of variables that hold one")
		return "", "", false
	}
	c.PrimaryDatabaseVar = ""
	if raw := strings.TrimSpace(c.PrimaryDatabaseURL); raw != "" {
		c.PrimaryDatabaseURL, c.PrimaryDatabaseVar, _ = resolve("PRIMARY_DATABASE_URL", raw)
		if c.PrimaryDatabaseURL == "" {
			c.PrimaryDatabaseURL = raw // reported; kept so that the checks below do not also complain it is missing
		}
	}
	var followers, followerVars []string
	for _, entry := range c.ReplicaDatabaseURLs {
		if entry = strings.TrimSpace(entry); entry == "" {
			continue
		}
		url, from, ok := resolve("REPLICA_DATABASE_URLS", entry)
		if !ok {
			url, from = entry, "REPLICA_DATABASE_URLS"
		}
		followers, followerVars = append(followers, url), append(followerVars, from)
	}
	c.ReplicaDatabaseURLs, c.ReplicaDatabaseVars = followers, followerVars
	switch {
	case c.PrimaryDatabaseURL == "" && len(followers) > 0:
		bad("PRIMARY_DATABASE_URL", " is required with REPLICA_DATABASE_URLS: lag is measured against the primary")
	case c.PrimaryDatabaseURL != "" && len(followers) == 0:
		bad("REPLICA_DATABASE_URLS", " is required with PRIMARY_DATABASE_URL: the followers' positions release pins")
	case len(followers) > 1 && len(followers) != len(c.Replicas):
		bad("REPLICA_DATABASE_URLS", fmt.Sprintf(" has %d URLs for %d REPLICA_URLS; give one per replica, in order, or one for all", len(followers), len(c.Replicas)))
	case len(followers) > 0 && len(c.Replicas) == 0:
		bad("REPLICA_URLS", " is empty, so REPLICA_DATABASE_URLS has no replica to describe")
	}
	if c.LagPollInterval <= 0 {
		bad("LAG_POLL_INTERVAL", fmt.Sprintf("=%s must be greater than zero", c.LagPollInterval))
	}
	if c.MaxReplicaLag < 0 {
		bad("MAX_REPLICA_LAG", fmt.Sprintf("=%s must not be negative (0 turns it off)", c.MaxReplicaLag))
	} else if c.MaxReplicaLag > 0 && len(followers) == 0 {
		bad("MAX_REPLICA_LAG", " needs PRIMARY_DATABASE_URL and REPLICA_DATABASE_URLS to measure lag")
	}
	if c.LSNPinTTL > 0 && c.LSNPinTTL < c.PinTTL {
		bad("LSN_PIN_TTL", fmt.Sprintf("=%s is shorter than PIN_TTL=%s; a pin that knows the write's position must last at least as long, e.g. 10m", c.LSNPinTTL, c.PinTTL))
	}
	if c.ReplayLearnTTL < 0 || c.ReplayLearnTTL > 24*time.Hour {
		bad("REPLAY_LEARN_TTL", fmt.Sprintf("=%s is out of range 0s-24h (0 turns learning off), e.g. 10m", c.ReplayLearnTTL))
	}
}

// isVariableName reports whether s looks like an environment variable's
// name, as Heroku's config vars are: upper-case letters, digits and _.
func isVariableName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// FollowerVariable returns the variable the database URL of the follower
// behind replica i came from.
func (c *Config) FollowerVariable(i int) string { return followerEntry(c.ReplicaDatabaseVars, i) }

// FollowerURL returns the database URL of the follower behind replica i,
// or "" when followers are not configured.
func (c *Config) FollowerURL(i int) string { return followerEntry(c.ReplicaDatabaseURLs, i) }

// followerEntry is replica i's entry in a list given once for all replicas
// (one follower behind every replica) or once per replica.
func followerEntry(list []string, i int) string {
	switch len(list) {
	case 0:
		return ""
	case 1:
		return list[0]
	}
	return list[i]
}
