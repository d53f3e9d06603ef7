// Package pathrule matches request paths against the patterns of
// PRIMARY_PATHS and READ_PATHS.
//
// A pattern is an optional method and a path:
//
//	/admin/            prefix: /admin/users, not /administrator
//	/auth/*/callback   "*" stands for exactly one non-empty path segment
//	/login             exact
//	POST /search       the same, for one method only
package pathrule

import (
	"fmt"
	"strings"
)

// Rule is one parsed pattern.
type Rule struct {
	// Method is the request method the rule is limited to; empty means any.
	Method string
	// segments are the pattern's path segments after the leading "/".
	segments []string
	// prefix is set when the pattern ends in "/": the path must start with
	// every segment and may continue.
	prefix bool
	text   string
}

// String returns the pattern as it was written.
func (r Rule) String() string { return r.text }

// Set is an ordered list of rules; the zero Set matches nothing.
type Set []Rule

// Parse reads a comma-separated list of patterns. Empty entries are skipped,
// so a trailing comma is harmless.
func Parse(list string) (Set, error) {
	var set Set
	for _, entry := range strings.Split(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		rule, err := parseRule(entry)
		if err != nil {
			return nil, err
		}
		set = append(set, rule)
	}
	return set, nil
}

func parseRule(entry string) (Rule, error) {
	rule := Rule{text: entry}
	pattern := entry
	if method, rest, ok := strings.Cut(entry, " "); ok {
		rule.Method = strings.ToUpper(method)
		pattern = strings.TrimSpace(rest)
		if !isToken(rule.Method) {
			return Rule{}, fmt.Errorf("pattern %q: %q is not an HTTP method (e.g. \"POST /search\")", entry, method)
		}
	}
	if !strings.HasPrefix(pattern, "/") {
		return Rule{}, fmt.Errorf("pattern %q must start with \"/\" (e.g. \"/admin/\" or \"POST /search\")", entry)
	}
	if strings.ContainsAny(pattern, " ?#\t") {
		return Rule{}, fmt.Errorf("pattern %q: a pattern is a path only, without spaces, query or fragment", entry)
	}
	body := pattern[1:]
	if strings.HasSuffix(pattern, "/") {
		rule.prefix = true
		body = strings.TrimSuffix(body, "/")
	}
	if body != "" {
		rule.segments = strings.Split(body, "/")
	}
	for _, seg := range rule.segments {
		if seg == "" {
			return Rule{}, fmt.Errorf("pattern %q has an empty segment (\"//\")", entry)
		}
		if seg != "*" && strings.Contains(seg, "*") {
			return Rule{}, fmt.Errorf("pattern %q: \"*\" must be a whole segment, as in /auth/*/callback", entry)
		}
	}
	return rule, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// Match reports whether any rule matches the method and path. It does not
// allocate: it is on every request's path.
func (s Set) Match(method, path string) bool {
	for i := range s {
		if s[i].Match(method, path) {
			return true
		}
	}
	return false
}

// Match reports whether the rule matches the method and path.
func (r *Rule) Match(method, path string) bool {
	if r.Method != "" && r.Method != method {
		return false
	}
	if path == "" || path[0] != '/' {
		return false
	}
	rest := path[1:]
	// slashFollows records whether the segment just consumed was followed by
	// "/": a prefix needs it, an exact pattern must not have it.
	slashFollows := true
	for _, seg := range r.segments {
		if !slashFollows {
			return false
		}
		var part string
		part, rest, slashFollows = strings.Cut(rest, "/")
		if seg == "*" {
			if part == "" {
				return false
			}
		} else if part != seg {
			return false
		}
	}
	if r.prefix {
		return slashFollows
	}
	return !slashFollows
}
