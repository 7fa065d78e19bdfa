package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
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
	remindersOpened, converted int64
	dead                       int64
	pushes                     int64
	flushedRows                int64
	lastMinute                 *time.Time // the last minute in PostgreSQL
	// reasons: metric -> reason -> count, of dead letters and of
	// reminders dropped or put off.
	reasons map[string]map[string]int64
}

// lines is the final summary: one line a figure, its reasons in words
// after it, each line at most 100 columns.
func (t totals) lines() []string {
	var out []string
	row := func(what string, n int64, metric string) {
		line := fmt.Sprintf("  %-30s %s", what, thousands(n))
		for _, r := range t.because(metric) {
			// ": " or ", " before the reason, and room for the "," that
			// ends the line if another reason follows on the next.
			if len(line)+2+len(r)+1 > 100 {
				out = append(out, line+",")
				line = fmt.Sprintf("  %-30s   ", "")
			} else if strings.HasSuffix(line, thousands(n)) {
				line += ": "
			} else {
				line += ", "
			}
			line += r
		}
		out = append(out, line)
	}
	row("events applied", t.applied, "")
	row("bad entries dead-lettered", t.dead, counters.DeadLettered)
	row("unread episodes opened", t.opened, "")
	row("reminders sent", t.sent, "")
	row("reminders dropped", t.suppressed, counters.RemindersSuppr)
	row("reminders put off", t.deferred, counters.RemindersDefer)
	row("pushes delivered", t.pushes, "")
	row("reminders opened", t.remindersOpened, "")
	row("reminders converted (read)", t.converted, "")
	out = append(out, fmt.Sprintf("  %-30s %s", "counters in PostgreSQL", t.flushed()))
	return out
}

// flushed says how far the counters reached PostgreSQL: the flusher
// writes each minute once it has closed.
func (t totals) flushed() string {
	if t.lastMinute == nil {
		return "none yet (a minute is flushed once it has closed)"
	}
	return "up to " + t.lastMinute.Add(time.Minute).Local().Format("15:04")
}

// because lists the reasons of metric, most frequent first, in words:
// "user online 4,504".
func (t totals) because(metric string) []string {
	rs := t.reasons[metric]
	names := make([]string, 0, len(rs))
	for r := range rs {
		names = append(names, r)
	}
	sort.Slice(names, func(i, j int) bool {
		if rs[names[i]] != rs[names[j]] {
			return rs[names[i]] > rs[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, r := range names {
		parts[i] = inWords(r) + " " + thousands(rs[r])
	}
	return parts
}

// reasonWords says a reason code the way a person would.
var reasonWords = map[string]string{
	"online": "user online", "quiet_hours": "quiet hours", "rate_limited": "over the rate limit",
	"not_applied": "message not applied yet", "early": "task early", "lock_busy": "another send running",
	"muted": "conversation muted", "mentions_only": "not mentioned", "no_devices": "no device",
	"digested": "in a digest", "gave_up": "gave up", "read": "read in time",
	"invalid_json": "not JSON", "unknown_type": "unknown event type", "missing_field": "a field missing",
	"invalid_field": "a field invalid", "too_large": "too large", "field_too_large": "a field too large",
	"unsupported_version": "unknown version", "duplicate_key": "a key twice", "invalid_utf8": "not UTF-8",
	"no_event_field": "no event field", "wrong_shard": "wrong shard", "max_deliveries": "delivered too often",
	"apply_failed": "Redis refused it",
}

func inWords(reason string) string {
	if w, ok := reasonWords[reason]; ok {
		return w
	}
	if reason == "" {
		return "no reason"
	}
	return strings.ReplaceAll(reason, "_", " ")
}

// thousands writes n with commas: 12,345.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}

func readTotals(ctx context.Context, rdb *redis.Client, db *pgx.Conn, prefix, sandboxAddr string) (totals, error) {
	by := map[string]int64{}
	t := totals{reasons: map[string]map[string]int64{}}
	add := func(metric, reason string, n int64) {
		by[metric] += n
		switch metric {
		case counters.DeadLettered, counters.RemindersSuppr, counters.RemindersDefer:
			if t.reasons[metric] == nil {
				t.reasons[metric] = map[string]int64{}
			}
			t.reasons[metric][reason] += n
		}
	}
	rows, err := db.Query(ctx, "SELECT metric, reason, sum(value)::bigint FROM counters_minute GROUP BY metric, reason")
	if err != nil {
		return totals{}, err
	}
	for rows.Next() {
		var m, r string
		var n int64
		if err := rows.Scan(&m, &r, &n); err != nil {
			rows.Close()
			return totals{}, err
		}
		add(m, r, n)
	}
	rows.Close()
	if err := db.QueryRow(ctx, "SELECT count(*) FROM flushes").Scan(&t.flushedRows); err != nil {
		return totals{}, err
	}
	if err := db.QueryRow(ctx, "SELECT max(bucket) FROM counters_minute").Scan(&t.lastMinute); err != nil {
		return totals{}, err
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
				add(d.Metric, d.Reason, x)
			}
		}
	}
	t.applied = by[counters.EventsApplied]
	t.opened, t.closed = by[counters.EpisodesOpened], by[counters.EpisodesClosed]
	t.sent, t.suppressed, t.deferred = by[counters.RemindersSent], by[counters.RemindersSuppr], by[counters.RemindersDefer]
	t.dead = by[counters.DeadLettered]
	t.remindersOpened, t.converted = by[counters.RemindersOpened], by[counters.RemindersConverted]

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

// summary is the two lines of a tick, each at most 100 columns.
func summary(elapsed time.Duration, cur, last totals, since time.Duration) []string {
	rate := float64(cur.applied-last.applied) / since.Seconds()
	return []string{
		fmt.Sprintf("%4.0fs  %s events/s, %s applied, %s unread, %s dead-lettered; PostgreSQL: %s",
			elapsed.Seconds(), thousands(int64(rate)), thousands(cur.applied), thousands(cur.opened-cur.closed),
			thousands(cur.dead), strings.TrimSuffix(cur.flushed(), " (a minute is flushed once it has closed)")),
		fmt.Sprintf("       reminders: %s sent, %s opened, %s read; %s dropped, %s put off; %s pushes",
			thousands(cur.sent), thousands(cur.remindersOpened), thousands(cur.converted), thousands(cur.suppressed),
			thousands(cur.deferred), thousands(cur.pushes)),
	}
}

func check(t totals, err error) error {
	if err != nil {
		return err
	}
	var missing []string
	if t.applied == 0 {
		missing = append(missing, "no event applied")
	}
	if t.sent == 0 || t.pushes == 0 {
		missing = append(missing, "no reminder pushed")
	}
	if t.flushedRows == 0 {
		missing = append(missing, "no counter flushed to Postgres")
	}
	if len(missing) > 0 {
		return errors.New("check failed: " + strings.Join(missing, ", "))
	}
	return nil
}
