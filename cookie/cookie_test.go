package cookie

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

var (
	keyA = []byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	keyB = []byte("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
)

// clock is a settable time source so TTL tests never sleep.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newPinner(t *testing.T, c *clock, keys ...[]byte) *Pinner {
	t.Helper()
	p, err := New(Options{Name: "router_pin", Keys: keys, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSignVerifyLifecycle(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	p := newPinner(t, c, keyA)
	token, err := p.Sign(5*time.Second, 42)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) > MaxTokenLen {
		t.Fatalf("token is %d bytes, over MaxTokenLen %d", len(token), MaxTokenLen)
	}
	pin, ok := p.Verify(token)
	if !ok {
		t.Fatal("fresh token not honoured")
	}
	if want := c.t.Add(5 * time.Second); !pin.Until.Equal(want) || pin.LSN != 42 {
		t.Errorf("got pin %+v, want Until %v LSN 42", pin, want)
	}
	c.t = c.t.Add(4999 * time.Millisecond)
	if _, ok := p.Verify(token); !ok {
		t.Error("token rejected before its TTL ran out")
	}
	c.t = c.t.Add(time.Millisecond)
	if _, ok := p.Verify(token); ok {
		t.Error("token honoured at its expiry")
	}
}

func TestVerifyRejectsBadTokens(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Now()}
	p := newPinner(t, c, keyA)
	good, _ := p.Sign(time.Minute, 0)
	forger := newPinner(t, c, keyB)
	forged, _ := forger.Sign(time.Minute, 0)
	otherName, _ := (&Pinner{name: "other", codecs: p.codecs, now: c.now}).Sign(time.Minute, 0)

	flipped := []byte(good)
	flipped[len(flipped)/2] ^= 1
	tests := map[string]string{
		"empty":            "",
		"garbage":          "not-a-token",
		"truncated":        good[:len(good)-5],
		"tampered":         string(flipped),
		"forged":           forged,
		"other name":       otherName,
		"oversized":        good + strings.Repeat("A", MaxTokenLen),
		"quotes and semis": `"a;b"`,
	}
	for name, token := range tests {
		if pin, ok := p.Verify(token); ok {
			t.Errorf("%s: Verify accepted %q as %+v", name, token, pin)
		}
	}
}

func TestRotatedKeyIsHonoured(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Now()}
	old := newPinner(t, c, keyA)
	token, _ := old.Sign(time.Minute, 0)

	rotated := newPinner(t, c, keyB, keyA)
	if _, ok := rotated.Verify(token); !ok {
		t.Fatal("token signed with a rotated-out key was not honoured")
	}
	fresh, _ := rotated.Sign(time.Minute, 0)
	if _, ok := old.Verify(fresh); ok {
		t.Error("new key's token verified by a pinner that never had the key")
	}
	if _, ok := newPinner(t, c, keyB).Verify(fresh); !ok {
		t.Error("the first key does not sign")
	}
}

func TestSetCookieAttributes(t *testing.T) {
	t.Parallel()
	p := newPinner(t, &clock{t: time.Now()}, keyA)
	want := "router_pin=TOKEN; Path=/; Max-Age=2; HttpOnly; SameSite=Lax; Secure"
	if got := p.SetCookieValue("TOKEN", 1500*time.Millisecond, true); got != want {
		t.Errorf("Set-Cookie = %q, want %q", got, want)
	}
	got := p.SetCookieValue("TOKEN", 5*time.Second, false)
	if strings.Contains(got, "Secure") || !strings.Contains(got, "Max-Age=5;") {
		t.Errorf("Set-Cookie over plain HTTP = %q, want Max-Age=5 and no Secure", got)
	}
	parsed := (&http.Response{Header: http.Header{"Set-Cookie": {got}}}).Cookies()
	if len(parsed) != 1 || parsed[0].Value != "TOKEN" || !parsed[0].HttpOnly || parsed[0].SameSite != http.SameSiteLaxMode {
		t.Errorf("net/http parses the cookie as %+v", parsed)
	}
}

func BenchmarkVerify(b *testing.B) {
	p, _ := New(Options{Name: "router_pin", Keys: [][]byte{keyA}})
	token, _ := p.Sign(time.Minute, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := p.Verify(token); !ok {
			b.Fatal("not verified")
		}
	}
}

func FuzzVerify(f *testing.F) {
	p, _ := New(Options{Name: "router_pin", Keys: [][]byte{keyA, keyB}})
	good, _ := p.Sign(time.Minute, 7)
	f.Add(good)
	f.Add("")
	f.Add("MTcwMDAwMDAwMHx8")
	f.Fuzz(func(t *testing.T, token string) {
		pin, ok := p.Verify(token)
		if ok && pin.LSN != 7 {
			// Only the signed token (or a base64 spelling of the same bytes)
			// may verify; anything else means the MAC check is broken.
			t.Fatalf("accepted unsigned token %q as %+v", token, pin)
		}
	})
}
