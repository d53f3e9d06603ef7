package stats

import (
	"sync"
	"sync/atomic"
	"time"
)

// Window keeps one Counter per second for the last Seconds seconds, reusing
// each slot when its second comes round again.
type Window struct {
	slots []windowSlot
	now   func() time.Time
}

type windowSlot struct {
	sec   atomic.Int64
	reset sync.Mutex
	Counter
}

// NewWindow returns a window of the given length. now may be nil.
func NewWindow(length time.Duration, now func() time.Time) *Window {
	if now == nil {
		now = time.Now
	}
	n := max(int(length/time.Second), 1)
	return &Window{slots: make([]windowSlot, n), now: now}
}

// Add counts a sample in the second it ended.
func (w *Window) Add(s Sample) {
	end := s.End
	if end.IsZero() {
		end = w.now()
	}
	w.slot(end.Unix()).Add(s)
}

// slot returns the counter for second sec, clearing it first when it last
// held an older second. The lock is taken once per slot per second; every
// other Add is atomics only.
func (w *Window) slot(sec int64) *Counter {
	sl := &w.slots[int(sec%int64(len(w.slots)))]
	if sl.sec.Load() != sec {
		sl.reset.Lock()
		if sl.sec.Load() != sec {
			sl.Counter.reset()
			sl.sec.Store(sec)
		}
		sl.reset.Unlock()
	}
	return &sl.Counter
}

// Last summarizes the given span up to now (whole seconds, the current one
// included).
func (w *Window) Last(span time.Duration) Summary {
	now := w.now().Unix()
	n := min(max(int(span/time.Second), 1), len(w.slots))
	counters := make([]*Counter, 0, n)
	for sec := now - int64(n) + 1; sec <= now; sec++ {
		sl := &w.slots[int(sec%int64(len(w.slots)))]
		if sl.sec.Load() == sec {
			counters = append(counters, &sl.Counter)
		}
	}
	return Summarize(time.Duration(n)*time.Second, counters...)
}

// Point is one step of a Series.
type Point struct {
	End          time.Time `json:"end"`
	Reads        int64     `json:"reads"`
	ReplicaShare float64   `json:"replica_read_share"`
}

// Series returns n consecutive steps of the given length, oldest first, the
// last ending now: how the read split moved.
func (w *Window) Series(step time.Duration, n int) []Point {
	now := w.now().Unix()
	per := max(int64(step/time.Second), 1)
	points := make([]Point, n)
	for i := range n {
		end := now - int64(n-1-i)*per
		var counters []*Counter
		for sec := end - per + 1; sec <= end; sec++ {
			if sec <= now-int64(len(w.slots)) {
				continue
			}
			sl := &w.slots[int(sec%int64(len(w.slots)))]
			if sl.sec.Load() == sec {
				counters = append(counters, &sl.Counter)
			}
		}
		s := Summarize(step, counters...)
		points[i] = Point{End: time.Unix(end, 0), Reads: s.Reads, ReplicaShare: s.ReplicaShare}
	}
	return points
}
