package schema_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/schema"
)

var allTables = []string{
	"counters_minute", "counters_hour", "counters_day", "flushes", "daily_active_users",
	"devices", "user_prefs", "conversation_prefs",
}

func tableExists(t *testing.T, db *pgxpool.Pool, name string) bool {
	t.Helper()
	var ok bool
	if err := db.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestUpDownStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPool(t)
	all, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}

	st, err := schema.Status(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != len(all) {
		t.Fatalf("status of an empty database lists %d migrations, want %d", len(st), len(all))
	}
	for _, s := range st {
		if s.Applied || !s.AppliedAt.IsZero() {
			t.Errorf("%04d applied in an empty database", s.Version)
		}
	}

	done, err := schema.Up(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != len(all) {
		t.Fatalf("up applied %d, want %d", len(done), len(all))
	}
	for _, name := range allTables {
		if !tableExists(t, db, name) {
			t.Errorf("table %s missing after up", name)
		}
	}
	// The migration created the partitions of this month and the next.
	for _, m := range []time.Time{time.Now().UTC(), time.Now().UTC().AddDate(0, 0, 31)} {
		if name := "counters_minute_" + m.Format("200601"); !tableExists(t, db, name) {
			t.Errorf("partition %s missing after up", name)
		}
	}
	if done, err := schema.Up(ctx, db); err != nil || len(done) != 0 {
		t.Fatalf("second up = %d applied, %v; want 0, nil", len(done), err)
	}
	st, err = schema.Status(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied || s.AppliedAt.IsZero() || s.Unknown {
			t.Errorf("after up: %+v", s)
		}
	}

	done, err = schema.Down(ctx, db, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 1 || done[0].Version != all[len(all)-1].Version {
		t.Fatalf("down 0 steps reverted %+v, want the last migration only", done)
	}
	if done, err = schema.Down(ctx, db, 100); err != nil || len(done) != len(all)-1 {
		t.Fatalf("down 100 = %d reverted, %v; want %d", len(done), err, len(all)-1)
	}
	for _, name := range allTables {
		if tableExists(t, db, name) {
			t.Errorf("table %s left after down", name)
		}
	}
	// Down scripts undo everything: up works again.
	if done, err := schema.Migrate(ctx, db, schema.DirectionUp, 1); err != nil || len(done) != 1 {
		t.Fatalf("up 1 step = %d applied, %v", len(done), err)
	}
	if done, err := schema.Up(ctx, db); err != nil || len(done) != len(all)-1 {
		t.Fatalf("up rest = %d applied, %v", len(done), err)
	}
}

func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	all, _ := schema.Migrations()

	const runners = 6
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		errs  []error
	)
	for range runners {
		// One pool per runner: like separate processes.
		db, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		wg.Go(func() {
			done, err := schema.Up(ctx, db)
			mu.Lock()
			defer mu.Unlock()
			total += len(done)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if total != len(all) {
		t.Fatalf("%d runners applied %d migrations in total, want each once: %d", runners, total, len(all))
	}
}

func TestDownUnknownVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPool(t)
	if _, err := schema.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 9999, "future"); err != nil {
		t.Fatal(err)
	}
	st, err := schema.Status(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	last := st[len(st)-1]
	if last.Version != 9999 || !last.Unknown || !last.Applied || last.Name != "future" {
		t.Fatalf("last status = %+v, want the unknown 9999", last)
	}
	if _, err := schema.Down(ctx, db, 1); !errors.Is(err, schema.ErrUnknownVersion) {
		t.Fatalf("down = %v, want ErrUnknownVersion", err)
	}
	if _, err := schema.Migrate(ctx, db, "sideways", 1); err == nil {
		t.Fatal("migrate sideways: no error")
	}
}

func TestCountersMinutePartitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPool(t)
	if _, err := schema.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	// Run the tests in a time zone far from UTC: partitions follow UTC months.
	db.Reset()
	if _, err := db.Exec(ctx, "ALTER DATABASE "+currentDatabase(t, db)+" SET timezone TO 'Pacific/Kiritimati'"); err != nil {
		t.Fatal(err)
	}
	db.Reset()

	from := time.Date(2020, 1, 31, 23, 59, 0, 0, time.UTC)
	to := time.Date(2020, 3, 1, 0, 0, 0, 0, time.UTC)
	var created int
	if err := db.QueryRow(ctx, "SELECT counters_minute_create_partitions($1, $2)", from, to).Scan(&created); err != nil {
		t.Fatal(err)
	}
	if created != 3 {
		t.Fatalf("created %d partitions for Jan..Mar 2020, want 3", created)
	}
	if err := db.QueryRow(ctx, "SELECT counters_minute_create_partitions($1, $2)", from, to).Scan(&created); err != nil || created != 0 {
		t.Fatalf("second call created %d, %v; want 0", created, err)
	}

	tests := []struct {
		bucket    time.Time
		partition string
	}{
		{time.Date(2020, 1, 31, 23, 59, 0, 0, time.UTC), "counters_minute_202001"},
		{time.Date(2020, 2, 1, 0, 0, 0, 0, time.UTC), "counters_minute_202002"},
		{time.Date(2020, 3, 31, 23, 59, 0, 0, time.UTC), "counters_minute_202003"},
	}
	for _, tt := range tests {
		var part string
		err := db.QueryRow(ctx, `
INSERT INTO counters_minute (bucket, metric, app, platform, reason, value)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING tableoid::regclass::text`,
			tt.bucket, "m", "a", "", "", 1).Scan(&part)
		if err != nil {
			t.Fatal(err)
		}
		if part != tt.partition {
			t.Errorf("row of %s went to %s, want %s", tt.bucket, part, tt.partition)
		}
	}
	_, err := db.Exec(ctx, "INSERT INTO counters_minute (bucket, metric, app, platform, reason, value) VALUES ($1, $2, $3, $4, $5, $6)",
		time.Date(2019, 6, 1, 0, 0, 0, 0, time.UTC), "m", "a", "", "", 1)
	if err == nil {
		t.Fatal("insert into a month without partition succeeded")
	}
	if err := db.QueryRow(ctx, "SELECT counters_minute_create_partitions($1, $2)", to, from).Scan(&created); err == nil {
		t.Fatal("reversed range accepted")
	}
}

func currentDatabase(t *testing.T, db *pgxpool.Pool) string {
	t.Helper()
	var name string
	if err := db.QueryRow(context.Background(), "SELECT quote_ident(current_database())").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}
