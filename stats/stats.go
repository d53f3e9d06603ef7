// Package stats counts routed requests for people: the status page's last
// minute and the "router stats" log reader. Counting is lock-free, so the
// router can count every request on its hot path.
package stats

import (
	"math"
	"sync/atomic"
	"time"
)

// Sample is one finished request.
type Sample struct {
	Method string
	// Upstream is UpstreamPrimary, UpstreamReplica or UpstreamNone.
	Upstream string
	Reason   Reason
	// Path is the request's path and query, as logged; only the log
	// reader fills it in.
	Path string
	// Read is set for GET, HEAD and OPTIONS.
	Read      bool
	Pinned    bool
	PinIssued bool
	// PinReason says what an issued pin carries: PinWAL, or why it is
	// only a time pin.
	PinReason string
	Status    int
	// Code is the router's error code, empty when the router did not fail
	// the request.
	Code    string
	Retries int
	Service time.Duration
	// End is when the request finished, which decides the second a
	// Window counts it in; zero means now.
	End time.Time
}

// Why a pin is what it is: it carries the write's WAL position, or it is
// a time pin because the database URLs are not set, the primary database
// is known to be unreachable, its position did not come within the
// budget, the query failed, or the app asked for a duration.
const (
	PinWAL          = "wal_position"
	PinNoDatabase   = "no_database"
	PinDatabaseDown = "database_down"
	PinSlow         = "slow"
	PinFailed       = "query_failed"
	PinRequested    = "app_requested"
)

// Latency buckets grow by 2^(1/4) (19%) from 0.1 ms, reaching beyond
// 10 minutes: percentiles read from them are within 10% of the truth.
const (
	nBuckets   = 96
	bucketBase = 100 * time.Microsecond
)

var bucketGrowth = math.Pow(2, 0.25)

func bucketOf(d time.Duration) int {
	if d <= bucketBase {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/float64(bucketBase)) / math.Log(bucketGrowth)))
	return min(i, nBuckets-1)
}

// bucketValue is the geometric middle of bucket i.
func bucketValue(i int) time.Duration {
	if i == 0 {
		return bucketBase
	}
	return time.Duration(float64(bucketBase) * math.Pow(bucketGrowth, float64(i)-0.5))
}

const (
	rolePrimary = iota
	roleReplica
	nRoles
)

// Counter accumulates samples. Its zero value is ready; Add is safe for
// concurrent use.
type Counter struct {
	requests, reads, replicaReads atomic.Int64
	pinned, pinsIssued            atomic.Int64
	fallbacks, retries            atomic.Int64
	status5xx                     atomic.Int64
	errors                        [len(Codes)]atomic.Int64
	latency                       [nRoles][nBuckets]atomic.Int64
}

// Add counts one sample.
func (c *Counter) Add(s Sample) {
	c.requests.Add(1)
	if s.Read {
		c.reads.Add(1)
		if s.Upstream == UpstreamReplica {
			c.replicaReads.Add(1)
		}
	}
	if s.Pinned {
		c.pinned.Add(1)
	}
	if s.PinIssued {
		c.pinsIssued.Add(1)
	}
	if s.Reason.fallback() {
		c.fallbacks.Add(1)
	}
	if s.Retries > 0 {
		c.retries.Add(int64(s.Retries))
	}
	if s.Status >= 500 {
		c.status5xx.Add(1)
	}
	if s.Code != "" {
		for i, code := range Codes {
			if code == s.Code {
				c.errors[i].Add(1)
			}
		}
	}
	switch s.Upstream {
	case UpstreamPrimary:
		c.latency[rolePrimary][bucketOf(s.Service)].Add(1)
	case UpstreamReplica:
		c.latency[roleReplica][bucketOf(s.Service)].Add(1)
	}
}

func (c *Counter) reset() {
	c.requests.Store(0)
	c.reads.Store(0)
	c.replicaReads.Store(0)
	c.pinned.Store(0)
	c.pinsIssued.Store(0)
	c.fallbacks.Store(0)
	c.retries.Store(0)
	c.status5xx.Store(0)
	for i := range c.errors {
		c.errors[i].Store(0)
	}
	for r := range c.latency {
		for i := range c.latency[r] {
			c.latency[r][i].Store(0)
		}
	}
}

// Summary is what a span of samples adds up to.
type Summary struct {
	Seconds      float64              `json:"seconds"`
	Requests     int64                `json:"requests"`
	RequestsPerS float64              `json:"requests_per_second"`
	Reads        int64                `json:"reads"`
	ReplicaReads int64                `json:"replica_reads"`
	ReplicaShare float64              `json:"replica_read_share"` // of reads
	Pinned       int64                `json:"pinned"`
	PinnedShare  float64              `json:"pinned_share"` // of requests
	PinsIssued   int64                `json:"pins_issued"`
	Fallbacks    int64                `json:"fallbacks"`
	Retries      int64                `json:"retries"`
	Status5xx    int64                `json:"status_5xx"`
	Errors       map[string]int64     `json:"errors"`
	Latency      map[string]Quantiles `json:"latency"`
}

// Quantiles are service times of one upstream role.
type Quantiles struct {
	Count int64         `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
}

// Summarize adds counters up over a span of the given length.
func Summarize(span time.Duration, counters ...*Counter) Summary {
	s := Summary{Seconds: span.Seconds(), Errors: map[string]int64{}, Latency: map[string]Quantiles{}}
	var hist [nRoles][nBuckets]int64
	for _, c := range counters {
		s.Requests += c.requests.Load()
		s.Reads += c.reads.Load()
		s.ReplicaReads += c.replicaReads.Load()
		s.Pinned += c.pinned.Load()
		s.PinsIssued += c.pinsIssued.Load()
		s.Fallbacks += c.fallbacks.Load()
		s.Retries += c.retries.Load()
		s.Status5xx += c.status5xx.Load()
		for i, code := range Codes {
			if n := c.errors[i].Load(); n > 0 {
				s.Errors[code] += n
			}
		}
		for r := range hist {
			for i := range hist[r] {
				hist[r][i] += c.latency[r][i].Load()
			}
		}
	}
	if span > 0 {
		s.RequestsPerS = float64(s.Requests) / span.Seconds()
	}
	if s.Reads > 0 {
		s.ReplicaShare = float64(s.ReplicaReads) / float64(s.Reads)
	}
	if s.Requests > 0 {
		s.PinnedShare = float64(s.Pinned) / float64(s.Requests)
	}
	for r, name := range []string{UpstreamPrimary, UpstreamReplica} {
		if q := quantiles(hist[r][:]); q.Count > 0 {
			s.Latency[name] = q
		}
	}
	return s
}

func quantiles(hist []int64) Quantiles {
	var q Quantiles
	for _, n := range hist {
		q.Count += n
	}
	if q.Count == 0 {
		return q
	}
	at := func(p float64) time.Duration {
		rank := int64(math.Ceil(p * float64(q.Count)))
		var seen int64
		for i, n := range hist {
			seen += n
			if seen >= rank {
				return bucketValue(i)
			}
		}
		return bucketValue(len(hist) - 1)
	}
	q.P50, q.P99 = at(0.50), at(0.99)
	return q
}
