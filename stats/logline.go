package stats

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ParseLine reads one of the router's request log lines, logfmt or JSON,
// with or without a platform prefix such as Heroku's
// "2026-11-22T10:00:00.123456+00:00 app[web.1]: ". It returns the sample,
// the prefix's timestamp if it had one, and whether the line was a router
// request line at all: other lines (the app's, Heroku's own router lines,
// the router's messages) are not.
func ParseLine(line string) (s Sample, at time.Time, ok bool) {
	if first, _, found := strings.Cut(line, " "); found {
		if t, err := time.Parse(time.RFC3339Nano, first); err == nil {
			at = t
		}
	}
	var fields map[string]string
	if i := strings.Index(line, `{"at":`); i >= 0 {
		fields = jsonFields(line[i:])
	} else if i := indexAt(line); i >= 0 {
		fields = ParseLogfmt(line[i:])
	}
	if fields == nil || fields["upstream"] == "" || fields["reason"] == "" || fields["status"] == "" {
		return Sample{}, at, false
	}
	s = Sample{
		Method:    fields["method"],
		Upstream:  fields["upstream"],
		Reason:    Reason(fields["reason"]),
		Path:      fields["path"],
		Pinned:    fields["pinned"] == "true",
		PinIssued: fields["pin_issued"] == "true",
		Code:      fields["code"],
	}
	s.Read = s.Method == "GET" || s.Method == "HEAD" || s.Method == "OPTIONS"
	s.Status, _ = strconv.Atoi(fields["status"])
	s.Retries, _ = strconv.Atoi(fields["retries"])
	if v, found := fields["service_ms"]; found {
		ms, _ := strconv.ParseFloat(v, 64)
		s.Service = time.Duration(ms * float64(time.Millisecond))
	} else if d, err := time.ParseDuration(fields["service"]); err == nil {
		s.Service = d
	}
	return s, at, true
}

// indexAt finds where the router's fields start: "at=info " or "at=error ".
func indexAt(line string) int {
	for _, p := range []string{"at=info ", "at=error "} {
		if i := strings.Index(line, p); i == 0 || i > 0 && line[i-1] == ' ' {
			return i
		}
	}
	return -1
}

// ParseLogfmt reads key=value pairs, with Go-quoted values where quoted.
// A line that repeats a key is not the router's (whose lines never do):
// it returns nil, so a forged field cannot override a real one.
func ParseLogfmt(line string) map[string]string {
	fields := map[string]string{}
	for line != "" {
		key, rest, ok := strings.Cut(line, "=")
		if !ok {
			break
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(rest) {
				return nil
			}
			v, err := strconv.Unquote(rest[:end+1])
			if err != nil {
				return nil
			}
			val, rest = v, rest[end+1:]
		} else {
			val, rest, _ = strings.Cut(rest, " ")
			rest = " " + rest
		}
		if _, dup := fields[key]; dup {
			return nil
		}
		fields[key] = val
		line = strings.TrimLeft(rest, " ")
	}
	return fields
}

func jsonFields(line string) map[string]string {
	var raw map[string]any
	if err := json.NewDecoder(strings.NewReader(line)).Decode(&raw); err != nil {
		return nil
	}
	fields := make(map[string]string, len(raw))
	for k, v := range raw {
		fields[k] = fmt.Sprint(v)
	}
	return fields
}

// Format renders a summary as two lines for a terminal.
func Format(s Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%.1f req/s (%d in %.0fs) · reads from replicas %.0f%% (%d of %d) · pinned %.0f%% · pins issued %d · fallbacks %d · retries %d · 5xx %d",
		s.RequestsPerS, s.Requests, s.Seconds, s.ReplicaShare*100, s.ReplicaReads, s.Reads, s.PinnedShare*100, s.PinsIssued, s.Fallbacks, s.Retries, s.Status5xx)
	if len(s.Errors) > 0 {
		codes := make([]string, 0, len(s.Errors))
		for code, n := range s.Errors {
			codes = append(codes, fmt.Sprintf("%s %d", code, n))
		}
		sort.Strings(codes)
		fmt.Fprintf(&b, " (%s)", strings.Join(codes, ", "))
	}
	b.WriteString("\n ")
	for _, role := range []string{UpstreamPrimary, UpstreamReplica} {
		q, ok := s.Latency[role]
		if !ok {
			fmt.Fprintf(&b, " %s: no requests ·", role)
			continue
		}
		fmt.Fprintf(&b, " %s service p50 %s p99 %s (n=%d) ·", role, fmtMS(q.P50), fmtMS(q.P99), q.Count)
	}
	return strings.TrimSuffix(b.String(), " ·")
}

func fmtMS(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}
