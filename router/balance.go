package router

import "sync/atomic"

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
