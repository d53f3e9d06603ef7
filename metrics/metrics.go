// Package metrics exports the router's Prometheus metrics. Label values come
// from small fixed sets (no paths, ids or raw status codes), and the series
// a request touches are resolved once and cached, so observing a request is
// a few atomic adds.
package metrics

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/splitapp/router/health"
	"github.com/splitapp/router/replication"
	"github.com/splitapp/router/stats"
)

// Label values: the log line's vocabulary (stats), and "other" for what it
// does not know.
var (
	upstreamNames = stats.Upstreams
	reasonNames   = func() (names [len(stats.Reasons) + 1]string) {
		for i, r := range stats.Reasons {
			names[i] = string(r)
		}
		names[len(stats.Reasons)] = "other"
		return names
	}()
	methodNames = [...]string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "other"}
	classNames  = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}
)

func index(names []string, v string) int {
	for i, n := range names {
		if n == v {
			return i
		}
	}
	return len(names) - 1 // "other", or "none" for upstreams
}

// Metrics holds the router's collectors.
type Metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	pinsIssued prometheus.Counter
	pinKinds   *prometheus.CounterVec
	retries    prometheus.Counter
	released   prometheus.Counter
	replays    prometheus.Counter
	authFails  prometheus.Counter
	panics     prometheus.Counter
	checks     *prometheus.HistogramVec

	// byLabels caches requests' children: [upstream][reason][method][class].
	byLabels [len(upstreamNames)][len(reasonNames)][len(methodNames)][len(classNames)]atomic.Pointer[prometheus.Counter]
	// durationBy caches duration's children by upstream.
	durationBy [len(upstreamNames)]prometheus.Observer
	checksBy   map[*health.Upstream]prometheus.Observer
}

// Options configures New.
type Options struct {
	Upstreams []*health.Upstream
	// Inflight returns the requests the router is serving now.
	Inflight func() int64
	// Databases, when the database URLs are set, returns each database's
	// state; it adds their gauges and the replicas' lag gauges.
	Databases func() []replication.State
}

// New registers the router's metrics, and the Go and process collectors,
// on reg.
func New(reg prometheus.Registerer, o Options) *Metrics {
	m := newCollectors()
	reg.MustRegister(m.requests, m.duration, m.pinsIssued, m.pinKinds, m.retries, m.released, m.replays, m.authFails, m.panics, m.checks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if o.Inflight != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "router_inflight_requests",
			Help: "Requests being served now.",
		}, func() float64 { return float64(o.Inflight()) }))
	}
	for i, name := range upstreamNames {
		m.durationBy[i] = m.duration.WithLabelValues(name)
	}
	for _, u := range o.Upstreams {
		registerUpstream(reg, u)
		m.checksBy[u] = m.checks.WithLabelValues(u.Name)
		if u.Role == health.Replica && o.Databases != nil {
			registerLag(reg, u)
		}
	}
	if o.Databases != nil {
		registerDatabases(reg, o.Databases)
	}
	return m
}

// newCollectors makes the collectors a request or a check updates.
func newCollectors() *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "router_requests_total",
			Help: "Requests routed, by upstream role, routing reason, method and status class.",
		}, []string{"upstream", "reason", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "router_request_duration_seconds",
			Help:    "Time from receiving a request to the end of its response, upstream time included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"upstream"}),
		pinsIssued: counter("router_pins_issued_total", "Pins set on responses: clients sent to the primary for their next reads."),
		pinKinds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "router_pins_by_kind_total",
			Help: "Pins set on responses, by kind: wal (the write's WAL position) or time (PIN_TTL), and why a time pin.",
		}, []string{"kind", "reason"}),
		retries:   counter("router_retries_total", "Reads tried again on another upstream after a failed attempt."),
		released:  counter("router_pins_released_early_total", "Pinned reads served by a follower that had replayed the client's write, before the pin's TTL."),
		authFails: counter("router_admin_auth_failures_total", "Requests to /_router/ endpoints refused for a missing or wrong ADMIN_TOKEN."),
		panics:    counter("router_panics_total", "Requests whose handling panicked: each was logged with its stack and its connection closed; a bug to report."),
		replays:   counter("router_replays_total", "Reads a read-only app handed back, replayed on the primary: asked with X-Router-Replay, or failed with a 5xx under REPLAY_READ_ERRORS."),
		checks: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "router_health_check_duration_seconds",
			Help:    "Duration of active health checks.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"backend"}),
		checksBy: map[*health.Upstream]prometheus.Observer{},
	}
}

// registerUpstream registers an upstream's state, read when scraped.
func registerUpstream(reg prometheus.Registerer, u *health.Upstream) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "router_upstream_up",
			Help:        "1 while the upstream takes requests, 0 while checks or an ejection hold it out.",
			ConstLabels: prometheus.Labels{"backend": u.Name, "role": u.Role.String()},
		}, func() float64 { return one(u.Available()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "router_ejections_total",
			Help:        "Times the upstream was ejected after failed requests.",
			ConstLabels: prometheus.Labels{"backend": u.Name},
		}, func() float64 { return float64(u.Snapshot().Ejections) }),
	)
	for _, class := range health.Classes() {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "router_upstream_failures_total",
			Help:        "Failed attempts to reach the upstream, by failure class; class=client failures are the client's, not the upstream's.",
			ConstLabels: prometheus.Labels{"backend": u.Name, "class": class.String()},
		}, func() float64 { return float64(u.Failures(class)) }))
	}
}

// registerLag registers the lag of the follower behind a replica. An
// unknown lag is NaN, never 0: a follower whose lag cannot be measured is
// not one that is caught up.
func registerLag(reg prometheus.Registerer, u *health.Upstream) {
	backend := prometheus.Labels{"backend": u.Name}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "router_replica_lag_seconds",
			Help:        "How far the follower behind the replica is behind the primary, in time; NaN while unknown.",
			ConstLabels: backend,
		}, func() float64 {
			if lag, _, ok := u.Lag(); ok {
				return lag.Seconds()
			}
			return math.NaN()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "router_replica_lag_bytes",
			Help:        "WAL the follower behind the replica has yet to replay; NaN while unknown.",
			ConstLabels: backend,
		}, func() float64 {
			if _, b, ok := u.Lag(); ok {
				return float64(b)
			}
			return math.NaN()
		}),
	)
}

// registerDatabases registers whether each database is reachable.
func registerDatabases(reg prometheus.Registerer, databases func() []replication.State) {
	for i, s := range databases() {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "router_database_up",
			Help:        "1 while the router reaches the database (primary, or the follower behind the named replicas), 0 while it cannot.",
			ConstLabels: prometheus.Labels{"database": s.Database.Name},
		}, func() float64 { return one(databases()[i].Up) }))
	}
}

func one(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// AdminAuthFailed counts a refused admin request.
func (m *Metrics) AdminAuthFailed() { m.authFails.Inc() }

// Panicked counts a request whose handling panicked.
func (m *Metrics) Panicked() { m.panics.Inc() }

// Observe records a finished request.
func (m *Metrics) Observe(s stats.Sample) {
	u := index(upstreamNames[:], s.Upstream)
	r := index(reasonNames[:], string(s.Reason))
	meth := index(methodNames[:], s.Method)
	class := min(max(s.Status/100-1, 0), len(classNames)-1)
	slot := &m.byLabels[u][r][meth][class]
	c := slot.Load()
	if c == nil {
		counter := m.requests.WithLabelValues(upstreamNames[u], reasonNames[r], methodNames[meth], classNames[class])
		c = &counter
		slot.Store(c)
	}
	(*c).Inc()
	m.durationBy[u].Observe(s.Service.Seconds())
	if s.PinIssued {
		kind, reason := "time", s.PinReason
		if s.PinReason == stats.PinWAL {
			kind = "wal"
		}
		m.pinsIssued.Inc()
		m.pinKinds.WithLabelValues(kind, reason).Inc()
	}
	if s.Retries > 0 {
		m.retries.Add(float64(s.Retries))
	}
	switch s.Reason {
	case stats.ReasonCaughtUp:
		m.released.Inc()
	case stats.ReasonReplay:
		m.replays.Inc()
	}
}

// ObserveCheck records an active health check's duration.
func (m *Metrics) ObserveCheck(u *health.Upstream, d time.Duration) {
	if o := m.checksBy[u]; o != nil {
		o.Observe(d.Seconds())
	}
}
