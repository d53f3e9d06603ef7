package router

import (
	"github.com/splitapp/router/stats"
	"net/url"
	"testing"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
)

// TestRetryKeepsCausalReadsCausal checks where a failed read goes next: a
// read released to a follower that has the client's write must never be
// retried on a follower that does not.
func TestRetryKeepsCausalReadsCausal(t *testing.T) {
	t.Parallel()
	up := func(host string, role health.Role) *health.Upstream {
		return health.NewUpstream(&url.URL{Scheme: "http", Host: host}, role, 1, nil)
	}
	primary, a, b := up("primary", health.Primary), up("a", health.Replica), up("b", health.Replica)
	pinner, _ := cookie.New(cookie.Options{Name: "router_pin", Keys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}})
	rt := New(Options{Primary: primary, Replicas: []*health.Upstream{a, b}, Pinner: pinner})
	backendOf := func(u *health.Upstream) *backend {
		for _, m := range rt.replicas.members {
			if m.up == u {
				return m
			}
		}
		return rt.primary
	}
	// nameOf keeps a wrong nil pick a test failure, not a panic.
	nameOf := func(b *backend) string {
		if b == nil {
			return "none"
		}
		return b.up.Name
	}
	retry := func(ex *exchange) *backend {
		b, _ := rt.retryTarget(ex)
		return b
	}
	get := "GET /items HTTP/1.1\r\nHost: x\r\n\r\n"
	a.RecordReplication(500, 0, true, 0, nil)
	b.RecordReplication(100, 0, true, 0, nil)

	ex := testExchange(t, rt, get)
	ex.pinLSN, ex.backend, ex.decision = 400, backendOf(a), Decision{Role: health.Replica, Reason: stats.ReasonCaughtUp}
	if got := retry(ex); got != rt.primary {
		t.Errorf("caught-up read failed on a: retried on %s, want the primary (b has not replayed the write)", nameOf(got))
	}
	b.RecordReplication(450, 0, true, 0, nil)
	if got := retry(ex); got != backendOf(b) {
		t.Errorf("caught-up read failed on a: retried on %s, want b, which has the write", nameOf(got))
	}

	plain := testExchange(t, rt, get)
	plain.backend, plain.decision = backendOf(a), Decision{Role: health.Replica, Reason: stats.ReasonRead}
	if got := retry(plain); got != backendOf(b) {
		t.Errorf("plain read failed on a: retried on %s, want b", nameOf(got))
	}
	plain.retries = 1
	if got := retry(plain); got != rt.primary {
		t.Errorf("second failure: retried on %s, want the primary", nameOf(got))
	}
	plain.retries = maxRetries
	if got := retry(plain); got != nil {
		t.Errorf("after %d retries: retried on %s, want none", maxRetries, nameOf(got))
	}

	write := testExchange(t, rt, "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	write.backend, write.decision = rt.primary, Decision{Role: health.Primary, Reason: stats.ReasonWrite}
	if got := retry(write); got != nil {
		t.Errorf("a write was retried on %s", nameOf(got))
	}
}
