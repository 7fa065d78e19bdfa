package report

// Series: one metric, a point per bucket of a step in a time zone.

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nudgehq/nudge/counters"
)

// SeriesQuery asks for the time series of one metric.
type SeriesQuery struct {
	Metric string
	// From and To bound the series; From is rounded down and To up to
	// whole buckets of Step in Location.
	From, To time.Time
	// Step is the width of a bucket. Default StepHour.
	Step Step
	// Location is the time zone whose minutes, hours and midnights start
	// the buckets. Default UTC.
	Location *time.Location
	Filter   Filter
	// Group splits the series by a dimension. Default DimNone.
	Group Dimension
	// Live adds the counters not yet flushed from Redis.
	Live bool
}

// seriesSQL holds the series query of each table. Only the table name
// differs; it is one of the table constants, never input.
var seriesSQL = func() map[string]string {
	const query = `SELECT date_trunc(@step, bucket, @tz) AS b,
    CASE @group::text WHEN 'app' THEN app WHEN 'platform' THEN platform WHEN 'reason' THEN reason ELSE '' END AS key,
    sum(value)::bigint
FROM %s
WHERE metric = @metric AND bucket >= @from AND bucket < @to
    AND (@app::text IS NULL OR app = @app)
    AND (@platform::text IS NULL OR platform = @platform)
    AND (@reason::text IS NULL OR reason = @reason)
GROUP BY 1, 2`
	m := map[string]string{}
	for _, t := range []string{tableMinute, tableHour, tableDay} {
		m[t] = fmt.Sprintf(query, t)
	}
	return m
}()

// cell is a value and whether live counters are part of it.
type cell struct {
	v    int64
	live bool
}

func (c *cell) add(v int64, live bool) {
	c.v += v
	c.live = c.live || live
}

// Series returns the time series of q.Metric: a point per bucket, and per
// group if q.Group is set.
func (s *Store) Series(ctx context.Context, q SeriesQuery) (*Series, error) {
	q.Step = cmp.Or(q.Step, StepHour)
	if q.Location == nil {
		q.Location = time.UTC
	}
	if err := validMetric("metric", q.Metric); err != nil {
		return nil, err
	}
	if _, err := ParseStep(string(q.Step)); err != nil {
		return nil, err
	}
	if _, err := ParseDimension(string(q.Group)); err != nil {
		return nil, err
	}
	if err := q.Filter.validate(); err != nil {
		return nil, err
	}
	if err := validRange(q.From, q.To); err != nil {
		return nil, err
	}
	loc := q.Location
	start := truncStep(q.From, q.Step, loc)
	end := ceilStep(q.To, q.Step, loc)
	bs := buckets(start, end, q.Step, loc, s.maxPoints)
	if len(bs) > s.maxPoints {
		return nil, paramErr("step", "from %s to %s holds more than %d %s buckets: narrow the range or use a larger step",
			start.Format(time.RFC3339), end.Format(time.RFC3339), s.maxPoints, q.Step)
	}
	table := sourceTable(q.Step, loc, start, end)

	groups := map[string]map[int64]*cell{}
	extra := map[int64]time.Time{} // buckets Postgres made that Go did not (time zone data differing)
	add := func(key string, b time.Time, v int64, live bool) {
		g := groups[key]
		if g == nil {
			g = map[int64]*cell{}
			groups[key] = g
		}
		c := g[b.Unix()]
		if c == nil {
			c = &cell{}
			g[b.Unix()] = c
		}
		c.add(v, live)
		extra[b.Unix()] = b
	}
	err := s.read(ctx, q.Live, start, end, func(db querier, l *liveData) error {
		rows, err := db.Query(ctx, seriesSQL[table], pgx.NamedArgs{
			"step": string(q.Step), "tz": loc.String(), "group": string(q.Group), "metric": q.Metric,
			"from": start, "to": end,
			"app": nullable(q.Filter.App), "platform": nullable(q.Filter.Platform), "reason": nullable(q.Filter.Reason),
		})
		if err != nil {
			return err
		}
		var (
			b   time.Time
			key string
			v   int64
		)
		_, err = pgx.ForEachRow(rows, []any{&b, &key, &v}, func() error {
			add(key, b.In(loc), v, false)
			return nil
		})
		if err != nil {
			return err
		}
		l.each(map[string]bool{q.Metric: true}, q.Filter, start, end, func(minute time.Time, d counters.Dims, v int64) {
			add(q.Group.of(d), truncStep(minute, q.Step, loc), v, true)
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("series %s: %w", q.Metric, err)
	}

	for _, b := range bs {
		delete(extra, b.Unix())
	}
	if len(extra) > 0 {
		bs = slices.SortedFunc(func(yield func(time.Time) bool) {
			for _, b := range bs {
				if !yield(b) {
					return
				}
			}
			for _, b := range extra {
				if !yield(b) {
					return
				}
			}
		}, func(a, b time.Time) int { return a.Compare(b) })
	}
	if q.Group == DimNone && len(groups) == 0 {
		groups[""] = map[int64]*cell{}
	}
	if n := len(groups) * len(bs); n > s.maxPoints {
		return nil, paramErr("group", "%d groups of %d buckets make %d points, more than %d: filter, narrow the range or use a larger step",
			len(groups), len(bs), n, s.maxPoints)
	}

	out := &Series{
		Metric: q.Metric, Step: q.Step, TZ: loc.String(), From: start, To: end,
		Filter: q.Filter, Group: q.Group, Source: table, Live: q.Live,
		Groups: make([]Group, 0, len(groups)),
	}
	for key, cells := range groups {
		g := Group{Key: key, Points: make([]Point, len(bs))}
		for i, b := range bs {
			p := Point{Time: b}
			if c := cells[b.Unix()]; c != nil {
				p.Value, p.Live = c.v, c.live
			}
			g.Points[i] = p
			g.Total += p.Value
		}
		out.Total += g.Total
		out.Groups = append(out.Groups, g)
	}
	slices.SortFunc(out.Groups, func(a, b Group) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.Key, b.Key))
	})
	return out, nil
}
