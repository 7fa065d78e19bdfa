package report

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Tables of the counters. Queries name them from these constants only.
const (
	tableMinute = "counters_minute"
	tableHour   = "counters_hour"
	tableDay    = "counters_day"
)

// LoadLocation returns the IANA time zone name; "" and "UTC" are UTC.
// "Local" is refused: the server's zone is not a meaningful report zone.
func LoadLocation(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if name == "Local" || len(name) > 64 {
		return nil, paramErr("tz", "%q is not an IANA time zone (Europe/Berlin, UTC)", truncate(name))
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, paramErr("tz", "%q is not an IANA time zone (Europe/Berlin, UTC)", truncate(name))
	}
	return loc, nil
}

// maxRelativeDays bounds "-Nd" and "-Nw": a century.
const maxRelativeDays = 36525

var errTimeSyntax = errors.New(`want "now", a relative time ("-24h", "-90m", "-7d", "-2w"), an RFC 3339 time, a date (2006-01-02) or a local time (2006-01-02T15:04)`)

// ParseTime parses a time of a report query:
//
//   - "now";
//   - a time relative to now: a sign then a Go duration ("-24h", "-1h30m",
//     "+15m") or a number of calendar days or weeks in loc ("-7d", "-2w"),
//     optionally after "now" ("now-24h");
//   - an RFC 3339 time ("2026-03-29T00:00:00+01:00", "2026-03-29T00:00:00Z");
//   - a date ("2026-03-29"), meaning its midnight in loc;
//   - a wall time in loc without offset ("2026-03-29T08:00" or with seconds).
func ParseTime(s string, now time.Time, loc *time.Location) (time.Time, error) {
	if loc == nil {
		loc = time.UTC
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errTimeSyntax
	}
	rel := strings.TrimPrefix(s, "now")
	if rel == "" {
		return now, nil
	}
	if rel[0] == '-' || rel[0] == '+' {
		return parseRelative(rel, now, loc)
	}
	if rel != s { // "now" followed by something else
		return time.Time{}, errTimeSyntax
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{time.DateOnly, "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errTimeSyntax
}

func parseRelative(rel string, now time.Time, loc *time.Location) (time.Time, error) {
	sign := 1
	if rel[0] == '-' {
		sign = -1
	}
	body := rel[1:]
	if n := len(body); n >= 2 && (body[n-1] == 'd' || body[n-1] == 'w') {
		if k, err := strconv.Atoi(body[:n-1]); err == nil && k >= 0 {
			days := k
			if body[n-1] == 'w' {
				days = 7 * k
			}
			if days > maxRelativeDays {
				return time.Time{}, fmt.Errorf("%q is more than a century away", rel)
			}
			return now.In(loc).AddDate(0, 0, sign*days), nil
		}
	}
	d, err := time.ParseDuration(body)
	if err != nil || d < 0 || strings.ContainsAny(body, "+-") {
		return time.Time{}, errTimeSyntax
	}
	if d > maxRelativeDays*24*time.Hour {
		return time.Time{}, fmt.Errorf("%q is more than a century away", rel)
	}
	return now.Add(time.Duration(sign) * d), nil
}

// floorSeconds returns the start of the size-second bucket of t in a zone
// whose offset at t is off seconds.
func floorSeconds(t time.Time, off int, size int64) time.Time {
	sec := t.Unix()
	r := (sec + int64(off)) % size
	if r < 0 {
		r += size
	}
	return time.Unix(sec-r, 0)
}

// truncStep returns the start, in loc, of the step bucket that holds t.
func truncStep(t time.Time, step Step, loc *time.Location) time.Time {
	lt := t.In(loc)
	_, off := lt.Zone()
	switch step {
	case StepMinute:
		return floorSeconds(t, off, 60).In(loc)
	case StepHour:
		return floorSeconds(t, off, 3600).In(loc)
	default:
		y, m, d := lt.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, loc)
	}
}

// nextStep returns the start of the bucket after the one that starts at b.
func nextStep(b time.Time, step Step, loc *time.Location) time.Time {
	var n time.Time
	switch step {
	case StepMinute:
		return b.Add(time.Minute)
	case StepHour:
		n = truncStep(b.Add(time.Hour), StepHour, loc)
		if !n.After(b) { // a zone whose offset moved by less than an hour
			n = b.Add(time.Hour)
		}
	default:
		y, m, d := b.In(loc).Date()
		n = time.Date(y, m, d+1, 0, 0, 0, 0, loc)
		if !n.After(b) {
			n = b.Add(24 * time.Hour)
		}
	}
	return n
}

// ceilStep returns t if it starts a bucket, else the start of the next one.
func ceilStep(t time.Time, step Step, loc *time.Location) time.Time {
	b := truncStep(t, step, loc)
	if b.Equal(t) {
		return b
	}
	return nextStep(b, step, loc)
}

// buckets returns the starts of the buckets from start (a bucket start) to
// end (excluded). It stops after limit+1 buckets: more than limit means
// too many.
func buckets(start, end time.Time, step Step, loc *time.Location, limit int) []time.Time {
	var out []time.Time
	for b := start; b.Before(end) && len(out) <= limit; b = nextStep(b, step, loc) {
		out = append(out, b)
	}
	return out
}

// sourceTable returns the finest-needed table for buckets of step in loc
// over [from, to): a rollup only where its UTC buckets nest exactly in the
// local buckets.
func sourceTable(step Step, loc *time.Location, from, to time.Time) string {
	if step == StepMinute {
		return tableMinute
	}
	zero, wholeHours := offsetsIn(loc, from, to)
	switch {
	case step == StepDay && zero:
		return tableDay
	case wholeHours:
		return tableHour
	default:
		return tableMinute
	}
}

// offsetsIn reports whether loc's UTC offset is zero, and whether it is a
// whole number of hours, at every instant of [from, to).
func offsetsIn(loc *time.Location, from, to time.Time) (zero, wholeHours bool) {
	zero, wholeHours = true, true
	t := from.In(loc)
	for range 100_000 { // zone periods; a bound in case of a broken zone file
		_, off := t.Zone()
		zero = zero && off == 0
		wholeHours = wholeHours && off%3600 == 0
		_, end := t.ZoneBounds()
		if end.IsZero() || !end.Before(to) {
			return zero, wholeHours
		}
		t = end
	}
	return false, false
}

// span is a half-open range of instants [from, to) read from one table.
type span struct{ from, to time.Time }

func (s span) empty() bool { return !s.from.Before(s.to) }

// spans splits [from, to), whole UTC minutes, into the ranges each table
// serves exactly: the whole UTC days in the middle from counters_day, the
// whole hours around them from counters_hour, the minutes at the edges
// from counters_minute. Empty spans have from == to.
func spans(from, to time.Time) (minutes, hours [2]span, days span) {
	h1 := ceilUTC(from, time.Hour)
	h2 := to.Truncate(time.Hour)
	if !h1.Before(h2) {
		return [2]span{{from, to}, {to, to}}, [2]span{{to, to}, {to, to}}, span{to, to}
	}
	minutes = [2]span{{from, h1}, {h2, to}}
	d1 := ceilUTC(h1, 24*time.Hour)
	d2 := h2.Truncate(24 * time.Hour)
	if !d1.Before(d2) {
		return minutes, [2]span{{h1, h2}, {h2, h2}}, span{h2, h2}
	}
	return minutes, [2]span{{h1, d1}, {d2, h2}}, span{d1, d2}
}

// ceilUTC rounds t up to a multiple of d counted from the zero time (UTC
// midnights and hours for d = 24h and 1h).
func ceilUTC(t time.Time, d time.Duration) time.Time {
	f := t.Truncate(d)
	if f.Equal(t) {
		return f
	}
	return f.Add(d)
}
