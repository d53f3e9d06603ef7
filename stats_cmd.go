package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/splitapp/router/stats"
)

// runStats reads routing log lines on stdin and prints a summary of each
// interval, and of everything read once the input ends.
func runStats(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("stats", flag.ContinueOnError)
	flags.SetOutput(stderr)
	every := flags.Duration("every", 5*time.Second, "how often to print a summary")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if *every <= 0 {
		fmt.Fprintln(stderr, "router stats: -every must be greater than zero, e.g. -every 5s")
		return 2
	}

	type parsed struct {
		s  stats.Sample
		at time.Time
	}
	lines := make(chan parsed, 256)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if s, at, ok := stats.ParseLine(sc.Text()); ok {
				lines <- parsed{s, at}
			}
		}
	}()

	var total, interval *stats.Counter = new(stats.Counter), new(stats.Counter)
	var routes stats.Routes
	started, intervalStart := time.Now(), time.Now()
	var first, last time.Time
	ticker := time.NewTicker(*every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-ticker.C:
			fmt.Fprintf(stdout, "last %s: %s\n", every.String(), stats.Format(stats.Summarize(time.Since(intervalStart), interval)))
			interval, intervalStart = new(stats.Counter), time.Now()
		case p, ok := <-lines:
			if !ok {
				// Saved logs carry timestamps: rate over the span they cover.
				span := time.Since(started)
				if !first.IsZero() && last.After(first) {
					span = last.Sub(first)
				}
				fmt.Fprintf(stdout, "total: %s\n", stats.Format(stats.Summarize(span, total)))
				// The reads that wrote: fix them, or list them in
				// PRIMARY_PATHS.
				fmt.Fprint(stdout, routes.Format())
				return 0
			}
			total.Add(p.s)
			interval.Add(p.s)
			routes.Add(p.s)
			if !p.at.IsZero() {
				if first.IsZero() {
					first = p.at
				}
				last = p.at
			}
		}
	}
}
