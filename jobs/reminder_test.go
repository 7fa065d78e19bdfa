package jobs_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/push/sandbox"
	"github.com/nudgehq/nudge/registry"
)

// An unread conversation gets exactly one push per device, never before
// the delay, with the badge and collapse key.
func TestUnreadGetsOnePushPerDevice(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{2 * time.Second}})
	fcm, apns := e.devices(t, "bob")
	sent := e.publish(t, msg("c1", "m1", "alice", "bob"), msg("c1", "m2", "alice", "bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 2 }); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	ds := e.sb.Deliveries()
	if len(ds) != 2 {
		t.Fatalf("%d deliveries, want one per device: %+v", len(ds), ds)
	}
	for _, d := range ds {
		if d.Token != fcm && d.Token != apns {
			t.Errorf("delivery to unknown token %s", d.Token)
		}
		if d.Time.Before(sent.Add(2 * time.Second)) {
			t.Errorf("%s push %s after the message, before the 2s delay", d.Platform, d.Time.Sub(sent))
		}
		if d.Badge == nil || *d.Badge != 2 || d.CollapseKey != "c1" || d.Data["conversation_id"] != "c1" {
			t.Errorf("%s push %+v: want badge 2, collapse key c1", d.Platform, d)
		}
		if !strings.Contains(d.Body, "preview of m2") || d.Title != "2 unread messages" {
			t.Errorf("%s push title %q body %q", d.Platform, d.Title, d.Body)
		}
	}
	e.wantMetric(t, "reminders_sent", "", 1)
	e.wantMetric(t, "push_sent", "", 2)
	if o := e.outcomes(t, "bob", "c1", 1); len(o) != 1 || o[0].Metric != "reminders_sent" || o[0].Reason != "" || o[0].At.Before(sent.Add(2*time.Second)) {
		t.Errorf("recorded outcomes %+v, want one reminders_sent after the delay", o)
	}
}

// Reading before the reminder is due cancels it.
func TestReadBeforeDueCancels(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{2 * time.Second}})
	e.devices(t, "bob")
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 10*time.Second, "the reminder scheduled", func() bool { return e.metric(t, "reminders_scheduled", "") == 1 })
	e.publish(t, readAll("c1", "bob"))
	poll.Until(t, 10*time.Second, "the reminder cancelled", func() bool { return e.metric(t, "reminders_cancelled", "") == 1 })
	e.idle(t)
	time.Sleep(2500 * time.Millisecond) // past the due time: prove nothing is sent
	if ds := e.sb.Deliveries(); len(ds) != 0 {
		t.Errorf("pushed a read conversation: %+v", ds)
	}
}

// A read deletes a cancelled reminder's task of its own (found with one
// pipeline of EXISTS, not a delete tried for every reminder): the stage is
// a minute away, so only the delete empties the queue.
func TestReadDeletesTheReminderTask(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Minute}})
	e.devices(t, "bob")
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 10*time.Second, "the reminder scheduled", func() bool { return e.metric(t, "reminders_scheduled", "") == 1 })
	if q, err := e.insp.GetQueueInfo(e.queue); err != nil || q.Scheduled != 1 {
		t.Fatalf("before the read: %+v, %v; want one scheduled task", q, err)
	}
	e.publish(t, readAll("c1", "bob"))
	poll.Until(t, 10*time.Second, "the reminder's task deleted", func() bool {
		q, err := e.insp.GetQueueInfo(e.queue)
		return err == nil && q.Scheduled == 0
	})
	e.wantMetric(t, "reminders_cancelled", "", 1)
}

// The ladder sends each stage while the episode stays unread.
func TestLadder(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second, time.Second, time.Second}})
	fcm, _ := e.devices(t, "bob")
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 6 }); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	stages := map[string]int{}
	for _, d := range e.sb.DeliveriesTo(fcm) {
		stages[d.Data["stage"]]++
	}
	if len(e.sb.Deliveries()) != 6 || stages["1"] != 1 || stages["2"] != 1 || stages["3"] != 1 {
		t.Errorf("stages delivered to the FCM device %v (%d in all), want one each of 1, 2, 3", stages, len(e.sb.Deliveries()))
	}
}

// Muted and mentions-only conversations are respected at send time.
func TestMuteAndMentionsOnly(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}})
	e.devices(t, "bob")
	e.publish(t, &event.Event{V: 1, Type: event.TypePrefs, ID: id(), TS: now(), User: "bob",
		Conversations: map[string]string{"muted-c": "muted", "mention-c": "mentions"}})
	poll.Until(t, 10*time.Second, "prefs stored", func() bool {
		var n int
		_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM conversation_prefs WHERE user_id = 'bob'").Scan(&n)
		return n == 2
	})
	mentioned := msg("mention-c", "m3", "alice", "bob")
	mentioned.Mentions = []string{"bob"}
	e.publish(t, msg("muted-c", "m1", "alice", "bob"), msg("mention-c", "m2", "carol", "bob"))
	poll.Until(t, 20*time.Second, "both suppressed", func() bool { return e.metric(t, "reminders_suppressed", "*") == 2 })
	if e.metric(t, "reminders_suppressed", "muted") != 1 || e.metric(t, "reminders_suppressed", "mentions_only") != 1 {
		t.Errorf("suppression reasons wrong")
	}
	for conv, reason := range map[string]string{"muted-c": "muted", "mention-c": "mentions_only"} {
		if o := e.outcomes(t, "bob", conv, 1); len(o) != 1 || o[0].Metric != "reminders_suppressed" || o[0].Reason != reason {
			t.Errorf("recorded outcomes in %s: %+v, want one reminders_suppressed with reason %s", conv, o, reason)
		}
	}
	if ds := e.sb.Deliveries(); len(ds) != 0 {
		t.Fatalf("pushed %+v", ds)
	}
	// A mention in a mentions-only conversation is reminded.
	e.publish(t, readAll("mention-c", "bob"), mentioned)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) == 2 }); err != nil {
		t.Fatal(err)
	}
}

// Several conversations coming due together make one digest push.
func TestDigest(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, digest: 5 * time.Second})
	fcm, _ := e.devices(t, "bob")
	e.publish(t, msg("c1", "m1", "alice", "bob"), msg("c2", "m2", "carol", "bob"), msg("c2", "m3", "carol", "bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 2 }); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	ds := e.sb.DeliveriesTo(fcm)
	if len(ds) != 1 || ds[0].Title != "2 conversations, 3 unread messages" {
		t.Fatalf("deliveries to the FCM device: %+v, want one digest", ds)
	}
	e.wantMetric(t, "reminders_suppressed", "digested", 1)
}

// An unregistered token is removed and never used again; a 429 with
// Retry-After is honoured and the device still gets exactly one push.
func TestInvalidTokenAndRateLimit(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}})
	fcm, apns := e.devices(t, "bob")
	if err := e.sb.InjectFault(sandbox.Fault{Token: fcm, Kind: sandbox.FaultUnregistered}); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.InjectFault(sandbox.Fault{Token: apns, Kind: sandbox.FaultRateLimited, Times: 1, RetryAfterSeconds: 1}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 1 }); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	if ds := e.sb.Deliveries(); len(ds) != 1 || ds[0].Token != apns {
		t.Fatalf("deliveries %+v, want one to the APNs device", ds)
	}
	devs, _ := e.reg.Devices(context.Background(), "bob")
	if len(devs) != 1 || devs[0].Token != apns {
		t.Errorf("devices after unregistered: %+v", devs)
	}
	if n := e.metric(t, "tokens_removed", "*"); n != 1 {
		t.Errorf("tokens_removed %d", n)
	}
}

// A user online on any device is reminded only after going offline.
func TestOnlineDefers(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, presenceTTL: 3 * time.Second})
	e.devices(t, "bob")
	online := e.publish(t, &event.Event{V: 1, Type: event.TypePresence, ID: id(), TS: now(), User: "bob", Status: "online", Device: "phone"})
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) == 2 }); err != nil {
		t.Fatal(err)
	}
	for _, d := range e.sb.Deliveries() {
		if d.Time.Before(online.Add(3 * time.Second)) {
			t.Errorf("pushed %s after going online, while still online", d.Time.Sub(online))
		}
	}
	if n := e.metric(t, "reminders_deferred", "online"); n < 1 {
		t.Errorf("reminders_deferred(online) = %d", n)
	}
}

// A reminder due in quiet hours waits until they end, in the user's zone.
func TestQuietHoursDefers(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}})
	e.devices(t, "bob")
	loc, _ := time.LoadLocation("Asia/Tokyo")
	local := time.Now().In(loc)
	start := local.Add(-time.Hour)
	end := local.Add(2 * time.Hour)
	e.publish(t, &event.Event{V: 1, Type: event.TypePrefs, ID: id(), TS: now(), User: "bob", TimeZone: ptr("Asia/Tokyo"),
		QuietHours: &event.QuietHours{Start: start.Format("15:04"), End: end.Format("15:04")}})
	poll.Until(t, 10*time.Second, "prefs stored", func() bool {
		var n int
		_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM user_prefs WHERE quiet_start IS NOT NULL").Scan(&n)
		return n == 1
	})
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 20*time.Second, "deferred", func() bool { return e.metric(t, "reminders_deferred", "quiet_hours") == 1 })
	tasks, err := e.insp.ListScheduledTasks(e.queue)
	if err != nil || len(tasks) != 1 || !strings.HasSuffix(tasks[0].ID, "|d1") {
		t.Fatalf("scheduled %+v (%v), want the put-off reminder", tasks, err)
	}
	want := end.Truncate(time.Minute)
	if got := tasks[0].NextProcessAt; got.Sub(want).Abs() > time.Second {
		t.Errorf("put off until %s, want the end of quiet hours %s", got, want)
	}
	if ds := e.sb.Deliveries(); len(ds) != 0 {
		t.Errorf("pushed in quiet hours: %+v", ds)
	}
}

func ptr[T any](v T) *T { return &v }

// A read after the first stage was sent cancels the second, once: the
// completed first stage, kept in the queue for its id, is not mistaken for
// the pending one.
func TestReadAfterFirstStageCancelsTheNext(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second, 3 * time.Second}})
	e.devices(t, "bob")
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 2 }); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the second stage scheduled", func() bool { return e.metric(t, "reminders_scheduled", "") == 2 })
	e.publish(t, readAll("c1", "bob"))
	poll.Until(t, 10*time.Second, "the second stage cancelled", func() bool { return e.metric(t, "reminders_cancelled", "") >= 1 })
	e.idle(t)
	time.Sleep(3500 * time.Millisecond) // past the second stage's due time
	e.idle(t)
	e.wantMetric(t, "reminders_cancelled", "", 1)
	// The second stage was deleted, not run (and cancelled by the worker):
	// only the first stage is kept as completed.
	if q, err := e.insp.GetQueueInfo(e.queue); err != nil || q.Completed != 1 {
		t.Errorf("completed tasks %+v (%v), want the first stage's only", q, err)
	}
	if ds := e.sb.Deliveries(); len(ds) != 2 {
		t.Errorf("%d pushes, want the first stage's 2 only", len(ds))
	}
}

// A reminder that finds no episode is cancelled only once ingest has
// applied the message that opens it: ingest schedules the first reminder
// before it applies the batch, and may be down in between for longer than
// a short reminder delay. Until then the reminder is put off.
func TestReminderWaitsForItsEpisodeToBeApplied(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}})
	e.devices(t, "bob")
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: redistest.Addr()})
	defer client.Close()
	enqueue := func(conv, episode string, stage int) string {
		t.Helper()
		r := jobs.Reminder{Shard: e.ks.Shard(conv), User: "bob", Conversation: conv, Episode: episode, Stage: stage, Due: now()}
		if _, err := client.Enqueue(r.Task(), asynq.TaskID(r.TaskID()), asynq.Queue(e.queue), asynq.Retention(time.Hour)); err != nil {
			t.Fatal(err)
		}
		return r.TaskID()
	}
	// An entry id the ingest group has not read yet (it is in the future).
	enqueue("c-not-yet", "9999999999999-0", 1)
	poll.Until(t, 15*time.Second, "the unapplied episode's reminder put off twice", func() bool {
		return e.metric(t, "reminders_deferred", jobs.ReasonNotApplied) >= 2
	})
	// An episode opened and read, both applied (the read cancels its
	// reminder): a reminder of it that runs anyway is cancelled.
	opening, err := e.pub.Publish(context.Background(), msg("c-read", "m1", "alice", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, readAll("c-read", "bob"))
	poll.Until(t, 10*time.Second, "the read cancelling the reminder", func() bool {
		return e.metric(t, "reminders_cancelled", "") == 1
	})
	// A later stage of the read episode (never scheduled by the read's
	// cancel) runs, and the worker cancels it.
	enqueue("c-read", opening, 2)
	poll.Until(t, 10*time.Second, "the read episode's reminder cancelled", func() bool {
		return e.metric(t, "reminders_cancelled", "") == 2
	})
	// The first stage, cancelled by the read, runs anyway: it is not
	// cancelled (nor counted) twice.
	id := enqueue("c-read", opening, 1)
	poll.Until(t, 10*time.Second, "the cancelled reminder run again", func() bool {
		ti, err := e.insp.GetTaskInfo(e.queue, id)
		return err == nil && ti.State == asynq.TaskStateCompleted
	})
	if n := e.metric(t, "reminders_cancelled", ""); n != 2 {
		t.Errorf("reminders_cancelled = %d after the cancelled reminder ran again, want 2", n)
	}
	if ds := e.sb.Deliveries(); len(ds) != 0 {
		t.Errorf("pushed %d reminders of episodes with no unread messages", len(ds))
	}
}

// warmSpy is the registry cache, recording when Warm was asked for each
// user.
type warmSpy struct {
	*registry.Cache
	mu     sync.Mutex
	warmed map[string]time.Time
}

func (s *warmSpy) Warm(ctx context.Context, users []string) error {
	s.mu.Lock()
	for _, u := range users {
		s.warmed[u] = time.Now()
	}
	s.mu.Unlock()
	return s.Cache.Warm(ctx, users)
}

// A task that comes before its due time reads its users' devices and
// preferences while it waits, and still pushes at the due time, not
// before.
func TestTaskWarmsTheRegistryWhileItWaits(t *testing.T) {
	t.Parallel()
	spy := &warmSpy{warmed: map[string]time.Time{}}
	e := setup(t, options{stages: []time.Duration{time.Hour, time.Hour}, cacheTTL: 30 * time.Second,
		dir: func(c *registry.Cache) jobs.Directory { spy.Cache = c; return spy }})
	e.devices(t, "bob")
	opening, err := e.pub.Publish(context.Background(), msg("c1", "m1", "alice", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the first stage scheduled", func() bool { return e.metric(t, "reminders_scheduled", "") == 1 })
	// The second stage, due in 1.5 s, handed to the worker now.
	due := time.Now().Add(1500 * time.Millisecond)
	r := jobs.Reminder{Shard: e.ks.Shard("c1"), User: "bob", Conversation: "c1", Episode: opening, Stage: 2, Due: due.UnixMilli()}
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: redistest.Addr()})
	defer client.Close()
	if _, err := client.Enqueue(r.Task(), asynq.TaskID(r.TaskID()), asynq.Queue(e.queue), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 2 }); err != nil {
		t.Fatal(err)
	}
	spy.mu.Lock()
	warmed, ok := spy.warmed["bob"]
	spy.mu.Unlock()
	if !ok || !warmed.Before(due) {
		t.Errorf("bob's registry entries warmed at %v (%v), want before the due time %v", warmed, ok, due)
	}
	for _, d := range e.sb.Deliveries() {
		if d.Time.Before(due.Truncate(time.Millisecond)) {
			t.Errorf("pushed at %v, before the due time %v", d.Time, due)
		}
	}
}
