package stats

// The words of a request's log line, defined once: the router writes them,
// and the metrics, the status page and `router stats` count them by these
// lists, so a new word cannot be counted as "other" unnoticed.

// Reason says why a request went where it did: the log line's reason=.
type Reason string

const (
	ReasonPathRule    Reason = "path_rule"     // PRIMARY_PATHS matched
	ReasonUpgrade     Reason = "upgrade"       // WebSocket and other upgrades hold a connection: primary
	ReasonWrite       Reason = "write"         // an unsafe method
	ReasonPinned      Reason = "pinned"        // the client wrote recently
	ReasonRead        Reason = "read"          // a safe method, served by a replica
	ReasonNoReplica   Reason = "no_replica"    // a read the primary serves: no replica configured or available
	ReasonPrimaryDown Reason = "primary_down"  // the primary is unavailable
	ReasonAllDown     Reason = "all_down"      // nothing can serve the request
	ReasonShare       Reason = "primary_share" // a read READ_SHARE keeps on the primary
	ReasonCaughtUp    Reason = "caught_up"     // a pinned read a follower can serve: it has replayed the write
	ReasonReplay      Reason = "replay"        // a read the read-only app could not serve, replayed on the primary
	ReasonLearned     Reason = "learned"       // a read of a route that was replayed lately: straight to the primary
)

// Reasons lists every reason.
var Reasons = [...]Reason{ReasonRead, ReasonWrite, ReasonPinned, ReasonPathRule, ReasonUpgrade, ReasonNoReplica,
	ReasonShare, ReasonPrimaryDown, ReasonAllDown, ReasonCaughtUp, ReasonReplay, ReasonLearned}

// fallback reports whether a reason is a read the primary served for want
// of a replica.
func (r Reason) fallback() bool {
	return r == ReasonNoReplica || r == ReasonPrimaryDown || r == ReasonAllDown
}

// Error codes: the log line's code=, when the router itself answered or
// cut the request.
const (
	CodeUpstreamError       = "upstream_error"        // the upstream could not be reached or broke the connection (502)
	CodeUpstreamBadResponse = "upstream_bad_response" // the response head was malformed or too large (502)
	CodeUpstreamTimeout     = "upstream_timeout"      // no response headers within UPSTREAM_TIMEOUT (504)
	CodeUpstreamAborted     = "upstream_aborted"      // the upstream died mid-response
	CodeClientError         = "client_error"          // the client's request was malformed (400)
	CodeClientTimeout       = "client_timeout"        // the client's request body stopped arriving (408)
	CodeClientGone          = "client_gone"           // the client went away before the response (499)
	CodeUnavailable         = "unavailable"           // no upstream could take the request (503)
)

// Codes lists every error code.
var Codes = [...]string{CodeUpstreamError, CodeUpstreamBadResponse, CodeUpstreamTimeout, CodeUpstreamAborted,
	CodeClientError, CodeClientTimeout, CodeClientGone, CodeUnavailable}

// Who served a request: the log line's upstream=. The first two are
// health.Role's names.
const (
	UpstreamPrimary = "primary"
	UpstreamReplica = "replica"
	UpstreamNone    = "none"
)

// Upstreams lists every upstream= value.
var Upstreams = [...]string{UpstreamPrimary, UpstreamReplica, UpstreamNone}
