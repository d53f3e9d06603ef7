package pathrule

import "testing"

func TestMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		patterns string
		method   string
		path     string
		want     bool
	}{
		{"/admin/", "GET", "/admin/users", true},
		{"/admin/", "GET", "/admin/", true},
		{"/admin/", "GET", "/admin", false},
		{"/admin/", "GET", "/administrator", false},
		{"/admin/", "GET", "/admin/a/b/c", true},
		{"/auth/*/callback", "GET", "/auth/github/callback", true},
		{"/auth/*/callback", "GET", "/auth//callback", false},
		{"/auth/*/callback", "GET", "/auth/github/callback/", false},
		{"/auth/*/callback", "GET", "/auth/a/b/callback", false},
		{"/auth/*/callback", "GET", "/auth/github", false},
		{"/login", "GET", "/login", true},
		{"/login", "GET", "/login/", false},
		{"/login", "GET", "/login/x", false},
		{"/login", "GET", "/logins", false},
		{"/login", "GET", "/", false},
		{"/", "GET", "/anything/at/all", true},
		{"/", "GET", "/", true},
		{"/users/*/", "GET", "/users/7/edit", true},
		{"/users/*/", "GET", "/users/7", false},
		{"POST /search", "POST", "/search", true},
		{"POST /search", "GET", "/search", false},
		{"post /search", "POST", "/search", true},
		{"/a, /b/", "GET", "/b/c", true},
		{"/a, /b/", "GET", "/c", false},
		{"", "GET", "/", false},
		{"/x", "GET", "", false},
		{"/x", "GET", "x", false},
	}
	for _, tt := range tests {
		set, err := Parse(tt.patterns)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.patterns, err)
		}
		if got := set.Match(tt.method, tt.path); got != tt.want {
			t.Errorf("Parse(%q).Match(%q, %q) = %v, want %v", tt.patterns, tt.method, tt.path, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"admin", "/a//b", "/a*b", "/a?x=1", "P0ST /a", "GET admin"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", bad)
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	set, _ := Parse("/admin/, /auth/*/callback, POST /search")
	allocs := testing.AllocsPerRun(100, func() {
		set.Match("GET", "/auth/github/callback")
		set.Match("GET", "/items/42")
	})
	if allocs != 0 {
		t.Errorf("Match allocated %v times per run, want 0", allocs)
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("/admin/, /auth/*/callback", "GET", "/auth/x/callback")
	f.Add("POST /search", "POST", "/search")
	f.Fuzz(func(t *testing.T, patterns, method, path string) {
		set, err := Parse(patterns)
		if err != nil {
			return
		}
		// Must not panic; a rule set of only "/" matches every absolute path.
		got := set.Match(method, path)
		if len(path) > 0 && path[0] == '/' {
			all, _ := Parse("/")
			if !all.Match(method, path) {
				t.Fatalf("\"/\" does not match %q", path)
			}
		}
		_ = got
	})
}
