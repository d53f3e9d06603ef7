// Package replication reads Postgres replication positions: the primary's
// WAL position after a write, and how far each follower has replayed, so
// the router can release a pin as soon as a follower has the client's
// write and keep followers that fall behind out of the read rotation.
package replication

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a Postgres WAL position ("16/B374D848"). Positions only grow, so
// comparing two LSNs needs no clock.
type LSN = uint64

// ParseLSN reads Postgres' text form of an LSN.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("replication: %q is not an LSN like 16/B374D848", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("replication: %q is not an LSN like 16/B374D848", s)
	}
	return h<<32 | l, nil
}

// FormatLSN writes an LSN as Postgres does.
func FormatLSN(l LSN) string {
	return fmt.Sprintf("%X/%X", l>>32, uint32(l))
}
