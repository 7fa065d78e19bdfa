package report

// Sums over a range: totals, the reminder funnel, reminder effectiveness
// and the push report.

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nudgehq/nudge/counters"
)

// TotalsQuery asks for the sums of metrics over a range.
type TotalsQuery struct {
	Metrics []string
	// From and To bound the range; From is rounded down and To up to whole
	// minutes.
	From, To time.Time
	Filter   Filter
	// Group splits each metric's total by a dimension. Default DimNone.
	Group Dimension
	// Live adds the counters not yet flushed from Redis.
	Live bool
}

// totalsSQL sums each counter over a range split into the spans each table
// serves exactly (see spans).
const totalsSQL = `SELECT metric, app, platform, reason, sum(value)::bigint FROM (
    SELECT metric, app, platform, reason, value FROM counters_minute
    WHERE metric = ANY(@metrics) AND ((bucket >= @m1 AND bucket < @m2) OR (bucket >= @m3 AND bucket < @m4))
    UNION ALL
    SELECT metric, app, platform, reason, value FROM counters_hour
    WHERE metric = ANY(@metrics) AND ((bucket >= @h1 AND bucket < @h2) OR (bucket >= @h3 AND bucket < @h4))
    UNION ALL
    SELECT metric, app, platform, reason, value FROM counters_day
    WHERE metric = ANY(@metrics) AND bucket >= @d1 AND bucket < @d2
) c
WHERE (@app::text IS NULL OR app = @app)
    AND (@platform::text IS NULL OR platform = @platform)
    AND (@reason::text IS NULL OR reason = @reason)
GROUP BY metric, app, platform, reason`

// sums returns the sum of every counter of metrics over [from, to) rounded
// out to whole minutes, by full dimensions, and the rounded range.
func (s *Store) sums(ctx context.Context, metrics []string, from, to time.Time, f Filter, live bool) (map[counters.Dims]*cell, time.Time, time.Time, error) {
	if err := f.validate(); err != nil {
		return nil, from, to, err
	}
	if err := validRange(from, to); err != nil {
		return nil, from, to, err
	}
	from = from.Truncate(time.Minute)
	to = ceilUTC(to, time.Minute)
	mins, hours, days := spans(from, to)
	want := map[string]bool{}
	for _, m := range metrics {
		want[m] = true
	}
	out := map[counters.Dims]*cell{}
	add := func(d counters.Dims, v int64, live bool) {
		c := out[d]
		if c == nil {
			c = &cell{}
			out[d] = c
		}
		c.add(v, live)
	}
	err := s.read(ctx, live, from, to, func(db querier, l *liveData) error {
		rows, err := db.Query(ctx, totalsSQL, pgx.NamedArgs{
			"metrics": metrics,
			"m1":      mins[0].from, "m2": mins[0].to, "m3": mins[1].from, "m4": mins[1].to,
			"h1": hours[0].from, "h2": hours[0].to, "h3": hours[1].from, "h4": hours[1].to,
			"d1": days.from, "d2": days.to,
			"app": nullable(f.App), "platform": nullable(f.Platform), "reason": nullable(f.Reason),
		})
		if err != nil {
			return err
		}
		var (
			d counters.Dims
			v int64
		)
		_, err = pgx.ForEachRow(rows, []any{&d.Metric, &d.App, &d.Platform, &d.Reason, &v}, func() error {
			add(d, v, false)
			return nil
		})
		if err != nil {
			return err
		}
		l.each(want, f, from, to, func(_ time.Time, d counters.Dims, v int64) { add(d, v, true) })
		return nil
	})
	if err != nil {
		return nil, from, to, err
	}
	return out, from, to, nil
}

// Totals returns the sum of each metric of q over the range: a row per
// metric, or per metric and group.
func (s *Store) Totals(ctx context.Context, q TotalsQuery) (*Totals, error) {
	if len(q.Metrics) == 0 {
		return nil, paramErr("metric", "at least one metric is required (GET /api/metrics lists them)")
	}
	if len(q.Metrics) > maxMetrics {
		return nil, paramErr("metric", "at most %d metrics, not %d", maxMetrics, len(q.Metrics))
	}
	var metrics []string
	for _, m := range q.Metrics {
		if err := validMetric("metric", m); err != nil {
			return nil, err
		}
		if !slices.Contains(metrics, m) {
			metrics = append(metrics, m)
		}
	}
	if _, err := ParseDimension(string(q.Group)); err != nil {
		return nil, err
	}
	sums, from, to, err := s.sums(ctx, metrics, q.From, q.To, q.Filter, q.Live)
	if err != nil {
		return nil, fmt.Errorf("totals: %w", err)
	}
	type key struct{ metric, group string }
	byKey := map[key]*cell{}
	for d, c := range sums {
		k := key{d.Metric, q.Group.of(d)}
		if byKey[k] == nil {
			byKey[k] = &cell{}
		}
		byKey[k].add(c.v, c.live)
	}
	out := &Totals{Range: Range{From: from, To: to, Filter: q.Filter, Live: q.Live}, Group: q.Group, Totals: []Total{}}
	for _, m := range metrics {
		if q.Group == DimNone {
			t := Total{Metric: m}
			if c := byKey[key{m, ""}]; c != nil {
				t.Value, t.Live = c.v, c.live
			}
			out.Totals = append(out.Totals, t)
			continue
		}
		var rows []Total
		for k, c := range byKey {
			if k.metric == m {
				rows = append(rows, Total{Metric: m, Key: k.group, Value: c.v, Live: c.live})
			}
		}
		slices.SortFunc(rows, func(a, b Total) int {
			return cmp.Or(cmp.Compare(b.Value, a.Value), strings.Compare(a.Key, b.Key))
		})
		out.Totals = append(out.Totals, rows...)
	}
	return out, nil
}

// RangeQuery asks for a report over a range: the funnel or push report.
type RangeQuery struct {
	// From and To bound the range; From is rounded down and To up to whole
	// minutes.
	From, To time.Time
	Filter   Filter
	// Live adds the counters not yet flushed from Redis.
	Live bool
}

// Funnel returns the reminder funnel over the range: the total of each of
// FunnelMetrics.
func (s *Store) Funnel(ctx context.Context, q RangeQuery) (*Funnel, error) {
	sums, from, to, err := s.sums(ctx, append(slices.Clone(FunnelMetrics), funnelBases...), q.From, q.To, q.Filter, q.Live)
	if err != nil {
		return nil, fmt.Errorf("funnel: %w", err)
	}
	byMetric := map[string]*cell{}
	for d, c := range sums {
		if byMetric[d.Metric] == nil {
			byMetric[d.Metric] = &cell{}
		}
		byMetric[d.Metric].add(c.v, c.live)
	}
	value := func(m string) int64 {
		if c := byMetric[m]; c != nil {
			return c.v
		}
		return 0
	}
	// Every reminder scheduled ends once: sent, cancelled, suppressed or
	// failed (deferrals are the same reminder, later). Those four are parts
	// of their sum, whatever the range cuts.
	ended := value(counters.RemindersSent) + value(counters.RemindersCancel) + value(counters.RemindersSuppr) + value(counters.RemindersFailed)
	pushes := value(counters.PushSent) + value(counters.PushFailed)
	out := &Funnel{Range: Range{From: from, To: to, Filter: q.Filter, Live: q.Live}}
	for _, m := range FunnelMetrics {
		st := FunnelStep{Metric: m, Value: value(m)}
		if c := byMetric[m]; c != nil {
			st.Live = c.live
		}
		switch m {
		case counters.RemindersSent, counters.RemindersCancel, counters.RemindersSuppr:
			st.Base, st.Share = BaseRemindersEnded, part(st.Value, ended)
		case counters.PushFailed:
			st.Base, st.Share = BasePushes, part(st.Value, pushes)
		}
		out.Steps = append(out.Steps, st)
	}
	return out, nil
}

// part returns v as a part of total, at most 1; 0 for a total of 0.
func part(v, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return min(1, float64(v)/float64(total))
}

// Effectiveness returns, per stage, the reminders pushed, opened and
// converted over the range, with their rates and the median time from push
// to read.
func (s *Store) Effectiveness(ctx context.Context, q RangeQuery) (*Effectiveness, error) {
	sums, from, to, err := s.sums(ctx, EffectivenessMetrics, q.From, q.To, q.Filter, q.Live)
	if err != nil {
		return nil, fmt.Errorf("effectiveness: %w", err)
	}
	stages := map[int]*StageEffect{}
	hist := map[int]map[int]int64{} // stage -> bucket upper bound (s) -> conversions
	for d, c := range sums {
		stageText, bucket, _ := strings.Cut(d.Reason, ":")
		stage, err := strconv.Atoi(stageText)
		if err != nil || stage < 1 {
			continue
		}
		st := stages[stage]
		if st == nil {
			st = &StageEffect{Stage: stage, Base: BaseStagePushed, MedianReadSeconds: -1}
			stages[stage] = st
		}
		st.Live = st.Live || c.live
		switch d.Metric {
		case counters.RemindersPushed:
			st.Pushed += c.v
		case counters.RemindersOpened:
			st.Opened += c.v
		case counters.RemindersConverted:
			st.Converted += c.v
		case counters.ReadDelay:
			le, err := strconv.Atoi(bucket)
			if err != nil {
				continue
			}
			if hist[stage] == nil {
				hist[stage] = map[int]int64{}
			}
			hist[stage][le] += c.v
		}
	}
	out := &Effectiveness{Range: Range{From: from, To: to, Filter: q.Filter, Live: q.Live}, Stages: []StageEffect{}}
	for _, stage := range slices.Sorted(maps.Keys(stages)) {
		st := stages[stage]
		st.OpenRate, st.ConversionRate = part(st.Opened, st.Pushed), part(st.Converted, st.Pushed)
		st.MedianReadSeconds = medianOf(hist[stage])
		out.Stages = append(out.Stages, *st)
	}
	return out, nil
}

// medianOf estimates the median of a histogram of upper bounds (seconds)
// -> counts, interpolating within the bucket it falls in; -1 when empty.
func medianOf(h map[int]int64) float64 {
	var total int64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return -1
	}
	half := float64(total) / 2
	var seen int64
	lower := 0
	for _, le := range counters.ReadDelayBuckets {
		n := h[le]
		if n > 0 && float64(seen+n) >= half {
			return float64(lower) + (half-float64(seen))/float64(n)*float64(le-lower)
		}
		seen += n
		lower = le
	}
	return float64(lower)
}

// Push returns the pushes sent and failed and the tokens removed, by
// platform, and the failures by platform and reason.
func (s *Store) Push(ctx context.Context, q RangeQuery) (*Push, error) {
	sums, from, to, err := s.sums(ctx, pushMetrics, q.From, q.To, q.Filter, q.Live)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	platforms := map[string]*PushPlatform{}
	failures := map[[2]string]int64{}
	for d, c := range sums {
		p := platforms[d.Platform]
		if p == nil {
			p = &PushPlatform{Platform: d.Platform}
			platforms[d.Platform] = p
		}
		p.Live = p.Live || c.live
		switch d.Metric {
		case counters.PushSent:
			p.Sent += c.v
		case counters.PushFailed:
			p.Failed += c.v
			failures[[2]string{d.Platform, d.Reason}] += c.v
		case counters.PushUnknown:
			p.Unknown += c.v
		case counters.TokensRemoved:
			p.TokensRemoved += c.v
		}
	}
	out := &Push{Range: Range{From: from, To: to, Filter: q.Filter, Live: q.Live}, Platforms: []PushPlatform{}, Failures: []PushFailure{}}
	for _, name := range slices.Sorted(maps.Keys(platforms)) {
		p := platforms[name]
		if n := p.Sent + p.Failed; n > 0 {
			p.SuccessRate = float64(p.Sent) / float64(n)
		}
		out.Platforms = append(out.Platforms, *p)
	}
	for k, n := range failures {
		out.Failures = append(out.Failures, PushFailure{Platform: k[0], Reason: k[1], Count: n})
	}
	slices.SortFunc(out.Failures, func(a, b PushFailure) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Platform, b.Platform), strings.Compare(a.Reason, b.Reason))
	})
	return out, nil
}
