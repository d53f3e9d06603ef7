package admin

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/splitapp/router/replication"
	"github.com/splitapp/router/stats"
)

// Status is what /_router/status shows, as JSON or as a page.
type Status struct {
	Now        time.Time        `json:"now"`
	Uptime     string           `json:"uptime"`
	Upstreams  []UpstreamStatus `json:"upstreams"`
	LastMinute stats.Summary    `json:"last_minute"`
	// Split is the share of reads served by replicas over the last five
	// minutes, in 10 s steps, oldest first.
	Split []stats.Point `json:"split"`
	// Replayed lists the routes a read-only app handed back to the
	// primary, most replayed first: the app's reads that write.
	Replayed []stats.LearnedRoute `json:"replayed_routes"`
	// Databases, with the database URLs set, are the primary database and
	// each follower, reachable or not, and why.
	Databases []DatabaseStatus `json:"databases,omitempty"`
}

// DatabaseStatus is one database on the status page.
type DatabaseStatus struct {
	Name     string    `json:"name"`
	Variable string    `json:"variable"`
	State    string    `json:"state"` // up, down, unknown (not tried yet)
	Cause    string    `json:"cause,omitempty"`
	Error    string    `json:"error,omitempty"`
	Since    time.Time `json:"since,omitzero"`
}

// UpstreamStatus is one upstream on the status page.
type UpstreamStatus struct {
	Name           string    `json:"name"`
	Role           string    `json:"role"`
	Up             bool      `json:"up"`
	State          string    `json:"state"` // up, down, ejected, lagging
	EjectedUntil   time.Time `json:"ejected_until,omitzero"`
	LastCheck      time.Time `json:"last_check,omitzero"`
	CheckLatencyMS float64   `json:"check_latency_ms"`
	// CheckStatus is the last health check's answer, 0 without one.
	CheckStatus int    `json:"check_status,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	LastFailure string `json:"last_failure,omitempty"`
	Ejections   uint64 `json:"ejections"`
	Inflight    int64  `json:"inflight"`
	// Replication, for replicas when the database URLs are configured:
	// the lag is null while it cannot be measured.
	LagMS       *float64 `json:"lag_ms"`
	ReplayedLSN string   `json:"replayed_lsn,omitempty"`
}

func buildStatus(o Options) Status {
	now := time.Now()
	s := Status{
		Now:        now,
		Uptime:     now.Sub(o.Started).Round(time.Second).String(),
		LastMinute: o.Window.Last(time.Minute),
		Split:      o.Window.Series(10*time.Second, 30),
	}
	if o.Learned != nil {
		s.Replayed = o.Learned()
	}
	for _, u := range o.Upstreams {
		snap := u.Snapshot()
		state := "up"
		switch {
		case snap.CheckedDown:
			state = "down"
		case !snap.EjectedUntil.IsZero():
			state = "ejected"
		case snap.Lagging:
			state = "lagging"
		}
		var replayed string
		if snap.Replayed != 0 {
			replayed = replication.FormatLSN(snap.Replayed)
		}
		var lag *float64
		if snap.LagKnown {
			ms := float64(snap.Lag.Microseconds()) / 1000
			lag = &ms
		}
		s.Upstreams = append(s.Upstreams, UpstreamStatus{
			Name: snap.Name, Role: snap.Role, Up: snap.Available, State: state,
			EjectedUntil: snap.EjectedUntil, LastCheck: snap.LastCheck, CheckStatus: snap.LastCheckStatus,
			CheckLatencyMS: float64(snap.CheckLatency.Microseconds()) / 1000,
			LastError:      snap.LastError, LastFailure: snap.LastFailure, Ejections: snap.Ejections, Inflight: snap.Inflight,
			LagMS: lag, ReplayedLSN: replayed,
		})
	}
	if o.Databases != nil {
		for _, d := range o.Databases() {
			state := "unknown"
			switch {
			case d.Known && d.Up:
				state = "up"
			case d.Known:
				state = "down"
			}
			s.Databases = append(s.Databases, DatabaseStatus{Name: d.Database.Name, Variable: d.Database.Variable,
				State: state, Cause: string(d.Cause), Error: d.Err, Since: d.Since})
		}
	}
	return s
}

func statusHandler(o Options) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := buildStatus(o)
		w.Header().Set("Cache-Control", "no-store")
		if strings.Contains(r.Header.Get("Accept"), "application/json") || r.URL.Query().Get("format") == "json" {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			enc.Encode(s)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, s); err != nil {
			fmt.Fprintf(w, "<p>error rendering the status page</p>")
		}
	}
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"pct":   func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
	"lagMS": func(ms *float64) string { return fmt.Sprintf("%.0f", *ms) },
	"ms": func(d time.Duration) string {
		if d == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "not yet"
		}
		return now.Sub(t).Round(100*time.Millisecond).String() + " ago"
	},
	"bar": func(i int, p stats.Point) template.HTML {
		// 30 bars of 20 px in a 600 x 80 chart; height is the replica share.
		h := p.ReplicaShare * 76
		fill := "#3b82f6"
		if p.Reads == 0 {
			h, fill = 2, "#d1d5db"
		}
		return template.HTML(fmt.Sprintf(`<rect x="%d" y="%.1f" width="16" height="%.1f" fill="%s"><title>%s: %d reads, %.0f%% from replicas</title></rect>`,
			i*20, 78-h, h, fill, p.End.Format("15:04:05"), p.Reads, p.ReplicaShare*100))
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>router status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#111;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .muted{color:#6b7280}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;background:#fff;border:1px solid #e5e7eb}
th,td{padding:6px 10px;border-bottom:1px solid #e5e7eb;text-align:left}
.up{color:#15803d;font-weight:600} .down,.ejected,.lagging{color:#b91c1c;font-weight:600} .unknown{color:#6b7280}
</style></head><body>
<h1>router status</h1>
<div class="muted">up {{.Uptime}} · refreshes every 5 s · {{.Now.Format "2006-01-02 15:04:05 MST"}}</div>
<div class="cards">
<div class="card"><b>{{printf "%.1f" .LastMinute.RequestsPerS}}/s</b>requests, last minute</div>
<div class="card"><b>{{pct .LastMinute.ReplicaShare}}</b>of reads from replicas</div>
<div class="card"><b>{{pct .LastMinute.PinnedShare}}</b>requests pinned</div>
<div class="card"><b>{{.LastMinute.PinsIssued}}</b>pins issued</div>
<div class="card"><b>{{.LastMinute.Fallbacks}}</b>fallbacks</div>
<div class="card"><b>{{.LastMinute.Status5xx}}</b>5xx responses</div>
{{range $role, $q := .LastMinute.Latency}}<div class="card"><b>{{ms $q.P50}} / {{ms $q.P99}}</b>{{$role}} p50 / p99</div>{{end}}
</div>
<h2>Upstreams</h2>
<table><tr><th>backend</th><th>role</th><th>state</th><th>last check</th><th>check latency</th><th>last failure</th><th>last error</th><th>ejections</th><th>in flight</th><th>replication lag</th></tr>
{{range .Upstreams}}<tr><td>{{.Name}}</td><td>{{.Role}}</td><td class="{{.State}}">{{.State}}</td><td>{{ago $.Now .LastCheck}}{{if .CheckStatus}} ({{.CheckStatus}}){{end}}</td><td>{{printf "%.1f" .CheckLatencyMS}} ms</td><td>{{or .LastFailure "–"}}</td><td>{{.LastError}}</td><td>{{.Ejections}}</td><td>{{.Inflight}}</td><td>{{if .LagMS}}{{lagMS .LagMS}} ms{{if .ReplayedLSN}} at {{.ReplayedLSN}}{{end}}{{else if $.Databases}}{{if eq .Role "replica"}}unknown{{else}}–{{end}}{{else}}–{{end}}</td></tr>
{{end}}</table>
{{with .Databases}}<h2>Databases</h2>
<table><tr><th>database</th><th>from</th><th>state</th><th>since</th><th>cause</th><th>error</th></tr>
{{range .}}<tr><td>{{.Name}}</td><td>{{.Variable}}</td><td class="{{.State}}">{{.State}}</td><td>{{ago $.Now .Since}}</td><td>{{or .Cause "–"}}</td><td>{{.Error}}</td></tr>
{{end}}</table>{{end}}
<h2>Reads served by replicas, last 5 minutes</h2>
<svg width="600" height="96" viewBox="0 0 600 96" role="img" aria-label="share of reads served by replicas">
<line x1="0" y1="79" x2="600" y2="79" stroke="#9ca3af"/>
{{range $i, $p := .Split}}{{bar $i $p}}{{end}}
<text x="0" y="94" font-size="11" fill="#6b7280">5 min ago</text><text x="600" y="94" font-size="11" fill="#6b7280" text-anchor="end">now · bar height = share of reads from replicas (grey: no reads)</text>
</svg>
{{with .Replayed}}<h2>Reads replayed on the primary</h2>
<p>A read-only app could not serve these reads (they write); fix them, or list them in PRIMARY_PATHS.</p>
<table><tr><th>method</th><th>path</th><th>replays</th><th>sent straight to the primary since</th><th>last replay</th><th>to the primary until</th></tr>
{{range .}}<tr><td>{{.Method}}</td><td>{{.Path}}</td><td>{{.Replays}}</td><td>{{.Served}}</td><td>{{ago $.Now .LastReplay}}</td><td>{{.PrimaryUntil.UTC.Format "15:04:05"}}</td></tr>
{{end}}</table>{{end}}
{{with .LastMinute.Errors}}<h2>Router errors, last minute</h2><ul>{{range $code, $n := .}}<li>{{$code}}: {{$n}}</li>{{end}}</ul>{{end}}
</body></html>
`))
