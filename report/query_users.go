package report

// Daily active users, and the apps and platforms counted.

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

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
