package test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/splitapp/router/replication"
	"github.com/splitapp/router/test/pgcluster"
)

// BenchmarkPrimaryPosition measures what pins cost the primary database
// and the writes: N writers, each taking about a millisecond per write (the
// app's time) and then asking for the WAL position for its pin, as the
// router does after each write's response head. It reports the position
// queries the primary ran per write (pg_stat_statements) and the time each
// write waited for its position, p50 and p99.
//
//	go test -run '^$' -bench PrimaryPosition ./test
func BenchmarkPrimaryPosition(b *testing.B) {
	if !pgcluster.Installed() {
		b.Skip("PostgreSQL not installed")
	}
	c, err := pgcluster.Start(pgcluster.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	for _, writers := range []int{1, 16, 256} {
		b.Run("writers="+strconv.Itoa(writers), func(b *testing.B) {
			tracker, err := replication.New(replication.Options{
				Primary:   replication.Database{Name: "primary", Variable: "PRIMARY_DATABASE_URL", URL: c.PrimaryURL},
				Followers: []replication.Database{{Name: "follower", Variable: "REPLICA_DATABASE_URLS", URL: c.StandbyURL}},
				AppName:   "split-app-router bench",
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { tracker.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			tracker.PrimaryPosition(ctx, false) // connected
			if err := c.Exec(c.PrimaryURL, "SELECT pg_stat_statements_reset()"); err != nil {
				b.Fatal(err)
			}

			var mu sync.Mutex
			var waits []time.Duration
			var next sync.WaitGroup
			perWriter := max(b.N/writers, 1)
			b.ResetTimer()
			for range writers {
				next.Go(func() {
					mine := make([]time.Duration, 0, perWriter)
					for range perWriter {
						time.Sleep(time.Millisecond) // the app writing
						start := time.Now()
						if _, err := tracker.PrimaryPosition(ctx, writers > 1); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(start))
					}
					mu.Lock()
					waits = append(waits, mine...)
					mu.Unlock()
				})
			}
			next.Wait()
			b.StopTimer()
			var queries int64
			if err := queryRow(c.PrimaryURL, `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE '%pg_current_wal_insert_lsn%'`, &queries); err != nil {
				b.Fatal(err)
			}
			slices.Sort(waits)
			b.ReportMetric(float64(queries)/float64(len(waits)), "queries/write")
			b.ReportMetric(float64(waits[len(waits)/2].Microseconds()), "p50-µs/write")
			b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds()), "p99-µs/write")
		})
	}
}
