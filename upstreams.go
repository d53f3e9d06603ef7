package main

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/splitapp/router/config"
	"github.com/splitapp/router/health"
	"github.com/splitapp/router/replication"
)

// upstreams are the primary and the replicas, sharing one health policy.
type upstreams struct {
	primary  *health.Upstream
	replicas []*health.Upstream
	all      []*health.Upstream // the primary first
	logger   *slog.Logger
}

func newUpstreams(cfg config.Config, logger *slog.Logger) *upstreams {
	policy := &health.Policy{
		Fall:               cfg.HealthFall,
		Rise:               cfg.HealthRise,
		EjectFor:           cfg.EjectDuration,
		EjectAfterFailures: cfg.EjectAfterFailures,
		EjectAfter5xx:      cfg.EjectAfter5xx,
		MaxLag:             cfg.MaxReplicaLag,
	}
	u := &upstreams{logger: logger}
	u.primary = health.NewUpstream(cfg.PrimaryURL, health.Primary, 1, policy)
	u.replicas = make([]*health.Upstream, len(cfg.Replicas))
	for i, r := range cfg.Replicas {
		u.replicas[i] = health.NewUpstream(r.URL, health.Replica, r.Weight, policy)
	}
	u.all = append([]*health.Upstream{u.primary}, u.replicas...)
	// Names label logs and metrics; two upstreams on one host (an app listed
	// twice, or the primary and a replica behind one address) get "#2", "#3".
	seen := map[string]int{}
	for _, up := range u.all {
		if seen[up.Name]++; seen[up.Name] > 1 {
			up.Name += "#" + strconv.Itoa(seen[up.Name])
		}
	}
	return u
}

// logEvent logs a change of an upstream's state: warnings when it leaves
// rotation, information when it comes back.
func (u *upstreams) logEvent(ev health.Event) {
	level, msg := slog.LevelWarn, "upstream "+string(ev.Kind)
	if ev.Kind.Back() {
		level = slog.LevelInfo
	}
	attrs := []any{"backend", ev.Upstream.Name, "role", ev.Upstream.Role.String(), "cause", ev.Cause}
	if ev.CheckStatus != 0 {
		attrs = append(attrs, "check_status", ev.CheckStatus, "path", ev.CheckPath)
	}
	if ev.For > 0 {
		attrs = append(attrs, "for", ev.For.String())
	}
	u.logger.Log(context.Background(), level, msg, attrs...)
}

// logDatabase logs a database becoming unreachable, with the variable to
// look at and why, or reachable again. Pins fall back to time pins while
// the primary's is unreachable, and a follower's pins are not released
// while its own is, so either is worth a warning.
func (u *upstreams) logDatabase(s replication.State) {
	if s.Up {
		u.logger.Info("database reachable", "database", s.Database.Name, "variable", s.Database.Variable)
		return
	}
	u.logger.Warn("database unreachable", "database", s.Database.Name, "variable", s.Database.Variable,
		"cause", string(s.Cause), "err", s.Err)
}
