package router

import (
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/splitapp/router/health"
	"github.com/splitapp/router/internal/view"
	"github.com/splitapp/router/stats"
)

// accessLog writes one line per request, shaped like Heroku's router lines
// so grep, awk and l2met read them:
//
//	at=info method=GET path="/items" host=example.com request_id=… fwd="1.2.3.4" upstream=replica backend=ro.example.com reason=read pinned=false pin_issued=false retries=0 status=200 bytes=5120 connect=1ms service=12ms
//
// Failures start with at=error code=… desc="…"; failure= follows retries=
// when an attempt failed (even one a retry made good), naming its class;
// queue= follows service=
// when the front router sent X-Request-Start. With JSON set, the same
// fields form one JSON object per line. Each line is one Write call, so
// lines from concurrent requests never interleave.
type accessLog struct {
	w    io.Writer
	json bool
	bufs sync.Pool
}

func newAccessLog(w io.Writer, json bool) *accessLog {
	return &accessLog{w: w, json: json, bufs: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

func (l *accessLog) write(ex *exchange, service time.Duration) {
	bp := l.bufs.Get().(*[]byte)
	e := lineEncoder{b: (*bp)[:0], json: l.json}
	b := appendLine(e, ex, service)
	l.w.Write(b)
	*bp = b
	l.bufs.Put(bp)
}

func appendLine(e lineEncoder, ex *exchange, service time.Duration) []byte {
	h := &ex.Ctx.Request.Header
	e.begin()
	if ex.code != "" {
		e.str("at", "error", false)
		e.str("code", ex.code, false)
		e.str("desc", ex.desc, true)
	} else {
		e.str("at", "info", false)
	}
	e.str("method", ex.method, false)
	e.str("path", view.String(h.RequestURI()), true)
	e.str("host", view.String(h.Host()), false)
	e.str("request_id", ex.RequestID, false)
	if xff := ex.Head.ForwardedFor; len(xff) > 0 {
		e.str("fwd", view.String(xff), true)
	} else {
		e.str("fwd", view.String(ex.ClientIP()), true)
	}
	upstream, name := stats.UpstreamNone, stats.UpstreamNone
	if ex.backend != nil {
		upstream, name = ex.backend.up.Role.String(), ex.backend.up.Name
	}
	e.str("upstream", upstream, false)
	e.str("backend", name, false)
	e.str("reason", string(ex.decision.Reason), false)
	e.bool("pinned", ex.pinned)
	e.bool("pin_issued", ex.pinIssued)
	e.int("retries", int64(ex.retries))
	if ex.failed != health.NoFailure {
		e.str("failure", ex.failed.String(), false)
	}
	if ex.replayedFrom != nil {
		e.str("replayed_from", ex.replayedFrom.up.Name, false)
		e.int("replayed_status", int64(ex.replayedStatus))
		e.ms("replayed_service", ex.replayedTime)
	}
	e.int("status", int64(ex.status))
	e.int("bytes", ex.Bytes)
	e.ms("connect", ex.Connect)
	e.ms("service", service)
	if q, ok := queueTime(view.String(ex.Head.Start), ex.Start); ok {
		e.ms("queue", q)
	}
	return e.end()
}

// queueTime is how long a request waited between the front router's
// X-Request-Start and the router: milliseconds since the epoch, as Heroku
// sends it, nginx's "t=<seconds>.<fraction>", or "t=<microseconds>" as the
// router itself sends it when none came. Other values, and clocks
// that disagree into the negative, give no queue time.
func queueTime(header string, start time.Time) (time.Duration, bool) {
	if header == "" {
		return 0, false
	}
	var at time.Time
	if v, ok := strings.CutPrefix(header, "t="); ok && strings.Contains(v, ".") {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, false
		}
		at = time.UnixMicro(int64(f * 1e6))
	} else {
		// Whole numbers, with or without t=, in the unit their size says.
		n, err := strconv.ParseInt(strings.TrimPrefix(header, "t="), 10, 64)
		if err != nil {
			return 0, false
		}
		switch {
		case n > 1e17: // nanoseconds
			at = time.Unix(0, n)
		case n > 1e14: // microseconds
			at = time.UnixMicro(n)
		case n > 1e11: // milliseconds
			at = time.UnixMilli(n)
		default: // seconds
			at = time.Unix(n, 0)
		}
	}
	q := start.Sub(at)
	if q < 0 {
		return 0, false
	}
	return q, true
}

// lineEncoder appends fields as logfmt or as JSON.
type lineEncoder struct {
	b     []byte
	json  bool
	first bool
}

func (e *lineEncoder) begin() {
	e.first = true
	if e.json {
		e.b = append(e.b, '{')
	}
}

func (e *lineEncoder) end() []byte {
	if e.json {
		e.b = append(e.b, '}')
	}
	return append(e.b, '\n')
}

func (e *lineEncoder) key(k string) {
	first := e.first
	e.first = false
	if e.json {
		if first {
			e.b = append(e.b, '"')
		} else {
			e.b = append(e.b, ',', '"')
		}
		e.b = append(e.b, k...)
		e.b = append(e.b, '"', ':')
		return
	}
	if !first {
		e.b = append(e.b, ' ')
	}
	e.b = append(e.b, k...)
	e.b = append(e.b, '=')
}

func (e *lineEncoder) str(k, v string, quote bool) {
	e.key(k)
	if e.json {
		e.b = appendJSONString(e.b, v)
	} else {
		e.b = appendValue(e.b, v, quote)
	}
}

func (e *lineEncoder) int(k string, n int64) {
	e.key(k)
	e.b = strconv.AppendInt(e.b, n, 10)
}

func (e *lineEncoder) bool(k string, v bool) {
	e.key(k)
	e.b = strconv.AppendBool(e.b, v)
}

// ms writes whole milliseconds: "12ms" in logfmt, as Heroku does, and the
// number 12 under a key ending in _ms in JSON.
func (e *lineEncoder) ms(k string, d time.Duration) {
	if e.json {
		e.key(k + "_ms")
		e.b = strconv.AppendInt(e.b, d.Milliseconds(), 10)
		return
	}
	e.key(k)
	e.b = strconv.AppendInt(e.b, d.Milliseconds(), 10)
	e.b = append(e.b, "ms"...)
}

// appendValue appends a logfmt value. Values that come from requests are
// untrusted: anything but plain printable ASCII without spaces, quotes or
// "=" is quoted with Go escapes, so no byte sequence (CR, LF, quotes,
// invalid UTF-8) can end the line or forge a field. quote forces quotes, as
// Heroku's router does for path and fwd; inside them, spaces and "=" need
// no escape.
func appendValue(b []byte, v string, quote bool) []byte {
	class := needsQuote
	if quote {
		class = needsEscape
	}
	for i := 0; i < len(v); i++ {
		if logBytes[v[i]]&class != 0 {
			return strconv.AppendQuote(b, v)
		}
	}
	if !quote {
		if v == "" {
			return append(b, '"', '"')
		}
		return append(b, v...)
	}
	// What passes the table, strconv.Quote leaves as it is.
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}

// Byte classes for logfmt values: bytes strconv.Quote would escape, and
// those that also end an unquoted value.
const (
	needsEscape uint8 = 1 << iota
	needsQuote
)

var logBytes = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c < ' ' || c == 0x7f || c == '"' || c == '\\' || c >= utf8.RuneSelf:
			t[c] = needsEscape | needsQuote
		case c == ' ' || c == '=':
			t[c] = needsQuote
		}
	}
	return t
}()

// appendJSONString appends v as a JSON string. Control characters and the
// line separators U+2028/U+2029 are escaped; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, v string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(v[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, v[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
