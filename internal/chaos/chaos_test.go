package chaos_test

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/chaos"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
)

// The short chaos run of CI: 20,000 events at 1,000/s with a process
// SIGKILLed every 3 s. NUDGE_CHAOS_EVENTS runs a longer one.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pipeline under crashes for about two minutes")
	}
	t.Parallel()
	events := int64(20_000)
	if v := os.Getenv("NUDGE_CHAOS_EVENTS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("NUDGE_CHAOS_EVENTS: %v", err)
		}
		events = n
	}
	rdb, prefix := redistest.New(t)
	t.Cleanup(func() { redistest.DeleteQueue(t, rdb, prefix+"-reminders") })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rep, err := chaos.Run(ctx, chaos.Config{
		Root: "../..", RedisAddr: redistest.Addr(), DatabaseURL: pgtest.NewDatabase(t), Prefix: prefix,
		Events: events, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events (%d entries), kills %v, %d pushes, %d unread pairs, in %s",
		rep.Events, rep.Published, rep.Kills, rep.Pushes, rep.Unread, rep.Elapsed.Round(time.Second))
	t.Logf("%d episodes unread past their due time: %d pushed, %d failed, %d suppressed, %d cancelled by a late read, %d still queued, %d unaccounted; %d pushes read before due (closest read %s after)",
		rep.EpisodesDue, rep.EpisodesPushed, rep.EpisodesFailed, rep.EpisodesSuppressed, rep.EpisodesCancelled,
		rep.EpisodesQueued, rep.EpisodesUnaccounted, rep.ReadBeforeDue, rep.ReadMargin.Round(time.Millisecond))
	t.Logf("reactions to pushes: %d opened (%d reports, oracle %d), %d converted by a read (oracle %d), of %d reminders pushed",
		rep.Totals["reminders_opened"], rep.Totals["opened_events"], rep.Expected["reminders_opened"],
		rep.Totals["reminders_converted"], rep.Converted, rep.Totals["reminders_pushed"])
	for _, f := range rep.Failures {
		t.Error(f)
	}
}
