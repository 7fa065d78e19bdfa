package flush_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/internal/testclock"
	"github.com/nudgehq/nudge/keys"
)

func TestMain(m *testing.M) { buildtest.MainVerifyingLeaks(m) }

// base is the first minute tests write: the last minutes of January, so
// that counters span a month (partitions), a day and hours.
var base = time.Date(2026, 1, 31, 23, 50, 0, 0, time.UTC)

const testShards = 4

// bundle is what a test works with: a Redis prefix, a migrated database,
// a clock, and what the test added.
type bundle struct {
	rdb    *redis.Client
	prefix string
	ks     keys.Keyspace
	db     *pgxpool.Pool
	clock  *testclock.Clock
	exp    *expected
}

func setup(t testing.TB) *bundle {
	t.Helper()
	rdb, prefix := redistest.New(t)
	db, _ := pgtest.NewMigrated(t)
	return &bundle{
		rdb:    rdb,
		prefix: prefix,
		ks:     keys.New(prefix, testShards),
		db:     db,
		clock:  testclock.New(base),
		exp:    newExpected(),
	}
}

// flusher returns a Flusher of the bundle; mutate, if not nil, edits its
// config first.
func (b *bundle) flusher(t testing.TB, mutate func(*flush.Config)) *flush.Flusher {
	t.Helper()
	cfg := flush.Config{
		Keyspace: b.ks,
		Now:      b.clock.Now,
		Logger:   testLogger(t),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	f, err := flush.New(b.rdb, b.db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// add increments counters like ingest does and records what it added.
func (b *bundle) add(t testing.TB, shard int, at time.Time, incr map[counters.Dims]int64) {
	t.Helper()
	if err := counters.Add(context.Background(), b.rdb, b.ks, shard, at, incr); err != nil {
		t.Fatal(err)
	}
	for d, n := range incr {
		b.exp.add(at, d, n)
	}
}

// addRandom adds random counters to every shard in each of minutes minutes
// from start, and returns how many (shard, minute) hashes it wrote.
func (b *bundle) addRandom(t testing.TB, rng *rand.Rand, start time.Time, minutes int) int {
	t.Helper()
	hashes := 0
	for m := range minutes {
		for shard := range testShards {
			if rng.IntN(5) == 0 {
				continue // some shards are idle some minutes
			}
			hashes++
			for range 1 + rng.IntN(3) {
				at := start.Add(time.Duration(m)*time.Minute + time.Duration(rng.IntN(60_000))*time.Millisecond)
				b.add(t, shard, at, randomIncr(rng, 1+rng.IntN(20)))
			}
		}
	}
	return hashes
}

var (
	metrics   = []string{counters.MessagesSent, counters.Reads, counters.PushSent, counters.PushFailed, counters.DeadLettered}
	apps      = []string{"chat", "crm", "games", ""}
	platforms = []string{"", "fcm", "apns"}
	reasons   = []string{"", "unregistered", "rate_limited"}
)

func randomDims(rng *rand.Rand) counters.Dims {
	return counters.Dims{
		Metric:   metrics[rng.IntN(len(metrics))],
		App:      apps[rng.IntN(len(apps))],
		Platform: platforms[rng.IntN(len(platforms))],
		Reason:   reasons[rng.IntN(len(reasons))],
	}
}

func randomIncr(rng *rand.Rand, n int) map[counters.Dims]int64 {
	incr := map[counters.Dims]int64{}
	for range n {
		incr[randomDims(rng)] += 1 + rng.Int64N(1000)
	}
	return incr
}

// cell is one row of a counters table.
type cell struct {
	bucket int64 // unix seconds
	counters.Dims
}

func (c cell) String() string {
	return fmt.Sprintf("%s %s", time.Unix(c.bucket, 0).UTC().Format(time.DateTime), counters.Field(c.Dims))
}

// expected holds the totals each counters table must have.
type expected struct {
	mu                sync.Mutex
	minute, hour, day map[cell]int64
}

func newExpected() *expected {
	return &expected{minute: map[cell]int64{}, hour: map[cell]int64{}, day: map[cell]int64{}}
}

func (e *expected) add(at time.Time, d counters.Dims, n int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	at = at.UTC()
	e.minute[cell{at.Truncate(time.Minute).Unix(), d}] += n
	e.hour[cell{at.Truncate(time.Hour).Unix(), d}] += n
	e.day[cell{time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC).Unix(), d}] += n
}

func readTable(t testing.TB, db *pgxpool.Pool, table string) map[cell]int64 {
	t.Helper()
	// The table name is one of three constants of the tests.
	rows, err := db.Query(context.Background(), "SELECT bucket, metric, app, platform, reason, value FROM "+table+" WHERE value <> $1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[cell]int64{}
	for rows.Next() {
		var (
			c      cell
			bucket time.Time
			v      int64
		)
		if err := rows.Scan(&bucket, &c.Metric, &c.App, &c.Platform, &c.Reason, &v); err != nil {
			t.Fatal(err)
		}
		c.bucket = bucket.Unix()
		out[c] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// diffTotals describes how the counters tables differ from what was added,
// or returns "" if they match exactly.
func (b *bundle) diffTotals(t testing.TB) string {
	t.Helper()
	b.exp.mu.Lock()
	defer b.exp.mu.Unlock()
	var diffs []string
	for _, tc := range []struct {
		table string
		want  map[cell]int64
	}{
		{"counters_minute", b.exp.minute},
		{"counters_hour", b.exp.hour},
		{"counters_day", b.exp.day},
	} {
		got := readTable(t, b.db, tc.table)
		for c, w := range tc.want {
			if got[c] != w {
				diffs = append(diffs, fmt.Sprintf("%s %s: got %d, want %d", tc.table, c, got[c], w))
			}
		}
		for c, g := range got {
			if _, ok := tc.want[c]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s %s: got %d, want no row", tc.table, c, g))
			}
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("... and %d more", len(diffs)-10))
	}
	return strings.Join(diffs, "\n")
}

func (b *bundle) assertTotals(t testing.TB) {
	t.Helper()
	if d := b.diffTotals(t); d != "" {
		t.Fatalf("counters tables differ from what was added:\n%s", d)
	}
}

// assertNoKeys fails if any key is left under the bundle's prefix, except
// those matching an allowed substring.
func (b *bundle) assertNoKeys(t testing.TB, allowed ...string) {
	t.Helper()
	ks, err := redistest.Keys(context.Background(), b.rdb, b.prefix)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
outer:
	for _, k := range ks {
		for _, a := range allowed {
			if strings.Contains(k, a) {
				continue outer
			}
		}
		left = append(left, k)
	}
	if len(left) > 0 {
		sort.Strings(left)
		t.Fatalf("keys left in Redis: %v", left)
	}
}

// closeAll sets the clock to when every minute written so far is closed.
func (b *bundle) closeAll(last time.Time) {
	b.clock.Set(last.Truncate(time.Minute).Add(time.Minute + flush.DefaultGrace))
}
