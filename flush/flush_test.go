package flush_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

func TestFlushExactTotals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rng := rand.New(rand.NewPCG(1, 2))
	const minutes = 20 // 23:50 .. 00:09: two days, two hours, two months
	hashes := b.addRandom(t, rng, base, minutes)

	b.closeAll(base.Add(minutes * time.Minute))
	f := b.flusher(t, nil)
	st, err := f.FlushOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Snapshots != hashes || st.Flushes != hashes || st.Replayed != 0 || st.Leftovers != 0 || st.BadFields != 0 {
		t.Fatalf("stats = %+v, want %d snapshots and flushes", st, hashes)
	}
	// Shards flush separately, so a cell may take a row in several flushes.
	if st.Rows < len(b.exp.minute) {
		t.Fatalf("stats.Rows = %d, fewer than the %d minute cells", st.Rows, len(b.exp.minute))
	}
	b.assertTotals(t)
	b.assertNoKeys(t)

	var n int
	if err := b.db.QueryRow(ctx, "SELECT count(*) FROM flushes WHERE rows > $1", 0).Scan(&n); err != nil || n != hashes {
		t.Fatalf("flushes has %d rows (%v), want %d", n, err, hashes)
	}
	for _, part := range []string{"counters_minute_202601", "counters_minute_202602", "counters_minute_202603"} {
		var ok bool
		if err := b.db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", part).Scan(&ok); err != nil || !ok {
			t.Errorf("partition %s missing (%v)", part, err)
		}
	}

	// A second round has nothing to do and changes nothing.
	st, err = f.FlushOnce(ctx)
	if err != nil || st.Flushes != 0 || st.Snapshots != 0 {
		t.Fatalf("second round = %+v, %v; want nothing done", st, err)
	}
	b.assertTotals(t)
}

func TestFlushOnlyClosedMinutes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	minute := base.Add(3 * time.Minute)
	b.add(t, 1, minute.Add(10*time.Second), map[counters.Dims]int64{{Metric: counters.Reads, App: "chat"}: 7})
	f := b.flusher(t, func(c *flush.Config) { c.Grace = 5 * time.Second })
	end := minute.Add(time.Minute)

	tests := []struct {
		name    string
		now     time.Time
		flushed bool
	}{
		{"during the minute", minute.Add(30 * time.Second), false},
		{"at its end", end, false},
		{"just before end plus grace", end.Add(5*time.Second - time.Nanosecond), false},
		{"at end plus grace", end.Add(5 * time.Second), true},
	}
	for _, tt := range tests { // in order: each step moves the clock on
		b.clock.Set(tt.now)
		st, err := f.FlushOnce(ctx)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := st.Flushes == 1; got != tt.flushed {
			t.Fatalf("%s: flushed = %v, want %v (stats %+v)", tt.name, got, tt.flushed, st)
		}
		exists, err := b.rdb.Exists(ctx, b.ks.Counters(1, keys.Minute(minute))).Result()
		if err != nil {
			t.Fatal(err)
		}
		if (exists == 1) == tt.flushed {
			t.Fatalf("%s: counters hash exists = %v", tt.name, exists == 1)
		}
	}
	b.assertTotals(t)
	b.assertNoKeys(t)
}

var errCrash = errors.New("simulated crash")

// crashAt returns a Hook that fails the first time step is reached.
func crashAt(step string) func(string) error {
	var done atomic.Bool
	return func(s string) error {
		if s == step && done.CompareAndSwap(false, true) {
			return errCrash
		}
		return nil
	}
}

func TestReplayedFlushSkipped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.add(t, 2, base, map[counters.Dims]int64{{Metric: counters.MessagesSent, App: "chat"}: 3, {Metric: counters.Reads}: 4})
	b.closeAll(base)

	dying := b.flusher(t, func(c *flush.Config) { c.Hook = crashAt(flush.StepCommitted) })
	if _, err := dying.FlushOnce(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("dying flusher: %v, want the crash", err)
	}
	b.assertTotals(t) // committed
	left, err := b.rdb.ZCard(ctx, b.ks.SnapshotIndex(2)).Result()
	if err != nil || left != 1 {
		t.Fatalf("snapshot index has %d entries (%v), want the undeleted snapshot", left, err)
	}

	st, err := b.flusher(t, nil).FlushOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leftovers != 1 || st.Replayed != 1 || st.Flushes != 0 {
		t.Fatalf("stats = %+v, want one leftover, replayed and skipped", st)
	}
	b.assertTotals(t)
	b.assertNoKeys(t)
}

// TestCrashMatrix leaves what a flusher dying after each step leaves, then
// checks that another flusher finishes it with exact totals.
func TestCrashMatrix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		step         string
		wantReplayed bool // the dead flusher had committed
	}{
		{flush.StepSnapshotted, false},
		{flush.StepWritten, false},
		{flush.StepCommitted, true},
		{flush.StepDeleted, false},
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t)
			rng := rand.New(rand.NewPCG(3, uint64(len(tt.step))))
			b.addRandom(t, rng, base, 3)
			b.closeAll(base.Add(3 * time.Minute))

			dying := b.flusher(t, func(c *flush.Config) { c.Hook = crashAt(tt.step) })
			st, err := dying.FlushOnce(ctx)
			if !errors.Is(err, errCrash) {
				t.Fatalf("dying flusher: %v, want the crash", err)
			}
			if st.Snapshots != 1 {
				t.Fatalf("dying flusher took %d snapshots, want 1 before it died", st.Snapshots)
			}

			// Writers go on meanwhile, into old and new minutes.
			b.addRandom(t, rng, base.Add(2*time.Minute), 3)
			b.closeAll(base.Add(5 * time.Minute))

			st, err = b.flusher(t, nil).FlushOnce(ctx)
			if err != nil {
				t.Fatal(err)
			}
			wantLeft := 1
			if tt.step == flush.StepDeleted {
				wantLeft = 0
			}
			if st.Leftovers != wantLeft || (st.Replayed == 1) != tt.wantReplayed {
				t.Fatalf("recovery stats = %+v, want %d leftover, replayed %v", st, wantLeft, tt.wantReplayed)
			}
			b.assertTotals(t)
			b.assertNoKeys(t)
		})
	}
}

func TestRunFinishesLeftoversAndReleasesLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rng := rand.New(rand.NewPCG(5, 6))
	b.addRandom(t, rng, base, 4)
	b.closeAll(base.Add(4 * time.Minute))
	dying := b.flusher(t, func(c *flush.Config) { c.Hook = crashAt(flush.StepWritten) })
	if _, err := dying.FlushOnce(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("dying flusher: %v", err)
	}
	b.addRandom(t, rng, base.Add(4*time.Minute), 2)
	b.closeAll(base.Add(6 * time.Minute))

	// Two replicas: the lease lets one work at a time; either may.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		f := b.flusher(t, func(c *flush.Config) { c.Interval, c.LeaseTTL = 20*time.Millisecond, 5*time.Second })
		wg.Go(func() { errs <- f.Run(runCtx) })
	}
	poll.Until(t, 20*time.Second, "totals in Postgres", func() bool { return b.diffTotals(t) == "" })
	poll.Until(t, 20*time.Second, "empty snapshot indexes", func() bool {
		for shard := range testShards {
			if n, _ := b.rdb.Exists(ctx, b.ks.SnapshotIndex(shard), b.ks.CounterIndex(shard)).Result(); n != 0 {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	}
	b.assertTotals(t)
	b.assertNoKeys(t) // the lease too: released on return
}

func TestConcurrentFlushersAndWriters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	// Every minute counts as closed: flushers snapshot minutes that writers
	// are still adding to, the worst case of a late writer.
	b.clock.Set(base.Add(24 * time.Hour))

	var writing sync.WaitGroup
	for w := range 4 {
		writing.Go(func() {
			rng := rand.New(rand.NewPCG(7, uint64(w)))
			for range 150 {
				at := base.Add(time.Duration(rng.IntN(6*60_000)) * time.Millisecond)
				b.add(t, rng.IntN(testShards), at, randomIncr(rng, 1+rng.IntN(5)))
			}
		})
	}
	var (
		done     atomic.Bool
		flushing sync.WaitGroup
		mu       sync.Mutex
		errs     []error
		total    flush.Stats
	)
	for range 2 {
		f := b.flusher(t, nil)
		flushing.Go(func() {
			for !done.Load() {
				st, err := f.FlushOnce(ctx)
				mu.Lock()
				total.Flushes += st.Flushes
				total.Replayed += st.Replayed
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	writing.Wait()
	done.Store(true)
	flushing.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if _, err := b.flusher(t, nil).FlushOnce(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("concurrent rounds: %d flushes, %d replays skipped", total.Flushes, total.Replayed)
	b.assertTotals(t)
	b.assertNoKeys(t)
}

func TestBadFieldsSkipped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	minute := keys.Minute(base)
	good := counters.Dims{Metric: counters.PushSent, App: "chat", Platform: "fcm"}
	b.add(t, 0, base, map[counters.Dims]int64{good: 5})
	bad := map[string]any{
		"no-separators":      "1",
		"a|b":                "2",
		"|app|fcm|":          "3", // no metric
		"m|app|fcm|r|extra":  "4",
		"reads|chat||":       "not a number",
		"reads|chat|apns|ok": "",
	}
	if err := b.rdb.HSet(ctx, b.ks.Counters(0, minute), bad).Err(); err != nil {
		t.Fatal(err)
	}
	b.closeAll(base)
	st, err := b.flusher(t, nil).FlushOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.BadFields != len(bad) || st.Rows != 1 || st.Flushes != 1 {
		t.Fatalf("stats = %+v, want %d bad fields and one row", st, len(bad))
	}
	b.assertTotals(t)
	b.assertNoKeys(t)
}

func TestBadIndexEntryRemoved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	if err := b.rdb.ZAdd(ctx, b.ks.CounterIndex(3), redis.Z{Score: 1, Member: "garbage"}).Err(); err != nil {
		t.Fatal(err)
	}
	// An index entry whose hash is gone (expired) is dropped too.
	if err := b.rdb.ZAdd(ctx, b.ks.CounterIndex(3), redis.Z{Score: 2, Member: "2"}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.flusher(t, nil).FlushOnce(ctx); err != nil {
		t.Fatal(err)
	}
	b.assertNoKeys(t)
}

func TestFlushIDsPruned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, err := b.db.Exec(ctx, `INSERT INTO flushes (flush_id, shard, minute, rows, applied_at)
VALUES ($1, 0, 1, 1, now() - interval '40 days'), ($2, 0, 2, 1, now() - interval '20 days')`, "old", "recent")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.flusher(t, nil).FlushOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []string
	rows, _ := b.db.Query(ctx, "SELECT flush_id FROM flushes ORDER BY flush_id")
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	if rows.Err() != nil || len(ids) != 1 || ids[0] != "recent" {
		t.Fatalf("flushes left: %v (%v), want only the recent one", ids, rows.Err())
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	db, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none") // never dialled
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)

	tests := []struct {
		name string
		cfg  flush.Config
	}{
		{"negative interval", flush.Config{Interval: -time.Second}},
		{"negative grace", flush.Config{Grace: -time.Second}},
		{"negative shards", flush.Config{Keyspace: keys.Keyspace{Shards: -1}}},
		{"lease not above interval", flush.Config{Interval: time.Minute, LeaseTTL: time.Minute}},
		{"flush history shorter than a snapshot lives", flush.Config{FlushHistory: 24 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := flush.New(rdb, db, tt.cfg); !errors.Is(err, flush.ErrConfig) {
				t.Fatalf("New = %v, want ErrConfig", err)
			}
		})
	}
	if _, err := flush.New(nil, db, flush.Config{}); !errors.Is(err, flush.ErrConfig) {
		t.Fatalf("New without Redis = %v, want ErrConfig", err)
	}
	if _, err := flush.New(rdb, db, flush.Config{}); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
}
