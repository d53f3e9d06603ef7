package router

import (
	"sync/atomic"
	"time"

	"github.com/splitapp/router/cookie"
)

// replicaPool picks replicas by weighted round-robin without a lock: the
// weights are unrolled once into a fixed, interleaved sequence of slots, and
// each pick advances an atomic counter over it.
type replicaPool struct {
	slots   []*backend
	members []*backend
	next    atomic.Uint64
	// leastOutstanding picks the available replica with the fewest
	// requests in flight per unit of weight instead.
	leastOutstanding bool
}

func newReplicaPool(members []*backend, leastOutstanding bool) *replicaPool {
	return &replicaPool{members: members, slots: interleave(members), leastOutstanding: leastOutstanding}
}

// interleave unrolls weights with nginx's smooth weighted round-robin, so
// weights 1 and 3 give a b b b as b a b b rather than a b b b in a burst.
func interleave(members []*backend) []*backend {
	total := 0
	for _, m := range members {
		total += m.up.Weight
	}
	current := make([]int, len(members))
	slots := make([]*backend, 0, total)
	for range total {
		best := 0
		for i, m := range members {
			current[i] += m.up.Weight
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		slots = append(slots, members[best])
	}
	return slots
}

// pick returns the next available replica other than exclude, or nil when
// none is available.
func (p *replicaPool) pick(exclude *backend) *backend {
	if p.leastOutstanding {
		return p.pickLeastOutstanding(exclude)
	}
	return p.pickCaughtUp(0, exclude)
}

// pickLeastOutstanding scans every member once, starting at a rotating
// offset so that ties spread evenly. Replica fleets are small: an exact scan
// beats sampling.
func (p *replicaPool) pickLeastOutstanding(exclude *backend) *backend {
	n := uint64(len(p.members))
	if n == 0 {
		return nil
	}
	start := p.next.Add(1)
	var best *backend
	var bestLoad float64
	for i := range n {
		b := p.members[(start+i)%n]
		if b == exclude || !b.up.Available() {
			continue
		}
		load := float64(b.up.Inflight()) / float64(b.up.Weight)
		if best == nil || load < bestLoad {
			best, bestLoad = b, load
		}
	}
	return best
}

// pickCaughtUp returns the next available replica other than exclude whose
// follower has replayed lsn (any replica, for lsn 0), in weighted
// round-robin order, or nil. The loop is bounded by the number of slots.
func (p *replicaPool) pickCaughtUp(lsn uint64, exclude *backend) *backend {
	n := uint64(len(p.slots))
	if n == 0 {
		return nil
	}
	start := p.next.Add(1)
	for i := range n {
		b := p.slots[(start+i)%n]
		if b != exclude && b.up.Replayed() >= lsn && b.up.Available() {
			return b
		}
	}
	return nil
}

// candidates are the replicas a read could go to, picked before the
// decision with its inputs, so that the decision never names a replica
// that has left rotation since.
type candidates struct {
	// caughtUp has replayed the pin's write; replica is the next in
	// rotation, when the read is not pinned or none has the write.
	caughtUp, replica *backend
	// learned is the read's learned route, if it has one.
	learned *learnedRoute
}

// candidates picks the replicas for a read; a write leaves the round-robin
// alone.
func (rt *Router) candidates(ex *exchange, path string, pin cookie.Pin) candidates {
	var c candidates
	if !IsSafe(ex.method) && !rt.rules.ReadPaths.Match(ex.method, path) {
		return c
	}
	if pin.LSN > 0 {
		if c.caughtUp = rt.replicas.pickCaughtUp(pin.LSN, nil); c.caughtUp == nil {
			rt.onPinnedWait()
		}
	}
	if !ex.pinned || c.caughtUp == nil {
		c.replica = rt.replicas.pick(nil)
	}
	if IsSafe(ex.method) {
		c.learned = rt.learned.find(ex.method, ex.path)
	}
	return c
}

// admitFallback applies the spillover guard to a read that falls back to
// the primary: when PRIMARY_READ_LIMIT such reads are in flight it waits
// briefly for a slot, then refuses with 503. Without replicas configured
// there is no fallback and no limit. When it refuses, v is the answer.
func (rt *Router) admitFallback(ex *exchange) (v verdict, ok bool) {
	if rt.fallbackSlots == nil || len(rt.replicas.members) == 0 || ex.holdsSlot {
		return verdict{}, true
	}
	select {
	case rt.fallbackSlots <- struct{}{}:
	default:
		timer := time.NewTimer(fallbackWait)
		defer timer.Stop()
		select {
		case rt.fallbackSlots <- struct{}{}:
		case <-timer.C:
			return verdictBusy, false
		}
	}
	ex.holdsSlot = true
	return verdict{}, true
}
