package report

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
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/keys"
)

// DefaultMaxPoints is StoreConfig.MaxPoints when zero.
const DefaultMaxPoints = 10_000

// maxMetrics bounds the metrics of one totals query.
const maxMetrics = 50

// StoreConfig configures a Store. The zero value means defaults.
type StoreConfig struct {
	// Redis is where live queries read the counters the flusher has not
	// moved to Postgres yet. Default nil: live queries fail with a
	// ParamError.
	Redis redis.UniversalClient
	// Keyspace names the Redis keys: the prefix and shard count ingest
	// uses. Default keys.New("", 0): prefix "nudge", 8 shards; a zero
	// field takes its default alone.
	Keyspace keys.Keyspace
	// MaxPoints bounds the points of one answer: buckets times groups of a
	// series, days times apps of daily active users. A query over it fails
	// with a ParamError. Default DefaultMaxPoints (10000).
	MaxPoints int
}

// Store answers report queries from the counters tables in Postgres and,
// in live mode, from the counters still in Redis. Its methods are safe for
// concurrent use. It only reads: a role with SELECT on the counters tables,
// daily_active_users and flushes is enough (README.md).
type Store struct {
	db        *pgxpool.Pool
	rdb       redis.UniversalClient
	ks        keys.Keyspace
	maxPoints int

	// afterLiveRead, if set, runs between the Redis and Postgres reads of
	// a live query. Tests set it (export_test.go) to race the flusher.
	afterLiveRead func()
}

// NewStore returns a Store reading the database db, whose schema must be
// migrated (package schema).
func NewStore(db *pgxpool.Pool, cfg StoreConfig) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: a Postgres pool is required", ErrConfig)
	}
	if cfg.MaxPoints < 0 || cfg.Keyspace.Shards < 0 {
		return nil, fmt.Errorf("%w: negative MaxPoints or shard count", ErrConfig)
	}
	cfg.MaxPoints = cmp.Or(cfg.MaxPoints, DefaultMaxPoints)
	return &Store{
		db:        db,
		rdb:       cfg.Redis,
		ks:        keys.New(cfg.Keyspace.Prefix, cfg.Keyspace.Shards),
		maxPoints: cfg.MaxPoints,
	}, nil
}

// HasLive reports whether the Store can answer live queries.
func (s *Store) HasLive() bool { return s.rdb != nil }

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.Ping(ctx) }

// querier is what report queries run on: the pool, or the transaction of a
// live read.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// read runs fn on the database. Live, it first reads Redis for the minutes
// of [from, to), then runs fn in a read-only repeatable-read transaction
// whose snapshot also decides which Redis counters Postgres already has;
// fn gets the rest.
func (s *Store) read(ctx context.Context, live bool, from, to time.Time, fn func(q querier, l *liveData) error) error {
	if !live {
		return fn(s.db, nil)
	}
	l, err := s.readLive(ctx, from, to)
	if err != nil {
		return err
	}
	if s.afterLiveRead != nil {
		s.afterLiveRead()
	}
	return pgx.BeginTxFunc(ctx, s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := l.dropApplied(ctx, tx); err != nil {
			return err
		}
		return fn(tx, l)
	})
}

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

func validRange(from, to time.Time) error {
	if from.IsZero() || to.IsZero() {
		return paramErr("from", "from and to are required")
	}
	if !from.Before(to) {
		return paramErr("from", "must be before to (from %s, to %s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return nil
}

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
	out := &Totals{From: from, To: to, Filter: q.Filter, Group: q.Group, Live: q.Live, Totals: []Total{}}
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
	out := &Funnel{From: from, To: to, Filter: q.Filter, Live: q.Live}
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
	out := &Effectiveness{From: from, To: to, Filter: q.Filter, Live: q.Live, Stages: []StageEffect{}}
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
	out := &Push{From: from, To: to, Filter: q.Filter, Live: q.Live, Platforms: []PushPlatform{}, Failures: []PushFailure{}}
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

// DAUQuery asks for daily active users.
type DAUQuery struct {
	// From and To bound the range: the days are the dates in Location
	// from From's to the one just before To, both included.
	From, To time.Time
	// Location is the time zone that turns From and To into dates.
	// Default UTC. The days themselves are UTC days: the flusher counts
	// active users per UTC day.
	Location *time.Location
	// App keeps one app. Default "": every app.
	App string
	// ByApp gives a series per app instead of their sum.
	ByApp bool
}

const dauSQL = `SELECT day, CASE WHEN @by_app THEN app ELSE '' END AS key, sum(users)::bigint
FROM daily_active_users
WHERE day >= @first AND day <= @last AND (@app::text IS NULL OR app = @app)
GROUP BY 1, 2`

// DAU returns the distinct active users per day: of each app if q.ByApp,
// else the sum over apps (a user active in two apps counts twice).
func (s *Store) DAU(ctx context.Context, q DAUQuery) (*DAU, error) {
	loc := q.Location
	if loc == nil {
		loc = time.UTC
	}
	if err := validRange(q.From, q.To); err != nil {
		return nil, err
	}
	if err := (Filter{App: q.App}).validate(); err != nil {
		return nil, err
	}
	date := func(t time.Time) time.Time {
		y, m, d := t.In(loc).Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	}
	first, last := date(q.From), date(q.To.Add(-time.Nanosecond))
	days := int(last.Sub(first)/(24*time.Hour)) + 1
	if days > s.maxPoints {
		return nil, paramErr("from", "the range holds %d days, more than %d", days, s.maxPoints)
	}
	groups := map[string]map[time.Time]int64{}
	rows, err := s.db.Query(ctx, dauSQL, pgx.NamedArgs{"by_app": q.ByApp, "first": first, "last": last, "app": nullable(q.App)})
	if err != nil {
		return nil, fmt.Errorf("daily active users: %w", err)
	}
	var (
		day   time.Time
		key   string
		users int64
	)
	_, err = pgx.ForEachRow(rows, []any{&day, &key, &users}, func() error {
		if groups[key] == nil {
			groups[key] = map[time.Time]int64{}
		}
		groups[key][day.UTC()] = users
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("daily active users: %w", err)
	}
	if !q.ByApp && len(groups) == 0 {
		groups[""] = map[time.Time]int64{}
	}
	if n := len(groups) * days; n > s.maxPoints {
		return nil, paramErr("group", "%d apps of %d days make %d points, more than %d", len(groups), days, n, s.maxPoints)
	}
	out := &DAU{From: first.Format(time.DateOnly), To: last.Format(time.DateOnly), App: q.App, ByApp: q.ByApp, Groups: []DAUGroup{}}
	for key, byDay := range groups {
		g := DAUGroup{Key: key, Points: make([]DAUPoint, 0, days)}
		for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
			n := byDay[d]
			g.Points = append(g.Points, DAUPoint{Day: d.Format(time.DateOnly), Users: n})
			g.Peak = max(g.Peak, n)
			g.Latest = n
		}
		out.Groups = append(out.Groups, g)
	}
	slices.SortFunc(out.Groups, func(a, b DAUGroup) int {
		return cmp.Or(cmp.Compare(b.Peak, a.Peak), strings.Compare(a.Key, b.Key))
	})
	return out, nil
}

// maxDimensionValues bounds each list of Dimensions.
const maxDimensionValues = 1000

// Dimensions returns the apps and platforms counted in the UTC days that
// [from, to) touches.
func (s *Store) Dimensions(ctx context.Context, from, to time.Time) (*Dimensions, error) {
	if err := validRange(from, to); err != nil {
		return nil, err
	}
	from, to = from.Truncate(24*time.Hour), ceilUTC(to, 24*time.Hour)
	out := &Dimensions{Apps: []string{}, Platforms: []string{}}
	for _, q := range []struct {
		sql  string
		dest *[]string
	}{
		{`SELECT DISTINCT app FROM counters_day WHERE bucket >= $1 AND bucket < $2 AND app <> '' ORDER BY 1 LIMIT $3`, &out.Apps},
		{`SELECT DISTINCT platform FROM counters_day WHERE bucket >= $1 AND bucket < $2 AND platform <> '' ORDER BY 1 LIMIT $3`, &out.Platforms},
	} {
		rows, err := s.db.Query(ctx, q.sql, from, to, maxDimensionValues)
		if err != nil {
			return nil, fmt.Errorf("dimensions: %w", err)
		}
		vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("dimensions: %w", err)
		}
		*q.dest = append(*q.dest, vals...)
	}
	return out, nil
}
