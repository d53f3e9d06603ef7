package router

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/splitapp/router/stats"
)

func TestLogLineCannotBeForged(t *testing.T) {
	t.Parallel()
	hostile := []string{
		"/a\nat=info method=GET path=\"/forged\"",
		"/a\rb",
		"/a\" status=200 x=\"",
		"/\xff\xfe",
		"/a\u2028b",
		"/a%0Aat=error",
	}
	for _, p := range hostile {
		ex := testExchange(t, nil, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		h := &ex.Ctx.Request.Header
		h.SetRequestURI(p)
		h.SetHost("evil host\n")
		h.Set("X-Forwarded-For", "1.2.3.4\", \"5.6.7.8\nat=info")
		testProxy.Admit(&ex.Stream, ex.Ctx)
		ex.RequestID, ex.status = "req-id-0123456789abcdef", 200
		// fasthttp's setters turn CR and LF into spaces; the method is a
		// string the encoder gets as it is, hostile bytes and all.
		ex.method = p
		wantPath, wantHost := string(h.RequestURI()), string(h.Host())
		line := string(appendLine(lineEncoder{}, ex, time.Millisecond))
		if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
			t.Errorf("path %q: line is split: %q", p, line)
		}
		if strings.Contains(line, "\r") {
			t.Errorf("path %q: raw CR in line %q", p, line)
		}
		fields := stats.ParseLogfmt(strings.TrimSuffix(line, "\n"))
		if fields == nil {
			t.Fatalf("path %q: line %q does not parse as logfmt with unique keys", p, line)
		}
		if fields["method"] != p || fields["path"] != wantPath || fields["status"] != "200" || fields["host"] != wantHost {
			t.Errorf("path %q: fields read back as method=%q path=%q status=%q host=%q", p, fields["method"], fields["path"], fields["status"], fields["host"])
		}
		if strings.Contains(line, "\xff") {
			t.Errorf("path %q: invalid UTF-8 passed through: %q", p, line)
		}
	}
}

func TestLogLineFields(t *testing.T) {
	t.Parallel()
	ex := testExchange(t, nil, "GET /items?page=2 HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
	ex.RequestID, ex.status, ex.Bytes = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", 200, 5120
	ex.decision, ex.Connect = Decision{Reason: stats.ReasonRead}, time.Millisecond
	got := string(appendLine(lineEncoder{}, ex, 12*time.Millisecond))
	want := `at=info method=GET path="/items?page=2" host=www.example.com request_id=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee fwd="192.0.2.1" upstream=none backend=none reason=read pinned=false pin_issued=false retries=0 status=200 bytes=5120 connect=1ms service=12ms` + "\n"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	ex.code, ex.desc, ex.status = stats.CodeUpstreamTimeout, "upstream did not answer in time", 504
	if got := string(appendLine(lineEncoder{}, ex, 0)); !strings.HasPrefix(got, `at=error code=upstream_timeout desc="upstream did not answer in time" method=GET`) {
		t.Errorf("error line = %s", got)
	}
}

func FuzzLogValue(f *testing.F) {
	f.Add("/a\nb", false)
	f.Add("plain", false)
	f.Add("\xff\"=", true)
	f.Fuzz(func(t *testing.T, v string, quote bool) {
		out := string(appendValue(nil, v, quote))
		if strings.ContainsAny(out, "\n\r") {
			t.Fatalf("value %q encoded as %q contains a line break", v, out)
		}
		if strings.ContainsRune(out, ' ') && out[0] != '"' {
			t.Fatalf("value %q encoded as %q has a bare space", v, out)
		}
	})
}

func TestJSONLineCannotBeForged(t *testing.T) {
	t.Parallel()
	ex := testExchange(t, nil, "GET / HTTP/1.1\r\nHost: x\r\nX-Request-Start: t=1700000000.5\r\n\r\n")
	ex.method = "/a\n\"},{\"x\":\"\xff\u2028"
	ex.RequestID, ex.status, ex.Start = "req-id-0123456789abcdef", 200, time.Unix(1700000000, 750_000_000)
	line := appendLine(lineEncoder{json: true}, ex, 3*time.Millisecond)
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	if strings.Count(string(line), "\n") != 1 {
		t.Errorf("line %q is split", line)
	}
	if got["method"] != "/a\n\"},{\"x\":\"\ufffd\u2028" || got["status"] != 200.0 || got["queue_ms"] != 250.0 || got["service_ms"] != 3.0 {
		t.Errorf("fields read back as %v", got)
	}
}

func TestQueueTime(t *testing.T) {
	t.Parallel()
	start := time.UnixMilli(1_700_000_000_500)
	tests := map[string]time.Duration{
		"1700000000123":       377 * time.Millisecond,
		"1700000000123000":    377 * time.Millisecond,
		"t=1700000000.123":    377 * time.Millisecond,
		"t=1700000000123000":  377 * time.Millisecond,
		"1700000000":          500 * time.Millisecond,
		"1700000000123000000": 377 * time.Millisecond,
	}
	for header, want := range tests {
		got, ok := queueTime(header, start)
		if !ok || (got-want).Abs() > time.Millisecond {
			t.Errorf("queueTime(%q) = %v %v, want %v", header, got, ok, want)
		}
	}
	for _, bad := range []string{"", "soon", "t=x", "1800000000000"} {
		if q, ok := queueTime(bad, start); ok {
			t.Errorf("queueTime(%q) = %v, want none", bad, q)
		}
	}
}

func FuzzJSONString(f *testing.F) {
	f.Add("/a\n\"b\"\xff\u2028")
	f.Add("plain")
	f.Fuzz(func(t *testing.T, v string) {
		out := appendJSONString(nil, v)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q encoded as invalid JSON %q: %v", v, out, err)
		}
		if strings.ContainsAny(string(out), "\n\r") {
			t.Fatalf("%q encoded with a raw line break: %q", v, out)
		}
		if utf8.ValidString(v) && back != v {
			t.Fatalf("%q read back as %q", v, back)
		}
	})
}
