// Command fixedrate sends GETs at a fixed rate, whatever the responses do,
// and reports latency percentiles measured from when each request was due
// (so a stall counts against every request it delays, unlike a closed-loop
// load generator). Loopback targets only.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:18181/", "target URL (loopback)")
	rate := flag.Int("rate", 2000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "most requests in flight")
	flag.Parse()
	if !strings.HasPrefix(strings.Replace(*url, "https://", "http://", 1), "http://127.") && !strings.HasPrefix(*url, "http://localhost") {
		fmt.Fprintln(os.Stderr, "fixedrate: -url must be a loopback address")
		os.Exit(2)
	}
	// An https:// target is the bench's own self-signed upstream.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	n := int(duration.Seconds() * float64(*rate))
	interval := time.Second / time.Duration(*rate)
	latencies := make([]time.Duration, n)
	errors := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, *conns)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(due))
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			resp, err := client.Get(*url)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			latencies[i] = time.Since(due)
			if err != nil {
				mu.Lock()
				errors++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[min(int(p*float64(n)), n-1)].Microseconds()) / 1000
	}
	fmt.Printf("rate=%d requests=%d errors=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n",
		*rate, n, errors, q(0.50), q(0.90), q(0.99), q(0.999), q(1))
}
