package flush_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/keys"
)

// addActive records users as active in a shard on a day, as ingest does.
func (b *bundle) addActive(t testing.TB, shard int, day time.Time, app string, users ...string) {
	t.Helper()
	ctx := context.Background()
	members := make([]any, len(users))
	for i, u := range users {
		members[i] = u
	}
	d := keys.Day(day)
	if err := b.rdb.PFAdd(ctx, b.ks.ActiveUsers(shard, d, app), members...).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, time.UTC)
	if err := b.rdb.ZAdd(ctx, b.ks.ActiveUsersIndex(shard), redis.Z{Score: float64(start.Unix()), Member: d + "|" + app}).Err(); err != nil {
		t.Fatal(err)
	}
}

// wantActive is the count Redis gives for the union of every shard's
// HyperLogLog of (day, app): what the flusher must persist.
func (b *bundle) wantActive(t testing.TB, day time.Time, app string) int64 {
	t.Helper()
	var ks []string
	for shard := range testShards {
		ks = append(ks, b.ks.ActiveUsers(shard, keys.Day(day), app))
	}
	n, err := b.rdb.PFCount(context.Background(), ks...).Result() // one server: cross-slot is fine here
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (b *bundle) activeUsers(t testing.TB) map[string]int64 {
	t.Helper()
	rows, err := b.db.Query(context.Background(), "SELECT day, app, users FROM daily_active_users WHERE users >= $1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var (
			day   time.Time
			app   string
			users int64
		)
		if err := rows.Scan(&day, &app, &users); err != nil {
			t.Fatal(err)
		}
		out[keys.Day(day)+"|"+app] = users
	}
	return out
}

func users(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, prefix+strconv.Itoa(i))
	}
	return out
}

func TestActiveUsersMergedAcrossShardsAndSet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	b.clock.Set(now)
	today, yesterday, old := now, now.AddDate(0, 0, -1), now.AddDate(0, 0, -3)

	// Users overlap across shards (a user is active in several
	// conversations' shards): the count is of distinct users.
	for shard := range testShards {
		b.addActive(t, shard, today, "chat", users("u", shard*100, shard*100+300)...) // 0..599 overall
		b.addActive(t, shard, yesterday, "chat", users("u", 0, 50)...)
	}
	b.addActive(t, 2, today, "crm", users("c", 0, 10)...)
	b.addActive(t, 1, old, "chat", users("o", 0, 20)...)
	b.addActive(t, 3, old, "chat", users("o", 10, 40)...)

	want := map[string]int64{}
	for _, p := range []struct {
		day time.Time
		app string
	}{{today, "chat"}, {yesterday, "chat"}, {today, "crm"}, {old, "chat"}} {
		want[keys.Day(p.day)+"|"+p.app] = b.wantActive(t, p.day, p.app)
	}
	if n := want[keys.Day(today)+"|chat"]; n < 580 || n > 620 {
		t.Fatalf("HyperLogLog of 600 distinct users counts %d: the test data is wrong", n)
	}

	f := b.flusher(t, nil)
	for round := range 2 { // twice: a gauge is set, not added
		st, err := f.FlushOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := b.activeUsers(t)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: daily_active_users = %v, want %v", round, got, want)
		}
		wantClosed := 1
		if round == 1 {
			wantClosed = 0
		}
		if st.DaysClosed != wantClosed {
			t.Fatalf("round %d: %d days closed, want %d", round, st.DaysClosed, wantClosed)
		}
	}

	// The old day left the indexes; today and yesterday stay.
	for shard := range testShards {
		members, err := b.rdb.ZRange(ctx, b.ks.ActiveUsersIndex(shard), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			if m == keys.Day(old)+"|chat" {
				t.Fatalf("shard %d still lists the past day %s", shard, m)
			}
		}
	}

	// More users today: the gauge follows.
	b.addActive(t, 0, today, "chat", users("new", 0, 100)...)
	if _, err := f.FlushOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got, w := b.activeUsers(t)[keys.Day(today)+"|chat"], b.wantActive(t, today, "chat"); got != w || got <= want[keys.Day(today)+"|chat"] {
		t.Fatalf("after more users: %d, want %d (more than before)", got, w)
	}
	b.assertNoKeys(t, ":dau:", ":dauidx")
}

func TestActiveUsersBadDataSkipped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	b.clock.Set(now)
	b.addActive(t, 0, now, "chat", "a", "b", "c")
	b.addActive(t, 1, now, "broken", "x")
	// Not a HyperLogLog at all, and one with the magic but corrupt.
	if err := b.rdb.Set(ctx, b.ks.ActiveUsers(1, keys.Day(now), "broken"), "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	b.addActive(t, 2, now, "corrupt", "x")
	if err := b.rdb.Set(ctx, b.ks.ActiveUsers(2, keys.Day(now), "corrupt"), "HYLL\x00garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.rdb.ZAdd(ctx, b.ks.ActiveUsersIndex(3), redis.Z{Score: 0, Member: "not-a-day"}).Err(); err != nil {
		t.Fatal(err)
	}

	st, err := b.flusher(t, nil).FlushOnce(ctx)
	if err == nil {
		t.Fatal("a corrupt HyperLogLog went unreported")
	}
	if st.ActiveUsers != 1 {
		t.Fatalf("stats = %+v, want the one good pair set", st)
	}
	if got := b.activeUsers(t); len(got) != 1 || got[keys.Day(now)+"|chat"] != 3 {
		t.Fatalf("daily_active_users = %v, want only chat = 3", got)
	}
	if n, _ := b.rdb.Exists(ctx, b.ks.ActiveUsersIndex(3)).Result(); n != 0 {
		t.Fatal("bad index entry not removed")
	}
	// The merge left no temporary key behind, even when it failed.
	b.assertNoKeys(t, ":dau:", ":dauidx")
}

func TestActiveUsersCrashBeforeIndexCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	old := now.AddDate(0, 0, -2)
	b.clock.Set(now)
	b.addActive(t, 0, old, "chat", users("u", 0, 30)...)
	b.addActive(t, 1, old, "chat", users("u", 20, 40)...)
	want := b.wantActive(t, old, "chat")

	dying := b.flusher(t, func(c *flush.Config) { c.Hook = crashAt(flush.StepActiveUsersWritten) })
	if _, err := dying.FlushOnce(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("dying flusher: %v", err)
	}
	st, err := b.flusher(t, nil).FlushOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.activeUsers(t)[keys.Day(old)+"|chat"]; got != want || st.DaysClosed != 1 {
		t.Fatalf("users = %d, days closed = %d; want %d, 1", got, st.DaysClosed, want)
	}
	for shard := range testShards {
		if n, _ := b.rdb.Exists(ctx, b.ks.ActiveUsersIndex(shard)).Result(); n != 0 {
			t.Fatalf("shard %d index still lists the past day", shard)
		}
	}
}
