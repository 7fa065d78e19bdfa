package report_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/report"
)

var errStop = errors.New("test: stop the flusher here")

// add increments counters like ingest does.
func (b *bundle) add(t testing.TB, shard int, ts time.Time, d counters.Dims, n int64) {
	t.Helper()
	if err := counters.Add(context.Background(), b.rdb, b.ks, shard, ts, map[counters.Dims]int64{d: n}); err != nil {
		t.Fatal(err)
	}
}

// flushAt runs one flusher round as if the time were now. stopAfter, if
// set, stops the round after that step of the first flush, as a crash
// would.
func (b *bundle) flushAt(t testing.TB, now time.Time, stopAfter string) {
	t.Helper()
	f, err := flush.New(b.rdb, b.db, flush.Config{
		Keyspace: b.ks,
		Now:      func() time.Time { return now },
		Logger:   testLogger(t),
		Hook: func(step string) error {
			if step == stopAfter {
				return errStop
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.FlushOnce(context.Background())
	if stopAfter == "" && err != nil {
		t.Fatalf("flush: %v", err)
	}
	if stopAfter != "" && !errors.Is(err, errStop) {
		t.Fatalf("flush = %v, want it stopped after %s", err, stopAfter)
	}
}

func TestLiveMerge(t *testing.T) {
	t.Parallel()
	t0 := at("2026-01-10T10:00:00Z")
	chat, shop := msg("chat"), msg("shop")
	type point struct {
		v    int64
		live bool
	}
	tests := []struct {
		name string
		// prepare leaves counters in Redis and Postgres.
		prepare func(t *testing.T, b *bundle)
		// want is the live series of chat, a minute a point from t0.
		want []point
	}{
		{
			name: "unflushed counters hash",
			prepare: func(t *testing.T, b *bundle) {
				b.add(t, 0, t0, chat, 5)
				b.add(t, 1, t0.Add(time.Minute), chat, 7)
				b.flushAt(t, t0.Add(10*time.Minute), "")
				b.add(t, 2, t0.Add(time.Minute), chat, 3) // a late increment of a flushed minute
				b.add(t, 0, t0.Add(2*time.Minute), chat, 4)
				b.add(t, 0, t0.Add(2*time.Minute), shop, 100) // filtered out
			},
			want: []point{{5, false}, {10, true}, {4, true}, {0, false}},
		},
		{
			name: "snapshot not committed",
			prepare: func(t *testing.T, b *bundle) {
				b.add(t, 0, t0, chat, 5)
				b.flushAt(t, t0.Add(10*time.Minute), flush.StepSnapshotted)
			},
			want: []point{{5, true}, {0, false}, {0, false}, {0, false}},
		},
		{
			name: "snapshot committed, not deleted",
			prepare: func(t *testing.T, b *bundle) {
				b.add(t, 0, t0, chat, 5)
				b.flushAt(t, t0.Add(10*time.Minute), flush.StepCommitted)
			},
			want: []point{{5, false}, {0, false}, {0, false}, {0, false}},
		},
		{
			name: "written but rolled back",
			prepare: func(t *testing.T, b *bundle) {
				b.add(t, 1, t0.Add(3*time.Minute), chat, 8)
				b.flushAt(t, t0.Add(10*time.Minute), flush.StepWritten)
			},
			want: []point{{0, false}, {0, false}, {0, false}, {8, true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tt.prepare(t, b)
			ctx := context.Background()
			q := report.SeriesQuery{Metric: counters.MessagesSent, Step: report.StepMinute, From: t0, To: t0.Add(4 * time.Minute),
				Filter: report.Filter{App: "chat"}, Live: true}
			s, err := b.store.Series(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			var got []point
			var total int64
			for _, p := range s.Groups[0].Points {
				got = append(got, point{p.Value, p.Live})
				total += p.Value
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("live points\n got %v\nwant %v", got, tt.want)
			}

			// Without live, only what Postgres has.
			q.Live = false
			s, err = b.store.Series(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			var pg int64
			for i, p := range s.Groups[0].Points {
				if p.Live {
					t.Errorf("point %d is live in a query without live", i)
				}
				pg += p.Value
			}

			// Totals and a day step agree with the minutes.
			tot, err := b.store.Totals(ctx, report.TotalsQuery{Metrics: []string{counters.MessagesSent}, From: t0, To: t0.Add(4 * time.Minute),
				Filter: report.Filter{App: "chat"}, Live: true})
			if err != nil {
				t.Fatal(err)
			}
			if tot.Totals[0].Value != total || tot.Totals[0].Live != (total != pg) {
				t.Errorf("live totals = %+v, want %d (live %v)", tot.Totals[0], total, total != pg)
			}
			day, err := b.store.Series(ctx, report.SeriesQuery{Metric: counters.MessagesSent, Step: report.StepDay, From: t0, To: t0.Add(time.Minute),
				Filter: report.Filter{App: "chat"}, Live: true})
			if err != nil {
				t.Fatal(err)
			}
			if day.Total != total {
				t.Errorf("live day total = %d, want %d", day.Total, total)
			}
		})
	}
}

func TestLiveFunnelGroups(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t0 := at("2026-01-10T10:00:00Z")
	b.insert(t, sample{t0, counters.Dims{Metric: counters.PushSent, App: "chat", Platform: "fcm"}, 10})
	b.add(t, 1, t0.Add(time.Minute), counters.Dims{Metric: counters.PushSent, App: "chat", Platform: "apns"}, 3)
	b.add(t, 2, t0.Add(time.Minute), counters.Dims{Metric: counters.PushFailed, App: "chat", Platform: "apns", Reason: "bad_token"}, 1)
	b.add(t, 2, t0.Add(time.Minute), counters.Dims{Metric: counters.EpisodesOpened, App: "chat"}, 9)
	ctx := context.Background()

	p, err := b.store.Push(ctx, report.RangeQuery{From: t0, To: t0.Add(time.Hour), Live: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []report.PushPlatform{
		{Platform: "apns", Sent: 3, Failed: 1, SuccessRate: 0.75, Live: true},
		{Platform: "fcm", Sent: 10, SuccessRate: 1},
	}
	if !slices.Equal(p.Platforms, want) {
		t.Errorf("live push = %+v, want %+v", p.Platforms, want)
	}
	f, err := b.store.Funnel(ctx, report.RangeQuery{From: t0, To: t0.Add(time.Hour), Live: true})
	if err != nil {
		t.Fatal(err)
	}
	if st := f.Steps[0]; st.Value != 9 || !st.Live {
		t.Errorf("live funnel first step = %+v", st)
	}
	s, err := b.store.Series(ctx, report.SeriesQuery{Metric: counters.PushSent, Step: report.StepHour, From: t0, To: t0.Add(time.Hour),
		Group: report.DimPlatform, Live: true})
	if err != nil {
		t.Fatal(err)
	}
	if g := group(t, s, "apns"); g.Total != 3 || !g.Points[0].Live {
		t.Errorf("apns = %+v", g)
	}
	if g := group(t, s, "fcm"); g.Total != 10 || g.Points[0].Live {
		t.Errorf("fcm = %+v", g)
	}
}

// TestLiveFlushDuringRead flushes, between the Redis and the Postgres reads
// of a live query, the counters the query read from Redis: they must count
// once.
func TestLiveFlushDuringRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t0 := at("2026-01-10T10:00:00Z")
	b.add(t, 0, t0, msg("chat"), 5)                  // read as a counters hash, then flushed
	b.add(t, 1, t0.Add(time.Minute), msg("chat"), 7) // likewise, other shard
	b.add(t, 2, t0.Add(2*time.Minute), msg("chat"), 1)
	b.flushAt(t, t0.Add(10*time.Minute), flush.StepSnapshotted) // shard 0's minute: a snapshot, read as one
	flushed := false
	b.store.SetAfterLiveRead(func() {
		if !flushed {
			flushed = true
			b.flushAt(t, t0.Add(10*time.Minute), "")
		}
	})
	s, err := b.store.Series(context.Background(), report.SeriesQuery{Metric: counters.MessagesSent, Step: report.StepMinute,
		From: t0, To: t0.Add(3 * time.Minute), Live: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := values(s.Groups[0]); !slices.Equal(got, []int64{5, 7, 1}) {
		t.Errorf("values = %v, want [5 7 1]", got)
	}
	for i, p := range s.Groups[0].Points {
		if p.Live {
			t.Errorf("point %d is live, but everything was flushed before Postgres was read", i)
		}
	}
}
