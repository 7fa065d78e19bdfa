package report

// The answers of the Store's queries: what the API serves as JSON (and,
// through csv.go, as CSV).

import "time"

// Range is what a sum over a range answers for: the range (From included,
// To excluded), the filter, and whether the counters not yet flushed are
// in (Live). Its fields are the first of the answer's JSON.
type Range struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Filter Filter    `json:"filter"`
	Live   bool      `json:"live"`
}

// StageEffect is what the reminders of one stage of the ladder did.
type StageEffect struct {
	Stage int `json:"stage"`
	// Pushed counts the reminders of the stage pushed to at least one
	// device; Opened those the app reported opened; Converted those whose
	// conversation was read within the conversion window after the push.
	Pushed    int64 `json:"pushed"`
	Opened    int64 `json:"opened"`
	Converted int64 `json:"converted"`
	// OpenRate and ConversionRate are parts of Pushed (base
	// BaseStagePushed), at most 1: an open or a read in the range of a
	// reminder pushed before it counts, and so a short range may find more
	// opens than pushes; the rate is then 1.
	OpenRate       float64 `json:"open_rate"`
	ConversionRate float64 `json:"conversion_rate"`
	Base           string  `json:"base"`
	// MedianReadSeconds is the median time from push to read of the
	// conversions, from a histogram (reminder_read_seconds); -1 without
	// conversions.
	MedianReadSeconds float64 `json:"median_read_seconds"`
	Live              bool    `json:"live"`
}

// BaseStagePushed is the base of the effectiveness rates.
const BaseStagePushed = "reminders of the stage pushed in the range"

// Effectiveness is the effectiveness report over a range: per stage, the
// reminders pushed, opened and converted. Platform filters by the platform
// a reminder reached ("several": both).
type Effectiveness struct {
	Range
	Stages []StageEffect `json:"stages"`
}

// Point is one bucket of a series.
type Point struct {
	// Time is the start of the bucket.
	Time time.Time `json:"t"`
	// Value is the sum of the counter over the bucket.
	Value int64 `json:"v"`
	// Live reports that counters not yet flushed to Postgres (read from
	// Redis) are part of Value.
	Live bool `json:"live"`
}

// Group is the series of one value of the grouping dimension (or the only
// series of an ungrouped query, whose Key is "").
type Group struct {
	Key    string  `json:"key"`
	Total  int64   `json:"total"`
	Points []Point `json:"points"`
}

// Series is the answer to a SeriesQuery.
type Series struct {
	Metric string `json:"metric"`
	Step   Step   `json:"step"`
	TZ     string `json:"tz"`
	// From and To are the query's range aligned to whole buckets: From
	// is the start of the first bucket, To the end of the last.
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Filter Filter    `json:"filter"`
	Group  Dimension `json:"group,omitempty"`
	// Source is the table the buckets were summed from.
	Source string `json:"source"`
	Live   bool   `json:"live"`
	// Total is the sum over every group and bucket.
	Total int64 `json:"total"`
	// Groups holds one series per group, largest total first; one series
	// with Key "" if the query is not grouped. Every bucket of the range
	// has a point, zero if nothing was counted.
	Groups []Group `json:"series"`
}

// Total is the sum of one metric (and group) over a range.
type Total struct {
	Metric string `json:"metric"`
	Key    string `json:"key,omitempty"`
	Value  int64  `json:"value"`
	Live   bool   `json:"live"`
}

// Totals is the answer to a TotalsQuery.
type Totals struct {
	Range
	Group Dimension `json:"group,omitempty"`
	// Totals holds a row per metric in query order, zero if nothing was
	// counted; grouped, a row per metric and group that counted something.
	Totals []Total `json:"totals"`
}

// FunnelStep is one step of the reminder funnel.
type FunnelStep struct {
	Metric string `json:"metric"`
	Value  int64  `json:"value"`
	// Share is Value as a part of Base, a total that includes it (so never
	// over 1); 0 with Base "" for a step that is no part of a total (the
	// episodes opened; the reminders scheduled, which count every stage).
	Share float64 `json:"share"`
	// Base says what Share is a part of, in words.
	Base string `json:"base"`
	Live bool   `json:"live"`
}

// The bases of the funnel's shares.
const (
	BaseRemindersEnded = "reminders that ended in the range (sent, cancelled, suppressed or failed)"
	BasePushes         = "pushes tried in the range (sent or failed)"
)

// Funnel is the reminder funnel over a range: FunnelMetrics in order.
type Funnel struct {
	Range
	Steps []FunnelStep `json:"steps"`
}

// PushPlatform sums the pushes of one platform.
type PushPlatform struct {
	Platform      string `json:"platform"`
	Sent          int64  `json:"sent"`
	Failed        int64  `json:"failed"`
	Unknown       int64  `json:"unknown"` // answer lost: maybe delivered, not sent again
	TokensRemoved int64  `json:"tokens_removed"`
	// SuccessRate is Sent / (Sent + Failed), 0 without pushes.
	SuccessRate float64 `json:"success_rate"`
	Live        bool    `json:"live"`
}

// PushFailure counts the failed pushes of one platform and reason.
type PushFailure struct {
	Platform string `json:"platform"`
	Reason   string `json:"reason"`
	Count    int64  `json:"count"`
}

// Push is the push report over a range.
type Push struct {
	Range
	Platforms []PushPlatform `json:"platforms"`
	Failures  []PushFailure  `json:"failures"`
}

// DAUPoint is the distinct active users of one UTC day.
type DAUPoint struct {
	// Day is the UTC day, "2006-01-02".
	Day   string `json:"day"`
	Users int64  `json:"users"`
}

// DAUGroup is the daily active users of one app, or of every app (Key "").
type DAUGroup struct {
	Key    string     `json:"key"`
	Peak   int64      `json:"peak"`
	Latest int64      `json:"latest"`
	Points []DAUPoint `json:"points"`
}

// DAU is the answer to a DAUQuery.
type DAU struct {
	// From and To are the first and last day, both included.
	From   string     `json:"from"`
	To     string     `json:"to"`
	App    string     `json:"app,omitempty"`
	ByApp  bool       `json:"by_app"`
	Groups []DAUGroup `json:"series"`
}

// Dimensions lists the values of the app and platform dimensions seen in a
// range, for filter pickers.
type Dimensions struct {
	Apps      []string `json:"apps"`
	Platforms []string `json:"platforms"`
}
