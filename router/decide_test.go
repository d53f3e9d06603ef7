package router

import (
	"github.com/splitapp/router/stats"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/pathrule"
)

func mustRules(t testing.TB, primary, read string) Rules {
	t.Helper()
	p, err := pathrule.Parse(primary)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pathrule.Parse(read)
	if err != nil {
		t.Fatal(err)
	}
	return Rules{PrimaryPaths: p, ReadPaths: r}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	rules := mustRules(t, "/admin/, /auth/*/callback", "POST /search, /graphql")
	up := Input{PrimaryUp: true, ReplicaUp: true}
	with := func(in Input, method, path string) Input {
		in.Method, in.Path = method, path
		return in
	}
	pinned := up
	pinned.Pinned = true
	upgrade := up
	upgrade.Upgrade = true
	noReplica := Input{PrimaryUp: true}
	noPrimary := Input{ReplicaUp: true}
	noPrimaryPinned := Input{ReplicaUp: true, Pinned: true}
	learned := up
	learned.Learned = true
	learnedNoPrimary := noPrimary
	learnedNoPrimary.Learned = true

	primary, replica := health.Primary, health.Replica
	tests := []struct {
		name string
		in   Input
		want Decision
	}{
		{"GET reads from a replica", with(up, "GET", "/items"), Decision{Role: replica, Reason: stats.ReasonRead}},
		{"a learned read goes to the primary", with(learned, "GET", "/logout"), Decision{Role: primary, Reason: stats.ReasonLearned}},
		{"a learned read with the primary down reads from a replica", with(learnedNoPrimary, "GET", "/logout"), Decision{Role: replica, Reason: stats.ReasonRead}},
		{"HEAD reads", with(up, "HEAD", "/items"), Decision{Role: replica, Reason: stats.ReasonRead}},
		{"OPTIONS reads", with(up, "OPTIONS", "/items"), Decision{Role: replica, Reason: stats.ReasonRead}},
		{"POST writes and pins", with(up, "POST", "/items"), Decision{Role: primary, Reason: stats.ReasonWrite, Pin: true}},
		{"PUT writes", with(up, "PUT", "/items/1"), Decision{Role: primary, Reason: stats.ReasonWrite, Pin: true}},
		{"PATCH writes", with(up, "PATCH", "/items/1"), Decision{Role: primary, Reason: stats.ReasonWrite, Pin: true}},
		{"DELETE writes", with(up, "DELETE", "/items/1"), Decision{Role: primary, Reason: stats.ReasonWrite, Pin: true}},
		{"an unknown method writes", with(up, "PURGE", "/items/1"), Decision{Role: primary, Reason: stats.ReasonWrite, Pin: true}},
		{"TRACE is not safe here", with(up, "TRACE", "/"), Decision{Role: primary, Reason: stats.ReasonWrite, Pin: true}},
		{"primary path prefix", with(up, "GET", "/admin/users"), Decision{Role: primary, Reason: stats.ReasonPathRule}},
		{"primary path wildcard", with(up, "GET", "/auth/github/callback"), Decision{Role: primary, Reason: stats.ReasonPathRule}},
		{"primary path beats read path", with(up, "POST", "/admin/"), Decision{Role: primary, Reason: stats.ReasonPathRule}},
		{"not a prefix match", with(up, "GET", "/administrator"), Decision{Role: replica, Reason: stats.ReasonRead}},
		{"read path with method", with(up, "POST", "/search"), Decision{Role: replica, Reason: stats.ReasonRead}},
		{"read path other method writes", with(up, "PUT", "/search"), Decision{Role: primary, Reason: stats.ReasonWrite, Pin: true}},
		{"read path any method", with(up, "POST", "/graphql"), Decision{Role: replica, Reason: stats.ReasonRead}},
		{"read path honours pin", with(pinned, "POST", "/search"), Decision{Role: primary, Reason: stats.ReasonPinned}},
		{"read path without replica", with(noReplica, "POST", "/search"), Decision{Role: primary, Reason: stats.ReasonNoReplica}},
		{"upgrade goes to primary", with(upgrade, "GET", "/cable"), Decision{Role: primary, Reason: stats.ReasonUpgrade}},
		{"pinned read", with(pinned, "GET", "/items"), Decision{Role: primary, Reason: stats.ReasonPinned}},
		{"pinned write is a write", with(pinned, "POST", "/items"), Decision{Role: primary, Reason: stats.ReasonWrite, Pin: true}},
		{"no replica", with(noReplica, "GET", "/items"), Decision{Role: primary, Reason: stats.ReasonNoReplica}},
		{"primary down refuses writes", with(noPrimary, "POST", "/items"), Decision{Reason: stats.ReasonPrimaryDown, Refuse: true}},
		{"primary down refuses primary paths", with(noPrimary, "GET", "/admin/x"), Decision{Reason: stats.ReasonPrimaryDown, Refuse: true}},
		{"primary down still reads", with(noPrimary, "GET", "/items"), Decision{Role: replica, Reason: stats.ReasonRead}},
		{"primary down serves pinned reads from replicas", with(noPrimaryPinned, "GET", "/items"), Decision{Role: replica, Reason: stats.ReasonPrimaryDown}},
		{"all down", with(Input{}, "GET", "/items"), Decision{Reason: stats.ReasonAllDown, Refuse: true}},
		{"a released pin goes to a follower that has the write", with(Input{PrimaryUp: true, ReplicaUp: true, Pinned: true, CaughtUp: true}, "GET", "/items"),
			Decision{Role: replica, Reason: stats.ReasonCaughtUp}},
		{"a released pin on a learned route stays on the primary", with(Input{PrimaryUp: true, ReplicaUp: true, Pinned: true, CaughtUp: true, Learned: true}, "GET", "/logout"),
			Decision{Role: primary, Reason: stats.ReasonPinned}},
	}
	for _, tt := range tests {
		if got := rules.Decide(tt.in); got != tt.want {
			t.Errorf("%s: Decide(%+v) = %+v, want %+v", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestIsAdminPath(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		"/_router/health":          true,
		"/_router":                 true,
		"/_router/":                true,
		"//_router/metrics":        true,
		"/_ROUTER/metrics":         true,
		"/_Router/status":          true,
		"/./_router/metrics":       true,
		"/x/../_router/metrics":    true,
		"/_router/../_router/x":    true,
		"\\_router\\metrics":       true,
		"/_routerx":                false,
		"/_routers/x":              false,
		"/app/_router/health":      false,
		"/":                        false,
		"/items":                   false,
		"/_router/%2e%2e/":         true,
		"/_router/../../etc/passw": true,
		"/a/../b":                  false,
	}
	for path, want := range tests {
		if got := isAdminPath(path); got != want {
			t.Errorf("isAdminPath(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestValidRequestID(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		"":                                     false,
		"short":                                false,
		"0123456789abcdefghij":                 true,
		"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee": true,
		"abc+/=-ABCxyz0123456789":              true,
		"has space in it 0123456789":           false,
		"quote\"0123456789abcdefghij":          false,
		"newline\n0123456789abcdefghij":        false,
	}
	tests[string(make([]byte, 201))] = false
	for id, want := range tests {
		if got := validRequestID([]byte(id)); got != want {
			t.Errorf("validRequestID(%q) = %v, want %v", id, got, want)
		}
	}
	var buf [36]byte
	newRequestID(&buf)
	if id := string(buf[:]); !validRequestID([]byte(id)) {
		t.Errorf("generated id %q is not valid", id)
	}
}

func TestInterleaveHonoursWeights(t *testing.T) {
	t.Parallel()
	mk := func(name string, w int) *backend {
		return &backend{up: health.NewUpstream(&url.URL{Scheme: "http", Host: name}, health.Replica, w, nil)}
	}
	a, b := mk("a", 1), mk("b", 3)
	slots := interleave([]*backend{a, b})
	var names string
	for _, s := range slots {
		names += s.up.Name
	}
	if names != "babb" {
		t.Errorf("slots = %q, want the smooth order %q", names, "babb")
	}
	pool := newReplicaPool([]*backend{a, b}, false)
	counts := map[string]int{}
	for range 400 {
		counts[pool.pick(nil).up.Name]++
	}
	if counts["a"] != 100 || counts["b"] != 300 {
		t.Errorf("400 picks gave %v, want a:100 b:300", counts)
	}
	if got := pool.pick(b); got != a {
		t.Errorf("pick(exclude b) = %v, want a", got.up.Name)
	}
}

// BenchmarkDecide measures what every request pays before proxying: the
// pin cookie check and the routing decision.
func BenchmarkDecide(b *testing.B) {
	rules := mustRules(b, "/admin/, /auth/*/callback", "POST /search")
	pinner, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}})
	token, _ := pinner.Sign(time.Minute, 0)
	for _, bc := range []struct {
		name   string
		cookie string
	}{
		{"unpinned", "session=abcdef; theme=dark"},
		{"pinned", "session=abcdef; router_pin=" + token},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := &Router{pinner: pinner}
			ex := testExchange(b, rt, "GET /items/42 HTTP/1.1\r\nHost: x\r\nCookie: "+bc.cookie+"\r\n\r\n")
			b.ReportAllocs()
			for b.Loop() {
				_, pinned := rt.pinFromCookies(ex)
				d := rules.Decide(Input{Method: ex.method, Path: ex.path, Upgrade: ex.Upgrading, Pinned: pinned, PrimaryUp: true, ReplicaUp: true})
				if d.Refuse {
					b.Fatal("refused")
				}
			}
		})
	}
}

func FuzzRequestID(f *testing.F) {
	f.Add("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
	f.Add("short")
	f.Add("has space 0123456789abcdef")
	f.Fuzz(func(t *testing.T, id string) {
		if !validRequestID([]byte(id)) {
			return
		}
		// Whatever passes goes into log lines without escapes and upstream
		// as is.
		if len(id) < 20 || len(id) > 200 || string(appendValue(nil, id, true)) != `"`+id+`"` ||
			strings.ContainsAny(id, " \"\\\r\n") {
			t.Fatalf("accepted request id %q", id)
		}
	})
}

func TestAppRoute(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"/items/42":                 "", // nothing an app reads otherwise
		"/admin;x/users":            "/admin/users",
		"/admin;x=1;y=2/users/":     "/admin/users/",
		"/auth/google%2Fx/callback": "/auth/google%2Fx/callback",
		"/auth/google%2fx/callback": "/auth/google%2Fx/callback",
		"/a%5cb":                    "/a%5Cb",
		"/a%20b?q=;x":               "/a b",
		"/_router;x/metrics":        "/_router/metrics",
		"/x/..;/_router/metrics":    "/_router/metrics",
		"//a;//b%2e%2e/../c":        "/a/c",
		"/%zz;":                     "/%zz",
		"/..;/..;/etc":              "/etc",
	} {
		if got := string(appRoute(raw, nil)); got != want {
			t.Errorf("appRoute(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestRoutingPathTakesTheSaferView(t *testing.T) {
	t.Parallel()
	primary, _ := pathrule.Parse("/admin/,/auth/*/callback")
	read, _ := pathrule.Parse("POST /search/*")
	rules := Rules{PrimaryPaths: primary, ReadPaths: read}
	for _, tt := range []struct {
		method, cleaned string
		alts            []string
		want            string
	}{
		{"GET", "/items", nil, "/items"},
		{"GET", "/admin;x/users", []string{"/admin/users", ""}, "/admin/users"},
		{"GET", "/auth/google/x/callback", []string{"/auth/google%2Fx/callback"}, "/auth/google%2Fx/callback"},
		{"GET", "/admin/users", []string{"/other"}, "/admin/users"},
		{"POST", "/search/a b", []string{"/search/a b"}, "/search/a b"},
		{"POST", "/search/a/b", []string{"/search/a%2Fb"}, "/search/a/b"}, // not read in the cleaned view
		{"POST", "/search/a", []string{"/search/a/c"}, "/search/a/c"},     // not read in the app's view
	} {
		got := rules.routingPath(tt.method, tt.cleaned, tt.alts...)
		if got != tt.want {
			t.Errorf("routingPath(%s %q, %q) = %q, want %q", tt.method, tt.cleaned, tt.alts, got, tt.want)
		}
	}
}
