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

var (
	upstreamNames = [...]string{"primary", "replica", "none"}
	reasonNames   = [...]string{"read", "write", "pinned", "path_rule", "upgrade", "no_replica", "primary_share", "primary_down", "all_down", "caught_up", "replay", "learned", "other"}
	methodNames   = [...]string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "other"}
	classNames    = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}
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
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "router_requests_total",
			Help: "Requests routed, by upstream role, routing reason, method and status class.",
		}, []string{"upstream", "reason", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "router_request_duration_seconds",
			Help:    "Time from receiving a request to the end of its response, upstream time included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"upstream"}),
		pinsIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "router_pins_issued_total",
			Help: "Pins set on responses: clients sent to the primary for their next reads.",
		}),
		pinKinds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "router_pins_by_kind_total",
			Help: "Pins set on responses, by kind: wal (the write's WAL position) or time (PIN_TTL), and why a time pin.",
		}, []string{"kind", "reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "router_retries_total",
			Help: "Reads tried again on another upstream after a failed attempt.",
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "router_pins_released_early_total",
			Help: "Pinned reads served by a follower that had replayed the client's write, before the pin's TTL.",
		}),
		authFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "router_admin_auth_failures_total",
			Help: "Requests to /_router/ endpoints refused for a missing or wrong ADMIN_TOKEN.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "router_panics_total",
			Help: "Requests whose handling panicked: each was logged with its stack and its connection closed; a bug to report.",
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "router_replays_total",
			Help: "Reads a read-only app handed back with X-Router-Replay, replayed on the primary.",
		}),
		checks: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "router_health_check_duration_seconds",
			Help:    "Duration of active health checks.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"backend"}),
		checksBy: map[*health.Upstream]prometheus.Observer{},
	}
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
		labels := prometheus.Labels{"backend": u.Name, "role": u.Role.String()}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "router_upstream_up",
				Help:        "1 while the upstream takes requests, 0 while checks or an ejection hold it out.",
				ConstLabels: labels,
			}, func() float64 {
				if u.Available() {
					return 1
				}
				return 0
			}),
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
		m.checksBy[u] = m.checks.WithLabelValues(u.Name)
		if u.Role == health.Replica && o.Databases != nil {
			backend := prometheus.Labels{"backend": u.Name}
			// An unknown lag is NaN, never 0: a follower whose lag cannot
			// be measured is not one that is caught up.
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
	}
	if o.Databases != nil {
		for i, s := range o.Databases() {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "router_database_up",
				Help:        "1 while the router reaches the database (primary, or the follower behind the named replicas), 0 while it cannot.",
				ConstLabels: prometheus.Labels{"database": s.Database.Name},
			}, func() float64 {
				if o.Databases()[i].Up {
					return 1
				}
				return 0
			}))
		}
	}
	return m
}

// AdminAuthFailed counts a refused admin request.
func (m *Metrics) AdminAuthFailed() { m.authFails.Inc() }

// Panicked counts a request whose handling panicked.
func (m *Metrics) Panicked() { m.panics.Inc() }

// Observe records a finished request.
func (m *Metrics) Observe(s stats.Sample) {
	u := index(upstreamNames[:], s.Upstream)
	r := index(reasonNames[:], s.Reason)
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
	case "caught_up":
		m.released.Inc()
	case "replay":
		m.replays.Inc()
	}
}

// ObserveCheck records an active health check's duration.
func (m *Metrics) ObserveCheck(u *health.Upstream, d time.Duration) {
	if o := m.checksBy[u]; o != nil {
		o.Observe(d.Seconds())
	}
}
