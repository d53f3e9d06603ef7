// Package cookie issues and reads pins: signed, expiring tokens that tell
// every router process "this client wrote recently; serve its reads from the
// primary". A pin lives in a cookie (or, for clients without cookies, in a
// header) and carries the time it ends and, when the router reads the
// primary database's WAL position, the position after the write, so a
// follower that has replayed it can serve the reads; never a backend
// address.
package cookie

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
)

// MaxTokenLen caps the length of a pin token read from a request. A real
// token is about 110 bytes; anything longer is garbage and is not decoded,
// so a hostile client cannot make the router allocate for it.
const MaxTokenLen = 256

// payloadVersion is the first byte of every signed payload, so the format can
// change later without old routers misreading new pins.
const payloadVersion = 1

const payloadLen = 1 + 8 + 8

// MaxTTL bounds every pin, whether from PIN_TTL or from an app's X-Router-Pin
// header, so a mistaken value cannot pin a client to the primary for days.
const MaxTTL = time.Hour

// Pin is what a valid token says.
type Pin struct {
	// Until is when the pin ends.
	Until time.Time
	// LSN is the primary's WAL position after the write, or 0 when unknown.
	LSN uint64
}

// Options configures a Pinner.
type Options struct {
	// Name is the cookie's name.
	Name string
	// Keys are HMAC-SHA256 keys. The first signs; all verify, so a key can be
	// rotated out by moving it after a new one.
	Keys [][]byte
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

// Pinner signs and verifies pins. It is safe for concurrent use.
type Pinner struct {
	name   string
	codecs []securecookie.Codec
	now    func() time.Time
}

// New returns a Pinner for the given keys.
func New(o Options) (*Pinner, error) {
	if len(o.Keys) == 0 {
		return nil, errors.New("cookie: at least one key is required")
	}
	if o.Name == "" {
		return nil, errors.New("cookie: a cookie name is required")
	}
	p := &Pinner{name: o.Name, now: o.Now}
	if p.now == nil {
		p.now = time.Now
	}
	for _, key := range o.Keys {
		sc := securecookie.New(key, nil)
		sc.SetSerializer(securecookie.NopEncoder{})
		sc.MaxLength(MaxTokenLen)
		// The pin's own Until is the expiry; securecookie's clock check
		// would only duplicate it with a clock tests cannot control.
		sc.MaxAge(0)
		p.codecs = append(p.codecs, sc)
	}
	return p, nil
}

// Name returns the cookie name.
func (p *Pinner) Name() string { return p.name }

// Sign returns a token for a pin that lasts ttl from now.
func (p *Pinner) Sign(ttl time.Duration, lsn uint64) (string, error) {
	var payload [payloadLen]byte
	payload[0] = payloadVersion
	binary.BigEndian.PutUint64(payload[1:], uint64(p.now().Add(ttl).UnixMilli()))
	binary.BigEndian.PutUint64(payload[9:], lsn)
	return securecookie.EncodeMulti(p.name, payload[:], p.codecs...)
}

// Verify returns the pin a token carries. A token that is empty, too long,
// forged, tampered with, signed by an unknown key or expired is simply not a
// pin: ok is false and there is no error to handle.
func (p *Pinner) Verify(token string) (pin Pin, ok bool) {
	if token == "" || len(token) > MaxTokenLen {
		return Pin{}, false
	}
	var payload []byte
	if err := securecookie.DecodeMulti(p.name, token, &payload, p.codecs...); err != nil {
		return Pin{}, false
	}
	if len(payload) != payloadLen || payload[0] != payloadVersion {
		return Pin{}, false
	}
	pin.Until = time.UnixMilli(int64(binary.BigEndian.Uint64(payload[1:])))
	pin.LSN = binary.BigEndian.Uint64(payload[9:])
	if !p.now().Before(pin.Until) {
		return Pin{}, false
	}
	return pin, true
}

// SetCookieValue returns the Set-Cookie value carrying token. Max-Age is
// the pin's TTL, rounded up to a whole second so a short pin is not dropped
// at once; Secure is set when the client reached the front router over
// HTTPS.
func (p *Pinner) SetCookieValue(token string, ttl time.Duration, secure bool) string {
	maxAge := int((ttl + time.Second - 1) / time.Second)
	var b strings.Builder
	b.Grow(len(p.name) + len(token) + 64)
	b.WriteString(p.name)
	b.WriteByte('=')
	b.WriteString(token)
	b.WriteString("; Path=/; Max-Age=")
	b.WriteString(strconv.Itoa(maxAge))
	b.WriteString("; HttpOnly; SameSite=Lax")
	if secure {
		b.WriteString("; Secure")
	}
	return b.String()
}
