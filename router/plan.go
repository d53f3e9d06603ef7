package router

import (
	"math/rand/v2"

	"github.com/splitapp/router/cookie"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/internal/view"
	"github.com/splitapp/router/stats"
)

// plan decides where the request goes first, or the answer when nowhere
// can take it. It is the one place a request's route is chosen; after it,
// only the failure policy (failover.go) changes it.
func (rt *Router) plan(ex *exchange) (*backend, verdict) {
	pin, pinned := rt.readPin(ex)
	ex.pinned, ex.pinLSN = pinned, pin.LSN
	path := ex.path
	if len(rt.rules.PrimaryPaths)+len(rt.rules.ReadPaths) > 0 {
		// Apps may route the raw target otherwise than fasthttp cleaned
		// it: a parameter-stripped or escaped-slash view of it, and of the
		// cleaned path (an escaped ';' is a literal one there).
		ex.route = appRoute(rawPath(ex.Ctx), ex.route)
		ex.routeCleaned = appRoute(ex.path, ex.routeCleaned)
		path = rt.rules.routingPath(ex.method, ex.path, view.String(ex.route), view.String(ex.routeCleaned))
	}
	in := Input{
		Method:       ex.method,
		Path:         path,
		Upgrade:      ex.Upgrading,
		Pinned:       ex.pinned,
		PrimaryUp:    rt.primary.up.Available(),
		PrimaryShare: rt.primaryReadPercent > 0 && rand.IntN(100) < rt.primaryReadPercent,
	}
	c := rt.candidates(ex, path, pin)
	in.CaughtUp, in.Learned = c.caughtUp != nil, c.learned != nil
	in.ReplicaUp = c.replica != nil || c.caughtUp != nil
	ex.decision = rt.rules.Decide(in)
	if ex.decision.Reason == stats.ReasonLearned {
		c.learned.served.Add(1)
	}

	var b *backend
	switch {
	case ex.decision.Refuse:
		if ex.decision.Reason == stats.ReasonPrimaryDown {
			return nil, verdictNoPrimary
		}
		return nil, verdictAllDown
	case ex.decision.Reason == stats.ReasonCaughtUp:
		b = c.caughtUp
	case ex.decision.Role == health.Replica:
		if b = c.replica; b == nil {
			b = c.caughtUp
		}
	default:
		b = rt.primary
	}
	if ex.decision.Reason == stats.ReasonNoReplica {
		if v, ok := rt.admitFallback(ex); !ok {
			return nil, v
		}
	}
	return b, verdict{}
}

// readPin returns the request's pin: from its cookies, or from its
// X-Router-Pin-Token header, for clients that keep no cookies.
func (rt *Router) readPin(ex *exchange) (cookie.Pin, bool) {
	if pin, ok := rt.pinFromCookies(ex); ok {
		return pin, true
	}
	if token := ex.Head.PinToken; len(token) > 0 {
		return rt.pinner.Verify(view.String(token))
	}
	return cookie.Pin{}, false
}

// pinFromCookies returns the pin in the request's cookies. Every cookie of
// the name is tried: a junk one placed first (a sibling subdomain's, or a
// stale path's) must not hide a valid pin behind it. A request without the
// cookie costs no allocation. A request that carries the cookie, valid or
// not, has it hidden from the app.
func (rt *Router) pinFromCookies(ex *exchange) (cookie.Pin, bool) {
	name := rt.pinner.Name()
	for k, v := range ex.Ctx.Request.Header.Cookies() {
		if view.String(k) != name {
			continue
		}
		ex.HiddenCookie = name
		if pin, ok := rt.pinner.Verify(view.String(v)); ok {
			return pin, true
		}
	}
	return cookie.Pin{}, false
}
