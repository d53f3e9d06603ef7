package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// UserAgent is sent with every health check, so apps can leave the checks
// out of their own logs and metrics.
const UserAgent = "split-app-router-health-check/1"

// CheckerOptions configures a Checker.
type CheckerOptions struct {
	Upstreams []*Upstream
	// Path is requested on every upstream. If empty, "/".
	Path string
	// Interval is the time between rounds, jittered by ±10% so many router
	// processes do not check in lockstep. If zero, 5s.
	Interval time.Duration
	// Timeout bounds one check. If zero, 2s.
	Timeout time.Duration
	// OnEvent, if set, is called once per state change.
	OnEvent func(Event)
	// OnCheck, if set, is told every check's duration.
	OnCheck func(u *Upstream, took time.Duration)
	// Transport, if set, sends the checks; tests and TLS settings use it.
	Transport http.RoundTripper
}

// Checker actively checks upstreams: each round sends GET Path to every
// upstream at once; a 2xx or 3xx answer within Timeout passes.
type Checker struct {
	o      CheckerOptions
	client *http.Client
}

// NewChecker returns a Checker; Run starts it.
func NewChecker(o CheckerOptions) *Checker {
	if o.Path == "" {
		o.Path = "/"
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Transport == nil {
		o.Transport = NewTransport(o.Timeout, o.Interval, false)
	}
	return &Checker{o: o, client: &http.Client{
		Transport: o.Transport,
		// A redirect is an answer: 3xx passes without following it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// NewTransport returns the transport checks use: its own small pool, so a
// proxy pool full of stuck connections cannot delay a check.
// insecureSkipVerify turns off certificate checks, as
// UPSTREAM_TLS_INSECURE_SKIP_VERIFY does for requests.
func NewTransport(timeout, interval time.Duration, insecureSkipVerify bool) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
		TLSHandshakeTimeout: timeout,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: insecureSkipVerify, ClientSessionCache: tls.NewLRUClientSessionCache(64)},
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     2 * interval,
	}
}

// Run checks every upstream at once, then again every jittered Interval,
// until ctx is done. It returns when the last check has finished.
func (c *Checker) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		c.CheckOnce(ctx)
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(c.o.Interval))
		timer.Reset(c.o.Interval + jitter)
	}
}

// CheckOnce checks every upstream in parallel and returns when all are done.
func (c *Checker) CheckOnce(ctx context.Context) {
	var wg sync.WaitGroup
	for _, u := range c.o.Upstreams {
		wg.Go(func() {
			start := time.Now()
			status, err := c.check(ctx, u)
			if ctx.Err() != nil {
				return // shutting down: not the upstream's fault
			}
			took := time.Since(start)
			if c.o.OnCheck != nil {
				c.o.OnCheck(u, took)
			}
			cause := ""
			if err != nil {
				cause = err.Error()
			}
			u.lastCheckStatus.Store(int32(status))
			if ev, changed := u.RecordCheck(err == nil, took, cause); changed && c.o.OnEvent != nil {
				// An answer that failed the check says why at once: a 403
				// is the app's host check (Rails' config.hosts) refusing
				// the router, a 404 a wrong HEALTH_CHECK_PATH.
				if status != 0 {
					ev.CheckStatus, ev.CheckPath = status, c.o.Path
				}
				c.o.OnEvent(ev)
			}
		})
	}
	wg.Wait()
}

// check sends one check and returns the answer's status (0 without one)
// and, when the check failed, why.
func (c *Checker) check(ctx context.Context, u *Upstream) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	target := u.URL.JoinPath(c.o.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", UserAgent)
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return 0, fmt.Errorf("health check: no answer within %s", c.o.Timeout)
		}
		return 0, fmt.Errorf("health check: %s", describe(err))
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		// Not drained: a 101's body is the switched connection, which
		// need never end.
		resp.Body.Close()
		return resp.StatusCode, fmt.Errorf("health check: status %d", resp.StatusCode)
	}
	// Drain a little so the connection can be reused, no more.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// describe shortens a client error to its cause, without the URL that
// http.Client puts in front of it.
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}
