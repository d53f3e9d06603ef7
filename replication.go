package main

import (
	"context"
	"sync"
	"time"

	"github.com/splitapp/router/config"
	"github.com/splitapp/router/replication"
)

// startReplication connects to the primary database, when
// PRIMARY_DATABASE_URL is set, and polls each follower's position into its
// replicas until ctx is done. It returns the primary's WAL position query
// for pins (nil without a database) and a function that closes the pool.
func startReplication(ctx context.Context, background *sync.WaitGroup, cfg config.Config, ups *upstreams) (lsn func(context.Context) (uint64, error), closeDB func(), err error) {
	if cfg.PrimaryDatabaseURL == "" {
		return nil, func() {}, nil
	}
	primaryDB, err := replication.NewPrimary(cfg.PrimaryDatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	// One poll per distinct follower; one URL may serve every replica.
	var followerURLs []string
	followerOf := make([]int, len(ups.replicas))
	seen := map[string]int{}
	for i := range ups.replicas {
		u := cfg.FollowerURL(i)
		if _, ok := seen[u]; !ok {
			seen[u] = len(followerURLs)
			followerURLs = append(followerURLs, u)
		}
		followerOf[i] = seen[u]
	}
	poller := replication.NewPoller(replication.PollerOptions{
		PrimaryURL:   cfg.PrimaryDatabaseURL,
		FollowerURLs: followerURLs,
		Interval:     cfg.LagPollInterval,
		History:      max(5*time.Minute, 2*cfg.MaxReplicaLag),
		OnPosition: func(follower int, pos replication.Position) {
			for i, f := range followerOf {
				if f != follower {
					continue
				}
				if ev, changed := ups.replicas[i].RecordReplication(pos.Replayed, pos.Lag, pos.LagBytes, pos.Err); changed {
					ups.logEvent(ev)
				}
			}
		},
	})
	background.Go(func() { poller.Run(ctx) })
	return primaryDB.CurrentLSN, primaryDB.Close, nil
}
