package chaos_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/chaos"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
)

// The Redis restart run of CI: 10,000 events at 500/s while a Redis of the
// run's own, with the persistence deploy/README.md requires, is stopped
// (SIGTERM) and started again twice: after 1.5 s, and after 4 s, longer
// than the ingest leases (3 s), so the consumers take shards over from
// each other. Every binary must reconnect by itself and the totals stay
// exact.
func TestRedisRestart(t *testing.T) {
	server := redistest.Server(t, "the pipeline and a Redis of its own, restarted twice in about a minute")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := chaos.RunRedisRestart(ctx, chaos.RestartConfig{
		Root: "../..", RedisServer: server, DatabaseURL: pgtest.NewDatabase(t), Dir: t.TempDir(),
		Events: 10_000, Rate: 500, Restarts: 2, Pauses: []time.Duration{1500 * time.Millisecond, 4 * time.Second},
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d events (%d entries, %d after the last restart), %d pushes (%d after), producer retries %d (%d entries recovered), exits %v, in %s",
		rep.Redis, rep.Events, rep.Published, rep.AfterLastRestart, rep.Pushes, rep.PushesAfterLastRestart,
		rep.Retries, rep.Recovered, rep.Exits, rep.Elapsed.Round(time.Second))
	for i, o := range rep.Outages {
		t.Logf("restart %d at %d entries: shutdown %s, down %s, every binary working again %s later (slowest %s)",
			i+1, o.At, o.Stop.Round(time.Millisecond), o.Down.Round(time.Millisecond), o.Recovered.Round(time.Millisecond), o.Slowest)
	}
	for _, m := range []string{"events_applied", "messages_sent", "reads", "duplicates"} {
		t.Logf("  %-16s %8d in Postgres, %8d expected", m, rep.Totals[m], rep.Expected[m])
	}
	for _, f := range rep.Failures {
		t.Error(f)
	}
}
