package test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/splitapp/router/replication"
)

// TestLSNCost reports what the per-pin WAL position query costs against a
// real primary on loopback (the figure README quotes).
func TestLSNCost(t *testing.T) {
	t.Parallel()
	pg := startPostgres(t, 0)
	p, err := replication.NewPrimary(pg.PrimaryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	for range 50 { // warm the pool
		p.CurrentLSN(ctx)
	}
	const n = 2000
	durations := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		if _, err := p.CurrentLSN(ctx); err != nil {
			t.Fatal(err)
		}
		durations[i] = time.Since(start)
	}
	var total time.Duration
	for _, d := range durations {
		total += d
	}
	slices.Sort(durations)
	t.Logf("pg_current_wal_lsn() per pin: mean %s, p50 %s, p99 %s over %d calls on loopback",
		(total / n).Round(time.Microsecond), durations[n/2].Round(time.Microsecond), durations[n*99/100].Round(time.Microsecond), n)
}
