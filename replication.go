package main

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/splitapp/router/config"
	"github.com/splitapp/router/replication"
)

// startReplication starts tracking the databases' replication positions,
// when PRIMARY_DATABASE_URL is set: one connection to the primary database
// and one to each distinct follower, polled into the replicas until ctx is
// done. It returns the tracker (nil without the database URLs); nothing is
// connected yet, so a database that cannot be reached never stops the
// router.
func startReplication(ctx context.Context, background *sync.WaitGroup, cfg config.Config, ups *upstreams) (*replication.Tracker, error) {
	if cfg.PrimaryDatabaseURL == "" {
		return nil, nil
	}
	// One poll per distinct follower; one URL may serve every replica.
	var followers []replication.Database
	followerOf := make([]int, len(ups.replicas))
	seen := map[string]int{}
	for i, r := range ups.replicas {
		u := cfg.FollowerURL(i)
		f, ok := seen[u]
		if !ok {
			f = len(followers)
			seen[u] = f
			followers = append(followers, replication.Database{Variable: cfg.FollowerVariable(i), URL: u})
		}
		// A follower is named for the replicas it serves.
		if followers[f].Name != "" {
			followers[f].Name += ","
		}
		followers[f].Name += r.Name
		followerOf[i] = f
	}
	tracker, err := replication.New(replication.Options{
		Primary:   replication.Database{Name: "primary", Variable: cfg.PrimaryDatabaseVar, URL: cfg.PrimaryDatabaseURL},
		Followers: followers,
		AppName:   applicationName(cfg.Dyno),
		Interval:  cfg.LagPollInterval,
		History:   max(5*time.Minute, 2*cfg.MaxReplicaLag),
		OnPosition: func(follower int, pos replication.Position) {
			for i, f := range followerOf {
				if f != follower {
					continue
				}
				if ev, changed := ups.replicas[i].RecordReplication(pos.Replayed, pos.Lag, pos.LagKnown, pos.LagBytes, pos.Err); changed {
					ups.logEvent(ev)
				}
			}
		},
		OnState: ups.logDatabase,
	})
	if err != nil {
		return nil, err
	}
	background.Go(func() { tracker.Run(ctx) })
	return tracker, nil
}

// applicationName is what the router's database connections are called in
// pg_stat_activity (and heroku pg:ps): the router, and which dyno.
func applicationName(dyno string) string {
	name := "split-app-router"
	if dyno != "" {
		name += " " + dyno
	}
	// Postgres keeps 63 bytes of it.
	if len(name) > 63 {
		name = name[:63]
	}
	return strings.ToValidUTF8(name, "")
}

// wakeFor returns what the router calls when a pinned read waits for a
// follower: the tracker polls faster. Nil without a tracker.
func wakeFor(t *replication.Tracker) func() {
	if t == nil {
		return nil
	}
	return t.Wake
}
