// Package report answers admins' questions about Nudge's analytics: time
// series of a counter, totals, the reminder funnel, push success by
// platform and daily active users.
//
// A Store reads the counters tables the flusher writes (counters_minute,
// counters_hour, counters_day, daily_active_users; see schema/README.md)
// with placeholders only: table and column names come from closed sets in
// this package, never from a request. In live mode it also reads the
// counters that are still in Redis (every shard's counter index, counter
// hashes and flush snapshots) and merges them in, marking the points they
// touched.
//
// A Server serves the reports as a JSON and CSV API, a dashboard (HTML, CSS
// and JavaScript embedded in the binary, charts drawn as SVG by the page),
// and asynq's web UI (asynqmon) under /queues, all behind one bearer token
// or basic auth. README.md documents the API.
//
// # Time zones
//
// Buckets are stored in UTC. A query names an IANA time zone (default UTC)
// and its buckets start at local minute, hour or midnight boundaries of that
// zone. A rollup table serves a query only where its UTC buckets nest
// exactly in the local ones: counters_day for day steps when the zone's
// offset is zero over the whole range; counters_hour for hour steps, and for
// day steps in zones whose offset is a whole number of hours over the range
// (Europe/Berlin, across DST too); counters_minute otherwise (Asia/Kolkata,
// +05:30). A local day is therefore 23 or 25 hours long on DST days.
package report

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/nudgehq/nudge/counters"
)

// Errors of the package.
var (
	// ErrBadQuery is wrapped by every *ParamError: the query is invalid.
	ErrBadQuery = errors.New("report: bad query")
	// ErrConfig is returned by the constructors for an invalid Config.
	ErrConfig = errors.New("report: invalid config")
	// ErrNoAuth is returned by NewServer and Server.Run for a listen
	// address that is not loopback when no authentication is configured.
	ErrNoAuth = errors.New("refusing to serve reports on a non-loopback address without authentication")
)

// ParamError is an invalid query parameter. It wraps ErrBadQuery.
type ParamError struct {
	// Param is the name of the parameter, as in the HTTP API ("from").
	Param string
	// Msg says what is wrong with it.
	Msg string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrBadQuery) true.
func (e *ParamError) Unwrap() error { return ErrBadQuery }

func paramErr(param, format string, args ...any) error {
	return &ParamError{Param: param, Msg: fmt.Sprintf(format, args...)}
}

// Step is the width of the buckets of a series.
type Step string

// Steps of a series.
const (
	StepMinute Step = "minute"
	StepHour   Step = "hour"
	StepDay    Step = "day"
)

// ParseStep returns the Step named s.
func ParseStep(s string) (Step, error) {
	switch st := Step(s); st {
	case StepMinute, StepHour, StepDay:
		return st, nil
	}
	return "", paramErr("step", "must be minute, hour or day, not %q", truncate(s))
}

// Dimension is a dimension of a counter that a report can group by.
type Dimension string

// Dimensions of counters. DimNone means "not grouped".
const (
	DimNone     Dimension = ""
	DimApp      Dimension = "app"
	DimPlatform Dimension = "platform"
	DimReason   Dimension = "reason"
)

// ParseDimension returns the Dimension named s; "" is DimNone.
func ParseDimension(s string) (Dimension, error) {
	switch d := Dimension(s); d {
	case DimNone, DimApp, DimPlatform, DimReason:
		return d, nil
	}
	return "", paramErr("group", "must be app, platform or reason, not %q", truncate(s))
}

// of returns d's value in dims.
func (d Dimension) of(dims counters.Dims) string {
	switch d {
	case DimApp:
		return dims.App
	case DimPlatform:
		return dims.Platform
	case DimReason:
		return dims.Reason
	}
	return ""
}

// Filter keeps the counters whose dimensions equal the set fields. An empty
// field keeps every value. Values are compared as they are, in SQL through
// placeholders.
type Filter struct {
	App      string `json:"app,omitempty"`
	Platform string `json:"platform,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// maxFilterLen bounds a filter value: dimension values are short ids.
const maxFilterLen = 200

func (f Filter) validate() error {
	for _, p := range []struct{ name, v string }{{"app", f.App}, {"platform", f.Platform}, {"reason", f.Reason}} {
		if len(p.v) > maxFilterLen {
			return paramErr(p.name, "longer than %d bytes", maxFilterLen)
		}
		// Postgres text holds neither: no counter can have such a value.
		if !utf8.ValidString(p.v) || strings.ContainsRune(p.v, 0) {
			return paramErr(p.name, "not valid UTF-8 text")
		}
	}
	return nil
}

func (f Filter) keeps(d counters.Dims) bool {
	return (f.App == "" || f.App == d.App) &&
		(f.Platform == "" || f.Platform == d.Platform) &&
		(f.Reason == "" || f.Reason == d.Reason)
}

// nullable turns an empty filter value into SQL NULL ("any").
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// metricName is the syntax of a metric: counters constants are snake case.
var metricName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

func validMetric(param, m string) error {
	if m == "" {
		return paramErr(param, "is required (GET /api/metrics lists them)")
	}
	if !metricName.MatchString(m) {
		return paramErr(param, "%q is not a metric name (lower case letters, digits and _; GET /api/metrics lists them)", truncate(m))
	}
	if !knownMetric[m] {
		names := make([]string, 0, len(knownMetric))
		for _, k := range Metrics() {
			names = append(names, k.Name)
		}
		return paramErr(param, "unknown metric %q; the metrics are %s", m, strings.Join(names, ", "))
	}
	return nil
}

// knownMetric holds the names of Metrics: a typo is an error, not an
// empty report.
var knownMetric = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range Metrics() {
		m[k.Name] = true
	}
	return m
}()

// Metric describes a counter.
type Metric struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Dims are the dimensions the counter sets besides the metric.
	Dims []Dimension `json:"dims"`
}

// Metrics returns the counters Nudge counts, in a stable order; a report
// of another name is refused.
func Metrics() []Metric {
	app := []Dimension{DimApp}
	return []Metric{
		{counters.MessagesSent, "Message events applied", app},
		{counters.RecipientsFanned, "Recipients of applied messages", app},
		{counters.Mentions, "Mentions in applied messages", app},
		{counters.Reads, "Read events applied", app},
		{counters.EpisodesOpened, "Unread episodes opened", app},
		{counters.EpisodesClosed, "Unread episodes ended by a read", app},
		{counters.PresenceEvents, "Presence events applied", app},
		{counters.DeviceEvents, "Device registered/removed events applied", app},
		{counters.PrefsEvents, "Preference events applied", app},
		{counters.Duplicates, "Events re-published with an id already applied", app},
		{counters.DeadLettered, "Entries sent to the dead-letter stream, by reason", []Dimension{DimApp, DimReason}},
		{counters.EventsApplied, "Every applied event, any type", app},
		{counters.RemindersQueued, "Reminder tasks scheduled", app},
		{counters.RemindersCancel, "Reminders cancelled by a read", app},
		{counters.RemindersSuppr, "Reminders dropped (muted, mentions only, no devices, digested), by reason", []Dimension{DimApp, DimReason}},
		{counters.RemindersDefer, "Reminders put off (online, quiet hours, rate limit), by reason", []Dimension{DimApp, DimReason}},
		{counters.RemindersSent, "Reminders delivered to at least one device", app},
		{counters.RemindersFailed, "Reminders that no device accepted", app},
		{counters.PushSent, "Pushes accepted by a provider, by platform", []Dimension{DimApp, DimPlatform}},
		{counters.PushFailed, "Pushes failed, by platform and reason", []Dimension{DimApp, DimPlatform, DimReason}},
		{counters.PushUnknown, "Pushes whose answer was lost (maybe delivered, never sent again), by platform and reason", []Dimension{DimApp, DimPlatform, DimReason}},
		{counters.TokensRemoved, "Device tokens removed as invalid, by platform", []Dimension{DimApp, DimPlatform, DimReason}},
		{counters.OpenedEvents, "notification.opened events applied", app},
		{counters.RemindersPushed, "Reminders pushed to at least one device, by the platform reached and stage (reason)", []Dimension{DimApp, DimPlatform, DimReason}},
		{counters.RemindersOpened, "Reminders opened, once each, by platform and stage (reason)", []Dimension{DimApp, DimPlatform, DimReason}},
		{counters.RemindersConverted, "Reminders whose conversation was read within the conversion window, by platform and stage (reason)", []Dimension{DimApp, DimPlatform, DimReason}},
		{counters.ReadDelay, "Conversions by time from push to read: reason stage:upper bound in seconds", []Dimension{DimApp, DimPlatform, DimReason}},
	}
}

// FunnelMetrics are the steps of the reminder funnel, in order.
var FunnelMetrics = []string{
	counters.EpisodesOpened,
	counters.RemindersQueued,
	counters.RemindersCancel,
	counters.RemindersSuppr,
	counters.RemindersSent,
	counters.PushFailed,
}

// funnelBases are the counters the funnel's shares are parts of, besides
// its steps.
var funnelBases = []string{counters.RemindersFailed, counters.PushSent}

// EffectivenessMetrics are the counters of the effectiveness report.
var EffectivenessMetrics = []string{counters.RemindersPushed, counters.RemindersOpened, counters.RemindersConverted, counters.ReadDelay}

// pushMetrics are the counters of the push report.
var pushMetrics = []string{counters.PushSent, counters.PushFailed, counters.PushUnknown, counters.TokensRemoved}

// truncate shortens a value quoted in an error message.
func truncate(s string) string {
	const maxLen = 64
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "…"
}
