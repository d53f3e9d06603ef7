package test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/splitapp/router/cookie"
)

// pinCookie returns the router_pin cookie a response set, or nil.
func pinCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == "router_pin" {
			return c
		}
	}
	return nil
}

func withCookie(value string) http.Header {
	return http.Header{"Cookie": {"session=app-owned; router_pin=" + value + "; theme=dark"}}
}

func TestPinLifecycle(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	env := baseEnv(primary, replica)
	env["PIN_TTL"] = "7s"
	rt := startRouter(t, env)
	// A second process with the same secret, as on a second web dyno.
	other := startRouter(t, env)

	resp, _, _ := do(t, "POST", rt.URL+"/items", strings.NewReader("x=1"), http.Header{"X-Forwarded-Proto": {"https"}})
	pin := pinCookie(resp)
	if pin == nil {
		t.Fatalf("write got no pin cookie; Set-Cookie = %q", resp.Header["Set-Cookie"])
	}
	if !pin.HttpOnly || !pin.Secure || pin.SameSite != http.SameSiteLaxMode || pin.Path != "/" || pin.MaxAge != 7 {
		t.Errorf("pin cookie attributes = %+v, want HttpOnly Secure SameSite=Lax Path=/ Max-Age=7", pin)
	}
	if len(pin.Value) > cookie.MaxTokenLen {
		t.Errorf("pin is %d bytes, over the %d cap", len(pin.Value), cookie.MaxTokenLen)
	}

	t.Run("honoured", func(t *testing.T) {
		resp, _, id := do(t, "GET", rt.URL+"/items", nil, withCookie(pin.Value))
		if got := resp.Header.Get("X-Served-By"); got != "primary" {
			t.Errorf("pinned read served by %q, want primary", got)
		}
		line := rt.logFor(id)
		if field(line, "reason") != "pinned" || field(line, "pinned") != "true" {
			t.Errorf("log line %q, want reason=pinned pinned=true", line)
		}
		got := primary.received(id)[0].Header.Get("Cookie")
		if got != "session=app-owned; theme=dark" {
			t.Errorf("primary received Cookie %q, want the app's cookies without the pin", got)
		}
	})
	t.Run("honoured by another process", func(t *testing.T) {
		resp, _, _ := do(t, "GET", other.URL+"/items", nil, withCookie(pin.Value))
		if got := resp.Header.Get("X-Served-By"); got != "primary" {
			t.Errorf("pinned read via the second router served by %q, want primary", got)
		}
	})

	past, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte(secret)},
		Now: func() time.Time { return time.Now().Add(-time.Minute) }})
	expired, _ := past.Sign(7*time.Second, 0)
	forger, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte("another-secret-0123456789abcdef0123")}})
	forged, _ := forger.Sign(time.Hour, 0)
	tampered := []byte(pin.Value)
	tampered[20] ^= 0x01
	notPins := map[string]string{
		"expired":   expired,
		"forged":    forged,
		"tampered":  string(tampered),
		"truncated": pin.Value[:len(pin.Value)/2],
		"oversized": pin.Value + strings.Repeat("A", 4096),
		"empty":     "",
		"garbage":   "%%%not base64%%%",
	}
	for name, value := range notPins {
		t.Run(name, func(t *testing.T) {
			resp, _, id := do(t, "GET", rt.URL+"/items", nil, withCookie(value))
			if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "replica" {
				t.Errorf("%s pin: got %d from %q, want 200 from the replica", name, resp.StatusCode, resp.Header.Get("X-Served-By"))
			}
			if got := field(rt.logFor(id), "pinned"); got != "false" {
				t.Errorf("%s pin logged pinned=%s, want false", name, got)
			}
			if got := replica.received(id)[0].Header.Get("Cookie"); strings.Contains(got, "router_pin") {
				t.Errorf("%s pin forwarded to the app: Cookie %q", name, got)
			}
		})
	}

	t.Run("rotated key", func(t *testing.T) {
		rotatedEnv := baseEnv(primary, replica)
		rotatedEnv["COOKIE_SECRET"] = "new-secret-0123456789abcdef0123456789, " + secret
		rotated := startRouter(t, rotatedEnv)
		resp, _, _ := do(t, "GET", rotated.URL+"/items", nil, withCookie(pin.Value))
		if got := resp.Header.Get("X-Served-By"); got != "primary" {
			t.Errorf("pin signed with the rotated-out key served by %q, want primary", got)
		}
		resp, _, _ = do(t, "POST", rotated.URL+"/items", nil, nil)
		newPin := pinCookie(resp)
		resp, _, _ = do(t, "GET", rt.URL+"/items", nil, withCookie(newPin.Value))
		if got := resp.Header.Get("X-Served-By"); got != "replica" {
			t.Errorf("a router without the new key honoured its pin (served by %q)", got)
		}
	})
}

func TestPlainHTTPPinIsNotSecure(t *testing.T) {
	t.Parallel()
	primary := newUpstream(t, "primary")
	rt := startRouter(t, baseEnv(primary))
	resp, _, _ := do(t, "DELETE", rt.URL+"/items/1", nil, http.Header{"X-Forwarded-Proto": {"http"}})
	if pin := pinCookie(resp); pin == nil || pin.Secure || pin.MaxAge != 5 {
		t.Errorf("pin over plain http = %+v, want Max-Age=5 (the default PIN_TTL) without Secure", pin)
	}
}

func TestAppSteersPins(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	directive := func(w http.ResponseWriter, r *http.Request) {
		if d := r.URL.Query().Get("pin"); d != "" {
			w.Header().Set("X-Router-Pin", d)
		}
		w.Write([]byte("ok"))
	}
	primary.handle(directive)
	replica.handle(directive)
	env := baseEnv(primary, replica)
	env["PRIMARY_PATHS"] = "/admin/"
	rt := startRouter(t, env)

	tests := []struct {
		method, path string
		wantMaxAge   int // 0: no pin
	}{
		{"POST", "/import?pin=skip", 0},
		{"POST", "/import?pin=30s", 30},
		{"POST", "/import?pin=nonsense", 5},
		{"POST", "/import?pin=-3s", 5},
		{"POST", "/import?pin=48h", 5},
		{"GET", "/admin/report?pin=10s", 10},
		{"GET", "/admin/report", 0},
		{"GET", "/items?pin=10s", 0}, // a replica cannot pin
	}
	for _, tt := range tests {
		resp, _, _ := do(t, tt.method, rt.URL+tt.path, nil, nil)
		if v := resp.Header.Get("X-Router-Pin"); v != "" {
			t.Errorf("%s %s: X-Router-Pin %q reached the client", tt.method, tt.path, v)
		}
		pin := pinCookie(resp)
		switch {
		case tt.wantMaxAge == 0 && pin != nil:
			t.Errorf("%s %s: got a pin (Max-Age=%d), want none", tt.method, tt.path, pin.MaxAge)
		case tt.wantMaxAge != 0 && (pin == nil || pin.MaxAge != tt.wantMaxAge):
			t.Errorf("%s %s: pin %+v, want Max-Age=%d", tt.method, tt.path, pin, tt.wantMaxAge)
		}
	}
}

// TestDatabaseUnreachableGivesTimePins: when the primary's WAL position
// cannot be had, writes still succeed and pin by time.
func TestDatabaseUnreachableGivesTimePins(t *testing.T) {
	t.Parallel()
	primary, replica := newUpstream(t, "primary"), newUpstream(t, "replica")
	env := baseEnv(primary, replica)
	dead := fmt.Sprintf("postgres://nobody@127.0.0.1:%d/db?sslmode=disable&connect_timeout=1", freePort(t))
	env["PRIMARY_DATABASE_URL"] = dead
	env["REPLICA_DATABASE_URLS"] = dead
	rt := startRouter(t, env)
	start := time.Now()
	resp, _, _ := do(t, "POST", rt.URL+"/items", strings.NewReader("x"), nil)
	took := time.Since(start)
	pin := pinCookie(resp)
	if resp.StatusCode != 200 || pin == nil || resp.Header.Get("X-Router-Pin-Token") != pin.Value {
		t.Fatalf("write with the database unreachable: %d, pin %v; want 200 with a pin in cookie and header", resp.StatusCode, pin)
	}
	if took > 2*time.Second {
		t.Errorf("the write took %s; the WAL position query must give up after its short bound", took)
	}
	resp, _, id := do(t, "GET", rt.URL+"/items", nil, http.Header{"Cookie": {pin.String()}})
	if resp.Header.Get("X-Served-By") != "primary" || field(rt.logFor(id), "reason") != "pinned" {
		t.Errorf("read with the time pin: served by %q, want the primary (reason pinned)", resp.Header.Get("X-Served-By"))
	}
	if _, ok := rt.waitLog(`msg="upstream replication unknown"`, 5*time.Second); !ok {
		t.Error("the unreachable follower database was not reported")
	}
}
