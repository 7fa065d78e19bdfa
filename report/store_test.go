package report_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/report"
)

func TestSeriesSteps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insert(t,
		sample{at("2026-01-05T10:00:00Z"), msg("chat"), 1},
		sample{at("2026-01-05T10:00:30Z"), msg("chat"), 2}, // same minute
		sample{at("2026-01-05T10:01:00Z"), msg("chat"), 4},
		sample{at("2026-01-05T11:59:00Z"), msg("chat"), 8},
		sample{at("2026-01-06T00:00:00Z"), msg("chat"), 16},
		sample{at("2026-01-06T10:00:00Z"), counters.Dims{Metric: counters.Reads, App: "chat"}, 100}, // another metric
	)
	ctx := context.Background()
	tests := []struct {
		name     string
		q        report.SeriesQuery
		source   string
		from, to time.Time
		want     []int64
	}{
		{
			name:   "minute",
			q:      report.SeriesQuery{Step: report.StepMinute, From: at("2026-01-05T09:59:10Z"), To: at("2026-01-05T10:02:00Z")},
			source: "counters_minute",
			from:   at("2026-01-05T09:59:00Z"), to: at("2026-01-05T10:02:00Z"),
			want: []int64{0, 3, 4},
		},
		{
			name:   "hour",
			q:      report.SeriesQuery{Step: report.StepHour, From: at("2026-01-05T10:30:00Z"), To: at("2026-01-05T12:00:00Z")},
			source: "counters_hour",
			from:   at("2026-01-05T10:00:00Z"), to: at("2026-01-05T12:00:00Z"),
			want: []int64{7, 8},
		},
		{
			name:   "day",
			q:      report.SeriesQuery{Step: report.StepDay, From: at("2026-01-04T00:00:00Z"), To: at("2026-01-06T00:00:01Z")},
			source: "counters_day",
			from:   at("2026-01-04T00:00:00Z"), to: at("2026-01-07T00:00:00Z"),
			want: []int64{0, 15, 16},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.q.Metric = counters.MessagesSent
			s, err := b.store.Series(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if s.Source != tt.source || !s.From.Equal(tt.from) || !s.To.Equal(tt.to) {
				t.Errorf("source %s from %s to %s, want %s %s %s", s.Source, s.From, s.To, tt.source, tt.from, tt.to)
			}
			if len(s.Groups) != 1 || s.Groups[0].Key != "" {
				t.Fatalf("groups = %+v, want one ungrouped", s.Groups)
			}
			if got := values(s.Groups[0]); !slices.Equal(got, tt.want) {
				t.Errorf("values = %v, want %v", got, tt.want)
			}
			var sum int64
			for _, v := range tt.want {
				sum += v
			}
			if s.Total != sum || s.Groups[0].Total != sum {
				t.Errorf("total = %d (group %d), want %d", s.Total, s.Groups[0].Total, sum)
			}
			if p := s.Groups[0].Points[0]; !p.Time.Equal(tt.from) || p.Live {
				t.Errorf("first point %+v, want at %s, not live", p, tt.from)
			}
		})
	}
}

func TestSeriesFiltersAndGroups(t *testing.T) {
	t.Parallel()
	b := setup(t)
	day := at("2026-02-02T08:00:00Z")
	failed := func(app, platform, reason string) counters.Dims {
		return counters.Dims{Metric: counters.PushFailed, App: app, Platform: platform, Reason: reason}
	}
	b.insert(t,
		sample{day, failed("chat", "fcm", "unregistered"), 5},
		sample{day, failed("chat", "apns", "unregistered"), 3},
		sample{day, failed("chat", "apns", "bad_token"), 2},
		sample{day, failed("shop", "fcm", "quota"), 7},
	)
	ctx := context.Background()
	base := report.SeriesQuery{Metric: counters.PushFailed, Step: report.StepDay, From: day, To: day.Add(time.Hour)}
	tests := []struct {
		name   string
		filter report.Filter
		group  report.Dimension
		want   map[string]int64
	}{
		{"all", report.Filter{}, report.DimNone, map[string]int64{"": 17}},
		{"app", report.Filter{App: "chat"}, report.DimNone, map[string]int64{"": 10}},
		{"platform", report.Filter{Platform: "apns"}, report.DimNone, map[string]int64{"": 5}},
		{"app and platform", report.Filter{App: "chat", Platform: "fcm"}, report.DimNone, map[string]int64{"": 5}},
		{"reason", report.Filter{Reason: "unregistered"}, report.DimNone, map[string]int64{"": 8}},
		{"no match", report.Filter{App: "nope"}, report.DimNone, map[string]int64{"": 0}},
		{"by app", report.Filter{}, report.DimApp, map[string]int64{"chat": 10, "shop": 7}},
		{"by platform", report.Filter{}, report.DimPlatform, map[string]int64{"fcm": 12, "apns": 5}},
		{"by reason of chat", report.Filter{App: "chat"}, report.DimReason, map[string]int64{"unregistered": 8, "bad_token": 2}},
		{"grouped, no match", report.Filter{App: "nope"}, report.DimApp, map[string]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q := base
			q.Filter, q.Group = tt.filter, tt.group
			s, err := b.store.Series(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			for _, g := range s.Groups {
				if len(g.Points) != 1 {
					t.Fatalf("group %q has %d points, want 1", g.Key, len(g.Points))
				}
				got[g.Key] = g.Points[0].Value
			}
			if len(got) != len(tt.want) {
				t.Fatalf("groups %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("group %q = %d, want %d (all: %v)", k, got[k], v, got)
				}
			}
			for i := 1; i < len(s.Groups); i++ {
				if s.Groups[i-1].Total < s.Groups[i].Total {
					t.Errorf("groups not sorted by total: %+v", s.Groups)
				}
			}
		})
	}
}

func TestSeriesTimeZones(t *testing.T) {
	t.Parallel()
	b := setup(t)
	berlin, err := report.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	kolkata, err := report.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	// 2026-03-29 in Berlin: clocks jump from 02:00 CET (+01) to 03:00 CEST
	// (+02), a 23-hour day from 2026-03-28T23:00Z to 2026-03-29T22:00Z.
	// 2026-10-25: back from 03:00 CEST to 02:00 CET, a 25-hour day from
	// 2026-10-24T22:00Z to 2026-10-25T23:00Z.
	b.insert(t,
		sample{at("2026-03-28T22:59:00Z"), msg("a"), 1},    // 23:59 CET on the 28th
		sample{at("2026-03-28T23:00:00Z"), msg("a"), 10},   // midnight of the 29th, still the 28th in UTC
		sample{at("2026-03-29T00:59:00Z"), msg("a"), 20},   // 01:59 CET
		sample{at("2026-03-29T01:00:00Z"), msg("a"), 40},   // 03:00 CEST
		sample{at("2026-03-29T21:59:00Z"), msg("a"), 80},   // 23:59 CEST, last minute of the 29th
		sample{at("2026-03-29T22:00:00Z"), msg("a"), 1000}, // midnight of the 30th
		sample{at("2026-10-24T21:59:00Z"), msg("a"), 2},    // 23:59 CEST on the 24th
		sample{at("2026-10-24T22:00:00Z"), msg("a"), 200},  // midnight of the 25th
		sample{at("2026-10-25T00:30:00Z"), msg("a"), 300},  // 02:30 CEST, the first 02:30
		sample{at("2026-10-25T01:30:00Z"), msg("a"), 400},  // 02:30 CET, the second
		sample{at("2026-10-25T22:59:00Z"), msg("a"), 500},  // 23:59 CET, last minute of the 25th
		sample{at("2026-10-25T23:00:00Z"), msg("a"), 3000}, // midnight of the 26th
		sample{at("2026-05-01T05:29:00Z"), msg("b"), 7},    // 10:59 in Kolkata (+05:30)
		sample{at("2026-05-01T05:30:00Z"), msg("b"), 9},    // 11:00 in Kolkata
	)
	ctx := context.Background()
	type point struct {
		t string
		v int64
	}
	tests := []struct {
		name   string
		q      report.SeriesQuery
		source string
		want   []point
	}{
		{
			name: "spring forward, day",
			q: report.SeriesQuery{Step: report.StepDay, Location: berlin, Filter: report.Filter{App: "a"},
				From: time.Date(2026, 3, 28, 0, 0, 0, 0, berlin), To: time.Date(2026, 3, 31, 0, 0, 0, 0, berlin)},
			source: "counters_hour",
			want: []point{
				{"2026-03-28T00:00:00+01:00", 1},
				{"2026-03-29T00:00:00+01:00", 150},
				{"2026-03-30T00:00:00+02:00", 1000},
			},
		},
		{
			name: "fall back, day",
			q: report.SeriesQuery{Step: report.StepDay, Location: berlin, Filter: report.Filter{App: "a"},
				From: time.Date(2026, 10, 24, 12, 0, 0, 0, berlin), To: time.Date(2026, 10, 26, 1, 0, 0, 0, berlin)},
			source: "counters_hour",
			want: []point{
				{"2026-10-24T00:00:00+02:00", 2},
				{"2026-10-25T00:00:00+02:00", 1400},
				{"2026-10-26T00:00:00+01:00", 3000},
			},
		},
		{
			name: "fall back, hour: 02:00 twice",
			q: report.SeriesQuery{Step: report.StepHour, Location: berlin, Filter: report.Filter{App: "a"},
				From: at("2026-10-25T00:00:00Z"), To: at("2026-10-25T02:00:00Z")},
			source: "counters_hour",
			want: []point{
				{"2026-10-25T02:00:00+02:00", 300},
				{"2026-10-25T02:00:00+01:00", 400},
			},
		},
		{
			name: "utc days of the same range",
			q: report.SeriesQuery{Step: report.StepDay, Filter: report.Filter{App: "a"},
				From: at("2026-03-28T00:00:00Z"), To: at("2026-03-30T00:00:00Z")},
			source: "counters_day",
			want: []point{
				{"2026-03-28T00:00:00Z", 11},
				{"2026-03-29T00:00:00Z", 1140},
			},
		},
		{
			name: "half-hour zone, hour",
			q: report.SeriesQuery{Step: report.StepHour, Location: kolkata, Filter: report.Filter{App: "b"},
				From: at("2026-05-01T04:30:00Z"), To: at("2026-05-01T06:30:00Z")},
			source: "counters_minute",
			want: []point{
				{"2026-05-01T10:00:00+05:30", 7},
				{"2026-05-01T11:00:00+05:30", 9},
			},
		},
		{
			name: "half-hour zone, day",
			q: report.SeriesQuery{Step: report.StepDay, Location: kolkata, Filter: report.Filter{App: "b"},
				From: at("2026-05-01T00:00:00Z"), To: at("2026-05-01T12:00:00Z")},
			source: "counters_minute",
			want: []point{
				{"2026-05-01T00:00:00+05:30", 16},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.q.Metric = counters.MessagesSent
			s, err := b.store.Series(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if s.Source != tt.source {
				t.Errorf("source = %s, want %s", s.Source, tt.source)
			}
			var got []point
			for _, p := range s.Groups[0].Points {
				got = append(got, point{p.Time.Format(time.RFC3339), p.Value})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("points\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestSeriesLimitsAndErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	small, err := report.NewStore(b.db, report.StoreConfig{MaxPoints: 24})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	from := at("2026-01-01T00:00:00Z")
	ok := report.SeriesQuery{Metric: counters.MessagesSent, Step: report.StepHour, From: from, To: from.Add(24 * time.Hour)}
	if _, err := small.Series(ctx, ok); err != nil {
		t.Fatalf("24 points: %v", err)
	}
	tests := []struct {
		name  string
		store *report.Store
		edit  func(*report.SeriesQuery)
		param string
	}{
		{"too many buckets", small, func(q *report.SeriesQuery) { q.To = q.To.Add(time.Hour) }, "step"},
		{"no metric", b.store, func(q *report.SeriesQuery) { q.Metric = "" }, "metric"},
		{"bad metric", b.store, func(q *report.SeriesQuery) { q.Metric = "messages_sent; DROP TABLE x" }, "metric"},
		{"bad step", b.store, func(q *report.SeriesQuery) { q.Step = "week" }, "step"},
		{"bad group", b.store, func(q *report.SeriesQuery) { q.Group = "user" }, "group"},
		{"empty range", b.store, func(q *report.SeriesQuery) { q.To = q.From }, "from"},
		{"long filter", b.store, func(q *report.SeriesQuery) { q.Filter.App = string(make([]byte, 500)) }, "app"},
		{"live without redis", small, func(q *report.SeriesQuery) { q.Live = true }, "live"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q := ok
			tt.edit(&q)
			_, err := tt.store.Series(ctx, q)
			var pe *report.ParamError
			if !errors.As(err, &pe) || !errors.Is(err, report.ErrBadQuery) {
				t.Fatalf("err = %v, want a ParamError", err)
			}
			if pe.Param != tt.param {
				t.Errorf("param = %q (%v), want %q", pe.Param, err, tt.param)
			}
		})
	}
}

// TestTotalsMatchMinutes checks the split of a range over the three tables
// against a plain sum of counters_minute, for ranges that start and end at
// odd minutes, hours and days.
func TestTotalsMatchMinutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rng := rand.New(rand.NewPCG(1, 2))
	start := at("2026-01-28T20:00:00Z")
	var samples []sample
	for range 400 {
		ts := start.Add(time.Duration(rng.IntN(6*24*60)) * time.Minute)
		app := []string{"a", "b"}[rng.IntN(2)]
		samples = append(samples, sample{ts, msg(app), int64(1 + rng.IntN(9))})
	}
	b.insert(t, samples...)
	ctx := context.Background()
	for range 40 {
		from := start.Add(time.Duration(rng.IntN(6*24*60)) * time.Minute).Add(time.Duration(rng.IntN(60)) * time.Second)
		to := from.Add(time.Duration(1+rng.IntN(5*24*60)) * time.Minute)
		tot, err := b.store.Totals(ctx, report.TotalsQuery{Metrics: []string{counters.MessagesSent}, From: from, To: to, Filter: report.Filter{App: "a"}})
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		lo, hi := from.Truncate(time.Minute), to
		for _, s := range samples {
			if s.d.App == "a" && !s.at.Before(lo) && s.at.Before(hi) {
				want += s.v
			}
		}
		if len(tot.Totals) != 1 || tot.Totals[0].Value != want {
			t.Fatalf("totals %s .. %s = %+v, want %d", from, to, tot.Totals, want)
		}
	}
}

func TestTotalsFunnelPush(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ts := at("2026-02-10T12:00:00Z")
	d := func(metric, app, platform, reason string) counters.Dims {
		return counters.Dims{Metric: metric, App: app, Platform: platform, Reason: reason}
	}
	b.insert(t,
		sample{ts, d(counters.EpisodesOpened, "chat", "", ""), 200},
		sample{ts, d(counters.EpisodesOpened, "shop", "", ""), 50},
		sample{ts, d(counters.RemindersQueued, "chat", "", ""), 150},
		sample{ts, d(counters.RemindersCancel, "chat", "", ""), 60},
		sample{ts, d(counters.RemindersSuppr, "chat", "", "muted"), 10},
		sample{ts, d(counters.RemindersSuppr, "chat", "", "quiet_hours"), 5},
		sample{ts, d(counters.RemindersSent, "chat", "", ""), 70},
		sample{ts, d(counters.PushSent, "chat", "fcm", ""), 90},
		sample{ts, d(counters.PushSent, "chat", "apns", ""), 30},
		sample{ts, d(counters.PushFailed, "chat", "fcm", "unregistered"), 6},
		sample{ts, d(counters.PushFailed, "chat", "fcm", "quota"), 4},
		sample{ts, d(counters.PushFailed, "chat", "apns", "bad_token"), 10},
		sample{ts, d(counters.TokensRemoved, "chat", "fcm", "unregistered"), 6},
		sample{ts.Add(48 * time.Hour), d(counters.EpisodesOpened, "chat", "", ""), 999}, // out of range
	)
	ctx := context.Background()
	from, to := ts.Add(-time.Hour), ts.Add(time.Hour)

	t.Run("totals", func(t *testing.T) {
		t.Parallel()
		tot, err := b.store.Totals(ctx, report.TotalsQuery{Metrics: []string{counters.EpisodesOpened, counters.Reads, counters.RemindersSuppr}, From: from, To: to})
		if err != nil {
			t.Fatal(err)
		}
		want := []report.Total{{Metric: counters.EpisodesOpened, Value: 250}, {Metric: counters.Reads}, {Metric: counters.RemindersSuppr, Value: 15}}
		if !slices.Equal(tot.Totals, want) {
			t.Errorf("totals = %+v, want %+v", tot.Totals, want)
		}
		tot, err = b.store.Totals(ctx, report.TotalsQuery{Metrics: []string{counters.RemindersSuppr}, From: from, To: to, Group: report.DimReason})
		if err != nil {
			t.Fatal(err)
		}
		want = []report.Total{{Metric: counters.RemindersSuppr, Key: "muted", Value: 10}, {Metric: counters.RemindersSuppr, Key: "quiet_hours", Value: 5}}
		if !slices.Equal(tot.Totals, want) {
			t.Errorf("grouped totals = %+v, want %+v", tot.Totals, want)
		}
	})

	t.Run("funnel", func(t *testing.T) {
		t.Parallel()
		f, err := b.store.Funnel(ctx, report.RangeQuery{From: from, To: to, Filter: report.Filter{App: "chat"}})
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for i, st := range f.Steps {
			if st.Metric != report.FunnelMetrics[i] {
				t.Errorf("step %d is %s, want %s", i, st.Metric, report.FunnelMetrics[i])
			}
			got = append(got, st.Value)
		}
		if want := []int64{200, 150, 60, 15, 70, 20}; !slices.Equal(got, want) {
			t.Errorf("funnel = %v, want %v", got, want)
		}
		// Every share is a part of a total that includes it, and says which.
		for _, st := range f.Steps {
			if st.Share < 0 || st.Share > 1 || (st.Share > 0) != (st.Base != "") {
				t.Errorf("step %s: share %v of %q", st.Metric, st.Share, st.Base)
			}
		}
		if st := f.Steps[1]; st.Share != 0 || st.Base != "" {
			t.Errorf("reminders scheduled (every stage) has share %v of %q, want none", st.Share, st.Base)
		}
		if st := f.Steps[4]; st.Base != report.BaseRemindersEnded || math.Abs(st.Share-70.0/145) > 1e-9 {
			t.Errorf("reminders sent: share %v of %q, want 70/145 of the reminders ended", st.Share, st.Base)
		}
		if st := f.Steps[5]; st.Base != report.BasePushes || math.Abs(st.Share-20.0/140) > 1e-9 {
			t.Errorf("push failed: share %v of %q, want 20/140 of the pushes", st.Share, st.Base)
		}
	})

	t.Run("push", func(t *testing.T) {
		t.Parallel()
		p, err := b.store.Push(ctx, report.RangeQuery{From: from, To: to})
		if err != nil {
			t.Fatal(err)
		}
		want := []report.PushPlatform{
			{Platform: "apns", Sent: 30, Failed: 10, SuccessRate: 0.75},
			{Platform: "fcm", Sent: 90, Failed: 10, TokensRemoved: 6, SuccessRate: 0.9},
		}
		if !slices.Equal(p.Platforms, want) {
			t.Errorf("platforms = %+v, want %+v", p.Platforms, want)
		}
		wantF := []report.PushFailure{
			{Platform: "apns", Reason: "bad_token", Count: 10},
			{Platform: "fcm", Reason: "unregistered", Count: 6},
			{Platform: "fcm", Reason: "quota", Count: 4},
		}
		if !slices.Equal(p.Failures, wantF) {
			t.Errorf("failures = %+v, want %+v", p.Failures, wantF)
		}
	})
}

func TestDAU(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setDAU(t, "2026-03-01", "chat", 100)
	b.setDAU(t, "2026-03-01", "shop", 40)
	b.setDAU(t, "2026-03-03", "chat", 120)
	b.setDAU(t, "2026-03-04", "chat", 999) // after the range
	ctx := context.Background()
	q := report.DAUQuery{From: at("2026-03-01T00:00:00Z"), To: at("2026-03-04T00:00:00Z")}

	d, err := b.store.DAU(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if d.From != "2026-03-01" || d.To != "2026-03-03" || len(d.Groups) != 1 {
		t.Fatalf("dau = %+v", d)
	}
	want := []report.DAUPoint{{"2026-03-01", 140}, {"2026-03-02", 0}, {"2026-03-03", 120}}
	if g := d.Groups[0]; !slices.Equal(g.Points, want) || g.Peak != 140 || g.Latest != 120 {
		t.Errorf("all apps = %+v, want points %v, peak 140, latest 120", g, want)
	}

	q.ByApp = true
	d, err = b.store.DAU(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Groups) != 2 || d.Groups[0].Key != "chat" || d.Groups[1].Key != "shop" || d.Groups[1].Peak != 40 {
		t.Errorf("by app = %+v", d.Groups)
	}

	q.ByApp, q.App = false, "shop"
	d, err = b.store.DAU(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if d.Groups[0].Peak != 40 || d.Groups[0].Latest != 0 {
		t.Errorf("shop = %+v", d.Groups[0])
	}

	// In Berlin, the range from the 1st 00:00 to the 4th 00:00 is from
	// 2026-02-28T23:00Z: the dates are still the 1st to the 3rd.
	berlin, _ := report.LoadLocation("Europe/Berlin")
	d, err = b.store.DAU(ctx, report.DAUQuery{Location: berlin,
		From: time.Date(2026, 3, 1, 0, 0, 0, 0, berlin), To: time.Date(2026, 3, 4, 0, 0, 0, 0, berlin)})
	if err != nil {
		t.Fatal(err)
	}
	if d.From != "2026-03-01" || d.To != "2026-03-03" {
		t.Errorf("Berlin dates = %s .. %s", d.From, d.To)
	}
}

// TestInjectionAttemptsAreValues sends SQL in every filter: each is a
// value compared through a placeholder, so the query succeeds and matches
// nothing.
func TestInjectionAttemptsAreValues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ts := at("2026-02-10T12:00:00Z")
	b.insert(t, sample{ts, counters.Dims{Metric: counters.PushFailed, App: "chat", Platform: "fcm", Reason: "quota"}, 5})
	ctx := context.Background()
	attempts := []string{
		"' OR '1'='1",
		"chat' --",
		"x'; DROP TABLE counters_day; --",
		`") OR 1=1 --`,
		"chat\x00",
		"%",
		"$1",
		"@app",
	}
	for _, a := range attempts {
		for _, f := range []report.Filter{{App: a}, {Platform: a}, {Reason: a}} {
			s, err := b.store.Series(ctx, report.SeriesQuery{Metric: counters.PushFailed, Step: report.StepDay, From: ts, To: ts.Add(time.Hour), Filter: f})
			if err != nil {
				// A NUL byte is not text in Postgres: refused up front.
				if a == "chat\x00" && errors.Is(err, report.ErrBadQuery) {
					continue
				}
				t.Fatalf("filter %+v: %v", f, err)
			}
			if s.Total != 0 {
				t.Errorf("filter %+v matched %d", f, s.Total)
			}
			tot, err := b.store.Totals(ctx, report.TotalsQuery{Metrics: []string{counters.PushFailed}, From: ts, To: ts.Add(time.Hour), Filter: f})
			if err == nil && tot.Totals[0].Value != 0 {
				t.Errorf("totals with filter %+v matched %d", f, tot.Totals[0].Value)
			}
		}
	}
	var n int
	if err := b.db.QueryRow(ctx, "SELECT count(*) FROM counters_day").Scan(&n); err != nil || n != 1 {
		t.Fatalf("counters_day has %d rows (%v), want 1", n, err)
	}
}

func TestDimensions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ts := at("2026-02-10T12:00:00Z")
	b.insert(t,
		sample{ts, counters.Dims{Metric: counters.PushSent, App: "chat", Platform: "fcm"}, 1},
		sample{ts, counters.Dims{Metric: counters.PushSent, App: "shop", Platform: "apns"}, 1},
		sample{ts, counters.Dims{Metric: counters.MessagesSent}, 1},
	)
	d, err := b.store.Dimensions(context.Background(), ts, ts.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Apps, []string{"chat", "shop"}) || !slices.Equal(d.Platforms, []string{"apns", "fcm"}) {
		t.Errorf("dimensions = %+v", d)
	}
}

// The effectiveness report: per stage, pushed, opened and converted with
// rates that are parts of the pushes (at most 1, base stated), and the
// median time from push to read from the histogram.
func TestEffectiveness(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ts := at("2026-02-10T12:00:00Z")
	d := func(metric, platform, reason string) counters.Dims {
		return counters.Dims{Metric: metric, App: "chat", Platform: platform, Reason: reason}
	}
	b.insert(t,
		sample{ts, d(counters.RemindersPushed, "fcm", "1"), 80},
		sample{ts, d(counters.RemindersPushed, "apns", "1"), 20},
		sample{ts, d(counters.RemindersOpened, "fcm", "1"), 30},
		sample{ts, d(counters.RemindersConverted, "fcm", "1"), 40},
		sample{ts, d(counters.ReadDelay, "fcm", "1:30"), 10},
		sample{ts, d(counters.ReadDelay, "fcm", "1:60"), 10},
		sample{ts, d(counters.ReadDelay, "fcm", "1:300"), 20},
		sample{ts, d(counters.RemindersPushed, "fcm", "2"), 5},
		sample{ts, d(counters.RemindersOpened, "fcm", "2"), 9}, // opens of pushes before the range
		sample{ts, d(counters.RemindersOpened, "fcm", "3"), 1}, // its push before the range
	)
	ctx := context.Background()
	e, err := b.store.Effectiveness(ctx, report.RangeQuery{From: ts.Add(-time.Hour), To: ts.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Stages) != 3 {
		t.Fatalf("stages %+v", e.Stages)
	}
	s1, s2, s3 := e.Stages[0], e.Stages[1], e.Stages[2]
	if s1.Stage != 1 || s1.Pushed != 100 || s1.Opened != 30 || s1.Converted != 40 || s1.OpenRate != 0.3 || s1.ConversionRate != 0.4 || s1.Base != report.BaseStagePushed {
		t.Errorf("stage 1: %+v", s1)
	}
	// 40 conversions: the 20th is the last of (30, 60]; the median is 60 s.
	if s1.MedianReadSeconds != 60 {
		t.Errorf("stage 1 median read %v s, want 60", s1.MedianReadSeconds)
	}
	if s2.OpenRate != 1 || s2.MedianReadSeconds != -1 {
		t.Errorf("stage 2: %+v: an open rate is never over 1, no conversions no median", s2)
	}
	if s3.Pushed != 0 || s3.OpenRate != 0 {
		t.Errorf("stage 3: %+v: no push in the range, no rate", s3)
	}
	f, err := b.store.Effectiveness(ctx, report.RangeQuery{From: ts.Add(-time.Hour), To: ts.Add(time.Hour), Filter: report.Filter{Platform: "apns"}})
	if err != nil || len(f.Stages) != 1 || f.Stages[0].Pushed != 20 || f.Stages[0].Opened != 0 {
		t.Errorf("apns only: %+v (%v)", f, err)
	}
}
