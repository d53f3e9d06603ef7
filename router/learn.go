package router

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/splitapp/router/stats"
)

// learnedRoutes remembers reads that had to be replayed on the primary (a
// GET that writes: a logout link, a "mark as read", a session touch), so
// that for a while the same method and path go straight to the primary
// (reason learned) instead of paying a failed attempt each time.
//
// Lookups are on every read's path and take no lock: the table is an
// immutable map behind an atomic pointer, copied on the rare insert of a
// route not yet known. An empty table costs one atomic load.
type learnedRoutes struct {
	ttl time.Duration
	max int
	now func() time.Time

	table atomic.Pointer[map[routeKey]*learnedRoute]
	mu    sync.Mutex // serializes inserts
}

// routeKey is a method and a path, without the query. A struct, not a
// joined string, so a lookup allocates nothing.
type routeKey struct{ method, path string }

// learnedRoute is one route's record. Its fields change in place.
type learnedRoute struct {
	until    atomic.Int64 // Unix nanoseconds; reads go to the primary before it
	replays  atomic.Int64 // replays that taught it
	served   atomic.Int64 // reads sent straight to the primary since
	replayed atomic.Int64 // Unix nanoseconds of the last replay
}

// maxLearnedRoutes bounds the table: an app with ids in its paths
// (/notes/17/read) cannot grow it without end.
const maxLearnedRoutes = 4096

func newLearnedRoutes(ttl time.Duration) *learnedRoutes {
	l := &learnedRoutes{ttl: ttl, max: maxLearnedRoutes, now: time.Now}
	empty := map[routeKey]*learnedRoute{}
	l.table.Store(&empty)
	return l
}

// find returns the route of method and path while its reads go to the
// primary, or nil.
func (l *learnedRoutes) find(method, path string) *learnedRoute {
	if l == nil {
		return nil
	}
	table := *l.table.Load()
	if len(table) == 0 {
		return nil
	}
	e := table[routeKey{method, path}]
	if e == nil || l.now().UnixNano() >= e.until.Load() {
		return nil
	}
	return e
}

// learn records a replay of method and path.
func (l *learnedRoutes) learn(method, path string) {
	if l == nil || l.ttl <= 0 {
		return
	}
	now := l.now()
	key := routeKey{method, path}
	e := (*l.table.Load())[key]
	if e == nil {
		l.mu.Lock()
		old := *l.table.Load()
		if e = old[key]; e == nil {
			e = &learnedRoute{}
			// The method and path may be views of the request's buffer,
			// which the next request on its connection overwrites: the
			// table keeps copies.
			key = routeKey{strings.Clone(method), strings.Clone(path)}
			next := make(map[routeKey]*learnedRoute, len(old)+1)
			for k, v := range old {
				next[k] = v
			}
			if len(next) >= l.max {
				evictOne(next, now)
			}
			next[key] = e
			l.table.Store(&next)
		}
		l.mu.Unlock()
	}
	e.replays.Add(1)
	e.replayed.Store(now.UnixNano())
	e.until.Store(now.Add(l.ttl).UnixNano())
}

// evictOne drops an expired route, or else the one replayed longest ago.
func evictOne(table map[routeKey]*learnedRoute, now time.Time) {
	var oldest routeKey
	var oldestAt int64
	first := true
	for k, e := range table {
		if e.until.Load() <= now.UnixNano() {
			delete(table, k)
			return
		}
		if at := e.replayed.Load(); first || at < oldestAt {
			oldest, oldestAt, first = k, at, false
		}
	}
	delete(table, oldest)
}

// snapshot lists the routes, most replayed first.
func (l *learnedRoutes) snapshot() []stats.LearnedRoute {
	if l == nil {
		return nil
	}
	table := *l.table.Load()
	out := make([]stats.LearnedRoute, 0, len(table))
	for k, e := range table {
		out = append(out, stats.LearnedRoute{
			Method: k.method, Path: k.path,
			Replays: e.replays.Load(), Served: e.served.Load(),
			LastReplay:   time.Unix(0, e.replayed.Load()),
			PrimaryUntil: time.Unix(0, e.until.Load()),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Replays != out[j].Replays {
			return out[i].Replays > out[j].Replays
		}
		return out[i].Path < out[j].Path
	})
	return out
}
