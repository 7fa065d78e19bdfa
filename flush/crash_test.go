package flush_test

import (
	"context"
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

// crashBinaries builds the crashing flusher and the real cmd/flusher.
func crashBinaries(t *testing.T) (crasher, flusher string) {
	t.Helper()
	return buildtest.Command(t, "./testdata/crashflusher"), buildtest.Command(t, "../cmd/flusher")
}

// A real flusher process is SIGKILLed after each step of a flush; the real
// cmd/flusher started afterwards finishes its leftovers. The totals in
// Postgres are exact and no snapshot is left in Redis.
func TestCrashMatrixWithRealProcesses(t *testing.T) {
	t.Parallel()
	for _, step := range []string{flush.StepSnapshotted, flush.StepWritten, flush.StepCommitted} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			crasher, flusher := crashBinaries(t)
			ctx := context.Background()
			rdb, prefix := redistest.New(t)
			ks := keys.New(prefix, 4)
			db, dbURL := pgtest.NewMigrated(t)
			// Three closed minutes of counters in every shard.
			var want int64
			for s := 0; s < ks.Shards; s++ {
				for m := 3; m <= 5; m++ {
					at := time.Now().Add(-time.Duration(m) * time.Minute)
					n := int64(100*s + m)
					if err := counters.Add(ctx, rdb, ks, s, at, map[counters.Dims]int64{{Metric: "messages_sent", App: "chat"}: n}); err != nil {
						t.Fatal(err)
					}
					want += n
				}
			}
			cmd := exec.Command(crasher, "-redis-addr", redistest.Addr(), "-database-url", dbURL,
				"-prefix", prefix, "-shards", "4", "-crash-at", step)
			cmd.Stderr = t.Output()
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("crashflusher ended with %v, want death by SIGKILL after %s", err, step)
			}
			real := exec.Command(flusher, "-once", "-redis-url", "redis://"+redistest.Addr()+"/0", "-database-url", dbURL,
				"-prefix", prefix, "-shards", "4", "-log-level", "warn")
			real.Stdout, real.Stderr = t.Output(), t.Output()
			if err := real.Run(); err != nil {
				t.Fatalf("flusher -once: %v", err)
			}
			var got int64
			if err := db.QueryRow(ctx, "SELECT coalesce(sum(value), 0)::bigint FROM counters_minute WHERE metric = 'messages_sent'").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("after a crash at %s: %d in Postgres, want %d", step, got, want)
			}
			var day int64
			if err := db.QueryRow(ctx, "SELECT coalesce(sum(value), 0)::bigint FROM counters_day WHERE metric = 'messages_sent'").Scan(&day); err != nil || day != want {
				t.Errorf("day rollup %d (%v), want %d", day, err, want)
			}
			left, err := redistest.Keys(ctx, rdb, prefix+":")
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range left {
				t.Errorf("key left in Redis: %s", k)
			}
		})
	}
}
