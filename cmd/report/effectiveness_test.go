package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nudgehq/nudge/counters"
)

// report effectiveness prints, per stage, what reminders did, as a table
// and as CSV, with rates of the pushes that never pass 100 %.
func TestEffectivenessCommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	db, err := pgxpool.New(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ts := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		for _, r := range []struct {
			metric, platform, reason string
			v                        int64
		}{
			{counters.RemindersPushed, "fcm", "1", 200}, {counters.RemindersOpened, "fcm", "1", 50},
			{counters.RemindersConverted, "fcm", "1", 80}, {counters.ReadDelay, "fcm", "1:120", 80},
			{counters.RemindersPushed, "apns", "2", 10}, {counters.RemindersOpened, "apns", "2", 12},
		} {
			for table, bucket := range map[string]time.Time{"counters_minute": ts, "counters_hour": ts, "counters_day": ts.Truncate(24 * time.Hour)} {
				if _, err := tx.Exec(ctx, `INSERT INTO `+table+` (bucket, metric, app, platform, reason, value) VALUES ($1, $2, 'chat', $3, $4, $5)`,
					bucket, r.metric, r.platform, r.reason, r.v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := run(ctx, []string{"effectiveness", "-from", "2026-03-10", "-to", "2026-03-11"}, b.getenv, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"stage  pushed  opened  open rate  converted  conversion rate  median push to read",
		"    1     200      50     25.0 %         80           40.0 %                1m30s",
		"    2      10      12    100.0 %          0            0.0 %                    -",
		"Rates are of the reminders of the stage pushed in the range (at most 100 %)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run(ctx, []string{"effectiveness", "-from", "2026-03-10", "-to", "2026-03-11", "-format", "csv", "-platform", "fcm"}, b.getenv, &out); err != nil {
		t.Fatal(err)
	}
	if want := "stage,pushed,opened,converted,open_rate,conversion_rate,base,median_read_seconds,live\n" +
		"1,200,50,80,0.2500,0.4000,reminders of the stage pushed in the range,90.0000,false\n"; out.String() != want {
		t.Errorf("csv:\n%s\nwant:\n%s", out.String(), want)
	}
	if err := run(ctx, []string{"effectiveness", "-from", "yesterday"}, b.getenv, &out); err == nil || !strings.Contains(err.Error(), "-from") {
		t.Errorf("a bad -from: %v", err)
	}
}
