package test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// browser is what the framework tests drive the router with: a cookie
// jar, redirects followed one hop at a time by the test (each hop is a
// request of its own in the router's log), and each step's route and
// reason read back from that log.
type browser struct {
	t      *testing.T
	rt     *routerProc
	client *http.Client
	// header goes with every request (Origin, say); host, when set, is
	// the Host the browser asks for: the public site's name.
	header http.Header
	host   string
	// location is the last answer's Location header.
	location string
	steps    []string
}

func newBrowser(t *testing.T, rt *routerProc) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, rt: rt, header: http.Header{}, client: &http.Client{
		Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends one request and returns the status, body and log line.
func (u *browser) do(step, method, path string, form url.Values) (int, string, string) {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u.rt.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range u.header {
		req.Header[k] = v
	}
	if u.host != "" {
		req.Host = u.host
	}
	id := newID(u.t)
	req.Header.Set("X-Request-Id", id)
	resp, err := u.client.Do(req)
	if err != nil {
		u.t.Fatalf("%s: %v", step, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	u.location = resp.Header.Get("Location")
	line := u.rt.logFor(id)
	record := fmt.Sprintf("%-34s %-4s %-28s %d  upstream=%s reason=%s", step, method, path, resp.StatusCode, field(line, "upstream"), field(line, "reason"))
	if from := field(line, "replayed_from"); from != "" {
		record += " replayed_status=" + field(line, "replayed_status")
	}
	u.steps = append(u.steps, record)
	return resp.StatusCode, string(b), line
}

// token reads a form token (re's first group) from a page.
func (u *browser) token(page string, re *regexp.Regexp) string {
	u.t.Helper()
	m := re.FindStringSubmatch(page)
	if m == nil {
		u.t.Fatalf("no form token in the page:\n%.500s", page)
	}
	return m[1]
}

// cookie returns the value of the named cookie the browser holds for the
// router.
func (u *browser) cookie(name string) string {
	base, _ := url.Parse(u.rt.URL)
	for _, c := range u.client.Jar.Cookies(base) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}
