package flush_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/bench"
	"github.com/nudgehq/nudge/keys"
)

// benchRows is the size of the flush the benchmarks measure: one shard's
// minute with this many distinct counters, half of them already in
// Postgres (round i writes counters i*n/2 .. i*n/2+n; the first half were
// written by round i-1, or by the seeding).
const benchRows = 100_000

// fillMinute writes counters from..to-1 into the counters hash of minute
// of shard 0, as counters.Add would, in pipelined chunks.
func fillMinute(b *testing.B, bb *bundle, minute time.Time, from, to int) {
	b.Helper()
	ctx := context.Background()
	key := bb.ks.Counters(0, keys.Minute(minute))
	pipe := bb.rdb.Pipeline()
	fields := make([]any, 0, 2000)
	for k := from; k < to; k++ {
		fields = append(fields, counters.Field(bench.FlushDims(k)), 1)
		if len(fields) == cap(fields) || k == to-1 {
			pipe.HSet(ctx, key, fields...)
			fields = fields[:0]
		}
	}
	m := keys.Minute(minute)
	pipe.ZAdd(ctx, bb.ks.CounterIndex(0), redis.Z{Score: float64(m), Member: strconv.FormatInt(m, 10)})
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFlush100k measures one flush of 100k distinct counters, half of
// them updates: Redis snapshot and read, parsing, and the Postgres
// transaction writing minute, hour and day rows.
func BenchmarkFlush100k(b *testing.B) {
	ctx := context.Background()
	bb := setup(b)
	minute := base
	bb.closeAll(minute)
	f := bb.flusher(b, nil)

	fillMinute(b, bb, minute, 0, benchRows/2) // seed the half already in Postgres
	if _, err := f.FlushOnce(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		fillMinute(b, bb, minute, i*benchRows/2, i*benchRows/2+benchRows)
		b.StartTimer()
		st, err := f.FlushOnce(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if st.Rows != benchRows {
			b.Fatalf("flushed %d rows, want %d", st.Rows, benchRows)
		}
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkRawCopyMerge is the floor for BenchmarkFlush100k: the same rows,
// already in memory, COPYed into a temporary table and merged with one
// INSERT ... ON CONFLICT per table, in one transaction (bench.CopyMerge,
// which make bench measures too). "minute" merges into counters_minute
// only; "all-tables" into minute, hour and day, as a flush does.
func BenchmarkRawCopyMerge(b *testing.B) {
	for _, bc := range []struct {
		name   string
		tables []string
	}{
		{"minute", []string{"counters_minute"}},
		{"all-tables", []string{"counters_minute", "counters_hour", "counters_day"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			bb := setup(b)
			bucket := base
			if _, err := bb.db.Exec(ctx, "SELECT counters_minute_create_partitions($1, $1)", bucket); err != nil {
				b.Fatal(err)
			}
			// CopyMerge writes rows 0..n-1: seed the first half, then
			// merge all of them (half updates in the first iteration,
			// all updates after it; run with -benchtime 1x to compare
			// with BenchmarkFlush100k).
			if err := bench.CopyMerge(ctx, bb.db, bucket, bc.tables, benchRows/2); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := bench.CopyMerge(ctx, bb.db, bucket, bc.tables, benchRows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
