package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/keys"
)

// totals is what the summary line shows: counters flushed to Postgres plus
// the live ones still in Redis, and the sandbox's deliveries.
type totals struct {
	applied, opened, closed    int64
	sent, suppressed, deferred int64
	pushes                     int64
	flushedRows                int64
	lastFlush                  string
}

func (t totals) String() string {
	return fmt.Sprintf("applied %d events, %d episodes opened, %d reminders sent, %d suppressed, %d deferred, %d pushes delivered, %d minute flushes in Postgres",
		t.applied, t.opened, t.sent, t.suppressed, t.deferred, t.pushes, t.flushedRows)
}

func readTotals(ctx context.Context, rdb *redis.Client, db *pgx.Conn, prefix, sandboxAddr string) (totals, error) {
	by := map[string]int64{}
	rows, err := db.Query(ctx, "SELECT metric, sum(value)::bigint FROM counters_minute GROUP BY metric")
	if err != nil {
		return totals{}, err
	}
	for rows.Next() {
		var m string
		var n int64
		if err := rows.Scan(&m, &n); err != nil {
			rows.Close()
			return totals{}, err
		}
		by[m] += n
	}
	rows.Close()
	var t totals
	var last *time.Time
	if err := db.QueryRow(ctx, "SELECT count(*), max(applied_at) FROM flushes").Scan(&t.flushedRows, &last); err != nil {
		return totals{}, err
	}
	t.lastFlush = "never"
	if last != nil {
		t.lastFlush = time.Since(*last).Round(time.Second).String() + " ago"
	}
	ks := keys.New(prefix, 0)
	for s := 0; s < ks.Shards; s++ {
		mins, err := rdb.ZRange(ctx, ks.CounterIndex(s), 0, -1).Result()
		if err != nil {
			return totals{}, err
		}
		for _, m := range mins {
			n, _ := strconv.ParseInt(m, 10, 64)
			h, err := rdb.HGetAll(ctx, ks.Counters(s, n)).Result()
			if err != nil {
				return totals{}, err
			}
			for f, v := range h {
				d, err := counters.ParseField(f)
				if err != nil {
					continue
				}
				x, _ := strconv.ParseInt(v, 10, 64)
				by[d.Metric] += x
			}
		}
	}
	t.applied = by[counters.EventsApplied]
	t.opened, t.closed = by[counters.EpisodesOpened], by[counters.EpisodesClosed]
	t.sent, t.suppressed, t.deferred = by[counters.RemindersSent], by[counters.RemindersSuppr], by[counters.RemindersDefer]

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+sandboxAddr+"/sandbox/stats", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t, nil // the sandbox is not up yet
	}
	defer resp.Body.Close()
	var st struct {
		FCM  struct{ Delivered int64 } `json:"fcm"`
		APNs struct{ Delivered int64 } `json:"apns"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) == nil {
		t.pushes = st.FCM.Delivered + st.APNs.Delivered
	}
	return t, nil
}
