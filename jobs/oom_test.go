package jobs_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/push/sandbox"
)

// outcomeMetric maps the outcome label of nudge_reminders_total to the
// counter metric of the same reminders.
var outcomeMetric = map[string]string{
	"scheduled": counters.RemindersQueued, "cancelled": counters.RemindersCancel, "sent": counters.RemindersSent,
	"failed": counters.RemindersFailed, "suppressed": counters.RemindersSuppr, "deferred": counters.RemindersDefer,
}

// promReminders sums nudge_reminders_total of the registries by counter
// metric.
func promReminders(t *testing.T, regs []*prometheus.Registry) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "nudge_reminders_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" {
						out[outcomeMetric[l.GetValue()]] += int64(m.GetCounter().GetValue())
					}
				}
			}
		}
	}
	return out
}

// Redis refuses every write (maxmemory reached, noeviction) for 25 s,
// longer than the worker's 20 s of retrying a record, while 1,000 unread
// episodes open and their reminders come due: some users have a device,
// some read in time, some are online, some have no device. Once Redis
// takes writes again every reminder finishes, what the services counted
// in their metrics is what PostgreSQL holds after a flush, reminder
// outcome by outcome, and no device got a reminder twice.
func TestMemoryFullCountsEveryReminderOnce(t *testing.T) {
	t.Parallel()
	// Online users stay online past the outage (presence TTL 40 s): their
	// reminders are put off.
	e := setup(t, options{stages: []time.Duration{4 * time.Second}, private: true, presenceTTL: 40 * time.Second, concurrency: 20})
	ctx := context.Background()
	const users = 1000
	var evs []*event.Event
	tokens := map[string]string{}
	for i := range users {
		u := "u" + strconv.Itoa(i)
		switch i % 4 {
		case 0: // a device
			tokens[u] = sandbox.NewDeviceToken(event.PlatformFCM)
			evs = append(evs, device(u, event.PlatformFCM, tokens[u]))
		case 1: // online, and a device
			tokens[u] = sandbox.NewDeviceToken(event.PlatformFCM)
			evs = append(evs, device(u, event.PlatformFCM, tokens[u]),
				&event.Event{V: 1, Type: event.TypePresence, ID: id(), TS: now(), User: u, Status: event.StatusOnline, Device: "phone"})
		}
		// 2: reads in time; 3: no device
	}
	e.publish(t, evs...)
	poll.Until(t, 20*time.Second, "the devices stored", func() bool {
		var n int
		_ = e.db.QueryRow(ctx, "SELECT count(*) FROM devices").Scan(&n)
		return n == len(tokens)
	})
	var msgs, reads []*event.Event
	for i := range users {
		msgs = append(msgs, msg("c"+strconv.Itoa(i), "m1", "alice", "u"+strconv.Itoa(i)))
		if i%4 == 2 {
			reads = append(reads, readAll("c"+strconv.Itoa(i), "u"+strconv.Itoa(i)))
		}
	}
	e.publish(t, msgs...)
	poll.Until(t, 20*time.Second, "the reminders scheduled", func() bool { return e.counted(t)[counters.RemindersQueued] == users })
	e.publish(t, reads...)

	// Memory full, as the reminders come due: every write refused, as with
	// noeviction at maxmemory.
	if err := e.rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.Set(ctx, e.ks.Prefix+":probe", "x", time.Second).Err(); err == nil {
		t.Fatal("Redis takes writes with maxmemory 1")
	}
	before := len(e.sb.Deliveries())
	time.Sleep(25 * time.Second)
	// Nothing is pushed while Redis cannot record it: a claim is refused
	// whole (its script is flagged to be), before any push.
	during := len(e.sb.Deliveries()) - before
	if err := e.rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if during != 0 {
		t.Errorf("%d pushes while Redis refused every write, want 0", during)
	}

	// Every reminder finishes.
	poll.Until(t, 4*time.Minute, "every reminder finished", func() bool {
		c := e.counted(t)
		return c[counters.RemindersQueued] >= users &&
			c[counters.RemindersSent]+c[counters.RemindersFailed]+c[counters.RemindersSuppr]+c[counters.RemindersCancel] == c[counters.RemindersQueued]
	})
	e.idle(t)

	// What the metrics say is what reaches PostgreSQL.
	f, err := flush.New(e.rdb, e.db, flush.Config{Keyspace: e.ks, Grace: time.Second,
		Now: func() time.Time { return time.Now().Add(3 * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.FlushOnce(ctx); err != nil {
		t.Fatal(err)
	}
	inPG := map[string]int64{}
	rows, err := e.db.Query(ctx, "SELECT metric, sum(value)::bigint FROM counters_minute GROUP BY metric")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var m string
		var n int64
		if err := rows.Scan(&m, &n); err != nil {
			t.Fatal(err)
		}
		inPG[m] = n
	}
	rows.Close()
	prom := promReminders(t, e.metrics)
	for _, m := range []string{counters.RemindersQueued, counters.RemindersCancel, counters.RemindersSent,
		counters.RemindersFailed, counters.RemindersSuppr, counters.RemindersDefer} {
		if inPG[m] != prom[m] {
			t.Errorf("%s: %d in PostgreSQL, %d in the metrics", m, inPG[m], prom[m])
		}
	}
	t.Logf("in PostgreSQL: %v", inPG)
	if inPG[counters.RemindersQueued] != users || inPG[counters.RemindersSent] == 0 || inPG[counters.RemindersDefer] == 0 {
		t.Errorf("reminders scheduled %d (want %d), sent %d, deferred %d (want some of each)",
			inPG[counters.RemindersQueued], users, inPG[counters.RemindersSent], inPG[counters.RemindersDefer])
	}
	for u, tok := range tokens {
		if n := len(e.sb.DeliveriesTo(tok)); n > 1 {
			t.Errorf("%s's device got %d pushes, want at most 1", u, n)
		}
	}
}

// counted sums the counters of every shard still in Redis, by metric.
func (e *env) counted(t *testing.T) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	out := map[string]int64{}
	for s := range e.ks.Shards {
		mins, _ := e.rdb.ZRange(ctx, e.ks.CounterIndex(s), 0, -1).Result()
		for _, m := range mins {
			mm, _ := strconv.ParseInt(m, 10, 64)
			h, _ := e.rdb.HGetAll(ctx, e.ks.Counters(s, mm)).Result()
			for f, v := range h {
				if d, err := counters.ParseField(f); err == nil {
					x, _ := strconv.ParseInt(v, 10, 64)
					out[d.Metric] += x
				}
			}
		}
	}
	return out
}
