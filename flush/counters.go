package flush

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/keys"
)

// flushShard finishes the shard's leftover snapshots, then snapshots and
// flushes its closed minutes. keep, if not nil, is asked before each
// snapshot whether to go on.
func (f *Flusher) flushShard(ctx context.Context, shard int, now time.Time, keep func(context.Context) error) (Stats, error) {
	var st Stats
	ks := f.cfg.Keyspace

	left, err := f.rdb.ZRangeWithScores(ctx, ks.SnapshotIndex(shard), 0, roundLimit-1).Result()
	if err != nil {
		return st, fmt.Errorf("read snapshot index: %w", err)
	}
	for _, z := range left {
		if err := keepGoing(ctx, keep); err != nil {
			return st, err
		}
		id, _ := z.Member.(string)
		s, err := f.finish(ctx, shard, id, int64(z.Score))
		s.Leftovers = 1
		st.add(s)
		if err != nil {
			return st, err
		}
	}

	// Minute m is closed once (m+1)*60s + Grace <= now.
	closed := keys.Minute(now.Add(-f.cfg.Grace)) - 1
	minutes, err := f.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key:     ks.CounterIndex(shard),
		ByScore: true,
		Start:   "-inf",
		Stop:    strconv.FormatInt(closed, 10),
		Count:   roundLimit,
	}).Result()
	if err != nil {
		return st, fmt.Errorf("read counter index: %w", err)
	}
	for _, member := range minutes {
		if err := keepGoing(ctx, keep); err != nil {
			return st, err
		}
		minute, err := strconv.ParseInt(member, 10, 64)
		if err != nil {
			// Not written by counters.Add: drop it, or it stays forever.
			f.log.Warn("flush: bad counter index entry removed", "shard", shard, "member", truncate(member))
			if err := f.rdb.ZRem(ctx, ks.CounterIndex(shard), member).Err(); err != nil {
				return st, fmt.Errorf("remove bad counter index entry: %w", err)
			}
			continue
		}
		id := newFlushID(shard, minute)
		taken, err := snapshotScript.Run(ctx, f.rdb,
			[]string{ks.Counters(shard, minute), ks.CounterIndex(shard), ks.Snapshot(shard, id), ks.SnapshotIndex(shard)},
			member, id, counters.SafetyTTL.Milliseconds(),
		).Int()
		if err != nil {
			return st, fmt.Errorf("snapshot minute %d: %w", minute, err)
		}
		if taken == 0 {
			continue
		}
		st.Snapshots++
		if err := f.hook(StepSnapshotted); err != nil {
			return st, err
		}
		s, err := f.finish(ctx, shard, id, minute)
		st.add(s)
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

// row is one counter of a snapshot.
type row struct {
	counters.Dims
	value int64
}

// finish writes a snapshot to Postgres (unless its flush id was applied
// before) and deletes it.
func (f *Flusher) finish(ctx context.Context, shard int, id string, minute int64) (Stats, error) {
	var st Stats
	ks := f.cfg.Keyspace
	fields, err := f.rdb.HGetAll(ctx, ks.Snapshot(shard, id)).Result()
	if err != nil {
		return st, fmt.Errorf("flush %s: read snapshot: %w", id, err)
	}
	if len(fields) == 0 {
		// Deleted by a flusher that applied it, or expired: only the index
		// entry is left to drop.
		f.log.Debug("flush: snapshot gone", "shard", shard, "flush_id", id)
		if err := f.deleteSnapshot(ctx, shard, id); err != nil {
			return st, err
		}
		return st, nil
	}
	rows, bad := f.parse(fields, shard, id)
	st.BadFields = bad
	// Rows go to Postgres in primary key order (byte order, like COLLATE
	// "C"), so two flushers that overlap lock the same rollup rows in the
	// same order. Sorting here rather than in each upsert is what keeps the
	// write close to a bare COPY and merge; should Postgres ever read the
	// temporary table in another order, the worst case is a deadlock, which
	// aborts one transaction, and its flush is retried next round.
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(strings.Compare(a.Metric, b.Metric), strings.Compare(a.App, b.App),
			strings.Compare(a.Platform, b.Platform), strings.Compare(a.Reason, b.Reason))
	})

	applied, err := f.write(ctx, shard, id, minute, rows)
	if err != nil {
		return st, err
	}
	if applied {
		st.Flushes, st.Rows = 1, len(rows)
	} else {
		st.Replayed = 1
		f.log.Info("flush: flush id applied before, skipped", "shard", shard, "flush_id", id)
	}
	if err := f.hook(StepCommitted); err != nil {
		return st, err
	}
	if err := f.deleteSnapshot(ctx, shard, id); err != nil {
		return st, err
	}
	return st, f.hook(StepDeleted)
}

func (f *Flusher) deleteSnapshot(ctx context.Context, shard int, id string) error {
	ks := f.cfg.Keyspace
	err := deleteSnapshotScript.Run(ctx, f.rdb, []string{ks.Snapshot(shard, id), ks.SnapshotIndex(shard)}, id).Err()
	if err != nil {
		return fmt.Errorf("flush %s: delete snapshot: %w", id, err)
	}
	return nil
}

// parse decodes a snapshot's fields, skipping (and logging) the bad ones
// and the zeros, and sums counters that decode to the same dimensions.
func (f *Flusher) parse(fields map[string]string, shard int, id string) (rows []row, bad int) {
	sums := make(map[counters.Dims]int64, len(fields))
	for field, v := range fields {
		d, err := counters.ParseField(field)
		var n int64
		if err == nil {
			n, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			bad++
			f.log.Warn("flush: bad counter skipped", "shard", shard, "flush_id", id,
				"field", truncate(field), "value", truncate(v), "err", err)
			continue
		}
		sums[d] += n
	}
	rows = make([]row, 0, len(sums))
	for d, n := range sums {
		if n != 0 {
			rows = append(rows, row{Dims: d, value: n})
		}
	}
	return rows, bad
}

// SQL of the write. The temporary table lives for one transaction; rows are
// copied into it sorted (see finish).
const (
	createRowsTable = `CREATE TEMPORARY TABLE nudge_flush_rows (
    metric text NOT NULL, app text NOT NULL, platform text NOT NULL, reason text NOT NULL, value bigint NOT NULL
) ON COMMIT DROP`

	upsertMinute = `INSERT INTO counters_minute AS c (bucket, metric, app, platform, reason, value)
SELECT $1::timestamptz, metric, app, platform, reason, value FROM nudge_flush_rows
ON CONFLICT (bucket, metric, app, platform, reason) DO UPDATE SET value = c.value + EXCLUDED.value`

	upsertHour = `INSERT INTO counters_hour AS c (bucket, metric, app, platform, reason, value)
SELECT $1::timestamptz, metric, app, platform, reason, value FROM nudge_flush_rows
ON CONFLICT (bucket, metric, app, platform, reason) DO UPDATE SET value = c.value + EXCLUDED.value`

	upsertDay = `INSERT INTO counters_day AS c (bucket, metric, app, platform, reason, value)
SELECT $1::timestamptz, metric, app, platform, reason, value FROM nudge_flush_rows
ON CONFLICT (bucket, metric, app, platform, reason) DO UPDATE SET value = c.value + EXCLUDED.value`
)

var rowColumns = []string{"metric", "app", "platform", "reason", "value"}

// write applies one flush in one transaction and reports whether it did
// (false: the flush id was applied before, nothing was written).
func (f *Flusher) write(ctx context.Context, shard int, id string, minute int64, rows []row) (bool, error) {
	bucket := time.Unix(minute*60, 0).UTC()
	if err := f.ensurePartitions(ctx, bucket, bucket); err != nil {
		return false, fmt.Errorf("flush %s: %w", id, err)
	}
	applied, err := f.writeTx(ctx, shard, id, minute, bucket, rows)
	if err != nil {
		// The partition may have been dropped since it was cached.
		f.forgetPartition(bucket)
		return false, fmt.Errorf("flush %s: write: %w", id, err)
	}
	return applied, nil
}

func (f *Flusher) writeTx(ctx context.Context, shard int, id string, minute int64, bucket time.Time, rows []row) (bool, error) {
	tx, err := f.db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback(ctx) }() // a no-op after Commit

	tag, err := tx.Exec(ctx, `INSERT INTO flushes (flush_id, shard, minute, rows) VALUES ($1, $2, $3, $4)
ON CONFLICT (flush_id) DO NOTHING`, id, shard, minute, len(rows))
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	if len(rows) > 0 {
		if _, err := tx.Exec(ctx, createRowsTable); err != nil {
			return false, err
		}
		values := make([]any, len(rowColumns)) // CopyFrom encodes a row before asking for the next
		src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			r := &rows[i]
			values[0], values[1], values[2], values[3], values[4] = r.Metric, r.App, r.Platform, r.Reason, r.value
			return values, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"nudge_flush_rows"}, rowColumns, src); err != nil {
			return false, err
		}
		for _, u := range []struct {
			sql    string
			bucket time.Time
		}{
			{upsertMinute, bucket},
			{upsertHour, bucket.Truncate(time.Hour)},
			{upsertDay, bucket.Truncate(24 * time.Hour)}, // UTC midnight: Truncate counts from year 1, 00:00 UTC
		} {
			if _, err := tx.Exec(ctx, u.sql, u.bucket); err != nil {
				return false, err
			}
		}
	}
	if err := f.hook(StepWritten); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// ensurePartitions makes sure counters_minute has the monthly partitions
// from the month of from to the month of to.
func (f *Flusher) ensurePartitions(ctx context.Context, from, to time.Time) error {
	var missing bool
	f.mu.Lock()
	for m := monthStart(from); !m.After(to); m = m.AddDate(0, 1, 0) {
		if !f.months[m] {
			missing = true
			break
		}
	}
	f.mu.Unlock()
	if !missing {
		return nil
	}
	err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		// Creating a partition locks counters_minute: rather fail and retry
		// next round than queue every reader behind a long report.
		if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", "5s"); err != nil {
			return err
		}
		var created int
		if err := tx.QueryRow(ctx, "SELECT counters_minute_create_partitions($1, $2)", from, to).Scan(&created); err != nil {
			return err
		}
		if created > 0 {
			f.log.Info("flush: created counters_minute partitions", "count", created, "from", monthStart(from), "to", monthStart(to))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create partitions: %w", err)
	}
	f.mu.Lock()
	for m := monthStart(from); !m.After(to); m = m.AddDate(0, 1, 0) {
		f.months[m] = true
	}
	f.mu.Unlock()
	return nil
}

func (f *Flusher) forgetPartition(t time.Time) {
	f.mu.Lock()
	delete(f.months, monthStart(t))
	f.mu.Unlock()
}

// truncate shortens a value for a log line.
func truncate(s string) string {
	const maxLen = 120
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "…"
}
