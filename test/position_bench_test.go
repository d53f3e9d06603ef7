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
			b.ResetTimer()
			queries, waits := positionWriters(b, c, writers, max(b.N/writers, 1))
			b.StopTimer()
			b.ReportMetric(float64(queries)/float64(len(waits)), "queries/write")
			b.ReportMetric(float64(waits[len(waits)/2].Microseconds()), "p50-µs/write")
			b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds()), "p99-µs/write")
		})
	}
}

// TestPositionReadsCoalesce is the benchmark's 16 writers as a test: the
// writes share the primary's position reads, at most one read for three
// writes. TestWALReadsCoalesce sees the same through the router, where how
// close together the writes arrive also depends on the clients and apps.
func TestPositionReadsCoalesce(t *testing.T) {
	t.Parallel()
	pg := startPostgres(t, 0)
	queries, waits := positionWriters(t, pg.Cluster, 16, 25)
	t.Logf("16 writers: %d writes, %d position queries (%.2f per write)", len(waits), queries, float64(queries)/float64(len(waits)))
	if float64(queries) > float64(len(waits))/3 {
		t.Errorf("%d position queries for %d writes, want at most a third", queries, len(waits))
	}
}

// positionWriters runs writers clients of a tracker on c, each making
// perWriter writes: a millisecond of the app's time, then a request for
// the position. It returns the position queries the primary ran and how
// long each write waited for its position, sorted.
func positionWriters(tb testing.TB, c *pgcluster.Cluster, writers, perWriter int) (int64, []time.Duration) {
	tb.Helper()
	tracker, err := replication.New(replication.Options{
		Primary:   replication.Database{Name: "primary", Variable: "PRIMARY_DATABASE_URL", URL: c.PrimaryURL},
		Followers: []replication.Database{{Name: "follower", Variable: "REPLICA_DATABASE_URLS", URL: c.StandbyURL}},
		AppName:   "split-app-router bench",
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tracker.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	tracker.PrimaryPosition(ctx, false) // connected
	if err := c.Exec(c.PrimaryURL, "SELECT pg_stat_statements_reset()"); err != nil {
		tb.Fatal(err)
	}

	var mu sync.Mutex
	var waits []time.Duration
	var all sync.WaitGroup
	for range writers {
		all.Go(func() {
			mine := make([]time.Duration, 0, perWriter)
			for range perWriter {
				time.Sleep(time.Millisecond) // the app writing
				start := time.Now()
				if _, err := tracker.PrimaryPosition(ctx, writers > 1); err != nil {
					tb.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			waits = append(waits, mine...)
			mu.Unlock()
		})
	}
	all.Wait()
	var queries int64
	if err := queryRow(c.PrimaryURL, `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE '%pg_current_wal_insert_lsn%'`, &queries); err != nil {
		tb.Fatal(err)
	}
	if len(waits) == 0 {
		tb.Fatal("no write got a position")
	}
	slices.Sort(waits)
	return queries, waits
}
