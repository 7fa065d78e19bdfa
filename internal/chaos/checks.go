package chaos

// The checks of a run's end: Redis state and PostgreSQL totals against the
// oracle, conversions, secrets in the logs; and the waits before them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push/sandbox"
)

// checkState compares Postgres totals and unread state (both ways) with
// the oracle, and checks dead letters (the traffic had no bad input) and
// duplicate pushes.
func checkState(ctx context.Context, rep *Report, db *pgxpool.Pool, rdb *redis.Client, ks keys.Keyspace,
	o *oracle.Oracle, sb *sandbox.Server) error {
	var err error
	if rep.Totals, err = sums(ctx, db, "SELECT metric, sum(value)::bigint FROM counters_minute GROUP BY metric"); err != nil {
		return err
	}
	for _, m := range metrics {
		if rep.Totals[m] != rep.Expected[m] {
			rep.fail("%s: %d in Postgres, %d expected", m, rep.Totals[m], rep.Expected[m])
		}
	}

	want := o.Unread()
	rep.Unread = len(want)
	for k, n := range want {
		// The count is the badge's field; the episode must be there too.
		s := ks.Shard(k.Conversation)
		got, err := rdb.HGet(ctx, ks.Badge(s, k.User), k.Conversation).Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if got != n {
			rep.fail("unread of %s in %s: %d, oracle %d", k.User, k.Conversation, got, n)
		}
		if id, err := rdb.HGet(ctx, ks.Episode(s, k.User, k.Conversation), "id").Result(); id == "" {
			rep.fail("unread of %s in %s: no episode (%v)", k.User, k.Conversation, err)
		}
	}
	for s := 0; s < ks.Shards; s++ {
		iter := rdb.Scan(ctx, 0, ks.Episode(s, "*", "*"), 1000).Iterator()
		extra := 0
		for iter.Next(ctx) {
			_, rest, _ := strings.Cut(iter.Val(), ":ep:")
			conv, user, _ := strings.Cut(rest, "|")
			if _, ok := want[oracle.Key{User: user, Conversation: conv}]; !ok {
				extra++
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if extra > 0 {
			rep.fail("shard %d: %d unread episodes the oracle does not have", s, extra)
		}
		if n := rdb.XLen(ctx, ks.DeadLetter(s)).Val(); n > 0 {
			rep.fail("shard %d: %d dead letters", s, n)
		}
	}

	// Never two pushes to a device for one reminder.
	seen := map[string]int{}
	for _, d := range sb.Deliveries() {
		rep.Pushes++
		seen[d.Token+"|"+d.Data["conversation_id"]+"|"+d.Data["episode"]+"|"+d.Data["stage"]]++
	}
	for k, n := range seen {
		if n > 1 {
			rep.Duplicates++
			if rep.Duplicates <= 5 {
				rep.fail("device got reminder %s %d times", k, n)
			}
		}
	}
	if rep.Pushes == 0 {
		rep.fail("no push was delivered")
	}
	// Effectiveness: every reminder sent counted pushed once, by stage.
	if pushed, sent := rep.Totals["reminders_pushed"], rep.Totals["reminders_sent"]; pushed != sent {
		rep.fail("reminders_pushed %d, reminders_sent %d: a push counted by stage other than once", pushed, sent)
	}
	return nil
}

// checkConversions compares the conversions in PostgreSQL, by stage and
// by read-delay bucket, with the oracle's (oracle.Conversions): the
// episodes the traffic closed, and when each stage of each was recorded
// pushed (the outcome in its sent set, jobs.Outcome).
func checkConversions(ctx context.Context, rep *Report, db *pgxpool.Pool, rdb *redis.Client, ks keys.Keyspace, eps []oracle.Episode) error {
	type stageSet struct {
		ep    int
		stage int
		cmd   *redis.StringSliceCmd
	}
	var sets []stageSet
	pipe := rdb.Pipeline()
	for i, ep := range eps {
		if ep.CloseID == "" {
			continue
		}
		for s := 1; s <= len(stages); s++ {
			r := jobs.Reminder{User: ep.User, Conversation: ep.Conversation, Episode: ep.ID, Stage: s}
			sets = append(sets, stageSet{i, s, pipe.SMembers(ctx, ks.Sent(ks.Shard(ep.Conversation), r.ID()))})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	pushedAt := map[[2]int]time.Time{} // (episode index, stage) -> outcome time
	for _, st := range sets {
		for _, m := range st.cmd.Val() {
			if o, ok := jobs.ParseOutcome(m); ok && o.Metric == counters.RemindersSent {
				pushedAt[[2]int{st.ep, st.stage}] = o.At
			}
		}
	}
	index := make(map[string]int, len(eps))
	for i, ep := range eps {
		index[ep.User+"|"+ep.Conversation+"|"+ep.ID] = i
	}
	wantConv, wantDelay := oracle.Conversions(eps, len(stages), ingest.DefaultConversionWindow, func(ep oracle.Episode, s int) (time.Time, bool) {
		t, ok := pushedAt[[2]int{index[ep.User+"|"+ep.Conversation+"|"+ep.ID], s}]
		return t, ok
	})
	for metric, want := range map[string]map[string]int64{counters.RemindersConverted: wantConv, counters.ReadDelay: wantDelay} {
		got, err := sums(ctx, db, "SELECT reason, sum(value)::bigint FROM counters_minute WHERE metric = $1 GROUP BY reason", metric)
		if err != nil {
			return err
		}
		for reason := range want {
			got[reason] += 0 // every reason of either, once
		}
		for reason, n := range got {
			if n != want[reason] {
				rep.fail("%s{%s}: %d in Postgres, oracle %d", metric, reason, n, want[reason])
			}
		}
		if metric == counters.RemindersConverted {
			for _, n := range want {
				rep.Converted += n
			}
		}
	}
	return nil
}

// sums runs a query of (key, sum) rows and returns them as a map.
func sums(ctx context.Context, db *pgxpool.Pool, query string, args ...any) (map[string]int64, error) {
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			rows.Close()
			return nil, err
		}
		out[k] = n
	}
	rows.Close()
	return out, rows.Err()
}

// scanLogs returns where a secret (a device token, a message preview)
// appears in a log file.
func scanLogs(dir string, secrets map[string]bool) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no logs to scan in %s", dir)
	}
	var leaks []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				leaks = append(leaks, fmt.Sprintf("%s holds %q", filepath.Base(f), s[:min(len(s), 12)]+"…"))
				if len(leaks) >= 5 {
					return leaks, nil
				}
			}
		}
	}
	return leaks, nil
}

// drained reports whether every shard's entries were read and applied.
func drained(ctx context.Context, rdb *redis.Client, ks keys.Keyspace) (bool, error) {
	for s := 0; s < ks.Shards; s++ {
		info, err := rdb.XInfoStream(ctx, ks.Stream(s)).Result()
		if err != nil {
			return false, err
		}
		groups, err := rdb.XInfoGroups(ctx, ks.Stream(s)).Result()
		if err != nil {
			return false, err
		}
		for _, g := range groups {
			if g.Pending > 0 || g.LastDeliveredID != info.LastGeneratedID {
				return false, nil
			}
		}
	}
	return true, nil
}

// streamState describes the shards' streams, consumer group, consumers
// and leases, for a run that did not drain.
func streamState(ctx context.Context, rdb *redis.Client, ks keys.Keyspace) string {
	var b strings.Builder
	members, _ := rdb.ZRangeWithScores(ctx, ks.Members(), 0, -1).Result()
	fmt.Fprintf(&b, "members %v (now %d)\n", members, time.Now().UnixMilli())
	for s := 0; s < ks.Shards; s++ {
		info, err := rdb.XInfoStream(ctx, ks.Stream(s)).Result()
		if err != nil {
			fmt.Fprintf(&b, "shard %d: %v\n", s, err)
			continue
		}
		lease, _ := rdb.Get(ctx, ks.Lease(s)).Result()
		ttl, _ := rdb.PTTL(ctx, ks.Lease(s)).Result()
		fmt.Fprintf(&b, "shard %d: length %d, last generated %s, lease %q (%s)\n", s, info.Length, info.LastGeneratedID, lease, ttl)
		groups, _ := rdb.XInfoGroups(ctx, ks.Stream(s)).Result()
		for _, g := range groups {
			fmt.Fprintf(&b, "  group %s: pending %d, last delivered %s, lag %d\n", g.Name, g.Pending, g.LastDeliveredID, g.Lag)
			consumers, _ := rdb.XInfoConsumers(ctx, ks.Stream(s), g.Name).Result()
			for _, c := range consumers {
				fmt.Fprintf(&b, "    consumer %s: pending %d, idle %s, inactive %s\n", c.Name, c.Pending, c.Idle, c.Inactive)
			}
		}
	}
	return b.String()
}

// flushedAll reports whether no counter and no snapshot is left in Redis.
func flushedAll(ctx context.Context, rdb *redis.Client, ks keys.Keyspace) (bool, error) {
	for s := 0; s < ks.Shards; s++ {
		for _, k := range []string{ks.CounterIndex(s), ks.SnapshotIndex(s)} {
			n, err := rdb.ZCard(ctx, k).Result()
			if err != nil {
				return false, err
			}
			if n > 0 {
				return false, nil
			}
		}
	}
	return true, nil
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
