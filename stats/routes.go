package stats

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// LearnedRoute is one route the router replayed on the primary, as the
// status page lists it.
type LearnedRoute struct {
	Method       string    `json:"method"`
	Path         string    `json:"path"`
	Replays      int64     `json:"replays"`
	Served       int64     `json:"served_by_primary"`
	LastReplay   time.Time `json:"last_replay"`
	PrimaryUntil time.Time `json:"primary_until"`
}

// Routes tallies, by method and path, the reads a read-only app handed back
// to the primary (reason replay) and the reads then sent straight there
// (reason learned): the app's GETs that write, for the team to fix or to
// list in PRIMARY_PATHS. The log reader uses it; the router keeps its own
// table.
type Routes struct {
	replays, learned map[string]int64
}

// Add counts a sample if it was replayed or learned.
func (r *Routes) Add(s Sample) {
	if s.Reason != ReasonReplay && s.Reason != ReasonLearned {
		return
	}
	if r.replays == nil {
		r.replays, r.learned = map[string]int64{}, map[string]int64{}
	}
	path, _, _ := strings.Cut(s.Path, "?")
	key := s.Method + " " + path
	if s.Reason == ReasonReplay {
		r.replays[key]++
	} else {
		r.learned[key]++
	}
}

// Format lists the routes, most replayed first, one per line; empty when
// nothing was replayed.
func (r *Routes) Format() string {
	keys := make([]string, 0, len(r.replays)+len(r.learned))
	for k := range r.replays {
		keys = append(keys, k)
	}
	for k := range r.learned {
		if _, ok := r.replays[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if r.replays[keys[i]] != r.replays[keys[j]] {
			return r.replays[keys[i]] > r.replays[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  replayed on the primary: %s %d times, then sent there %d times (learned)\n", k, r.replays[k], r.learned[k])
	}
	return b.String()
}
