package jobs_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push/sandbox"
	"github.com/nudgehq/nudge/registry"
)

// A provider that delivers and loses its answer, on both platforms: the
// worker never sends the same reminder to either device again (the push
// package's tests cover an answer that comes after the client's timeout),
// and counts the pushes as unknown, the reminder as sent.
func TestLostAnswerIsNeverSentAgain(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}})
	fcm, apns := e.devices(t, "bob")
	for _, tok := range []string{fcm, apns} {
		if err := e.sb.InjectFault(sandbox.Fault{Token: tok, Kind: sandbox.FaultLostAnswer}); err != nil {
			t.Fatal(err)
		}
	}
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 20*time.Second, "the reminder finished", func() bool { return e.metric(t, "reminders_sent", "") == 1 })
	e.idle(t)
	time.Sleep(3 * time.Second) // a retry would come within this
	e.idle(t)
	for _, tok := range []string{fcm, apns} {
		if n := len(e.sb.DeliveriesTo(tok)); n != 1 {
			t.Errorf("device %s got %d pushes, want 1", tok[:8], n)
		}
	}
	e.wantMetric(t, "push_unknown", "answer_lost", 2)
	e.wantMetric(t, "push_sent", "", 0)
	if o := e.outcomes(t, "bob", "c1", 1); len(o) != 1 || o[0].Metric != "reminders_sent" {
		t.Errorf("outcomes %+v, want one reminders_sent", o)
	}
}

// A reminder tried again keeps away from the device whose answer was lost:
// the FCM device's provider delivers and loses its answer (an unknown
// outcome) while the APNs device's refuses for now (503) on both tries
// of the retrying sender, so the reminder is tried again. The retry
// pushes the APNs device only; the FCM device is counted as outstanding,
// never pushed twice.
func TestUnknownOutcomeIsNotPushedOnRetry(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}})
	fcm, apns := e.devices(t, "bob")
	for _, f := range []sandbox.Fault{
		{Token: fcm, Kind: sandbox.FaultLostAnswer},
		{Token: apns, Kind: sandbox.FaultServerError, Times: 2, RetryAfterSeconds: 1}, // both tries of the retrying sender
	} {
		if err := e.sb.InjectFault(f); err != nil {
			t.Fatal(err)
		}
	}
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 30*time.Second, "the reminder finished", func() bool { return e.metric(t, "reminders_sent", "") == 1 })
	e.idle(t)
	if n := len(e.sb.DeliveriesTo(fcm)); n != 1 {
		t.Errorf("FCM device got %d pushes, want 1 (its answer was lost; the retry must not push it again)", n)
	}
	if n := len(e.sb.DeliveriesTo(apns)); n != 1 {
		t.Errorf("APNs device got %d pushes, want 1 (refused once, then delivered by the retry)", n)
	}
	e.wantMetric(t, "push_unknown", "answer_lost", 1)
	e.wantMetric(t, "push_sent", "", 1)
	if o := e.outcomes(t, "bob", "c1", 1); len(o) != 1 || o[0].Metric != "reminders_sent" {
		t.Errorf("outcomes %+v, want one reminders_sent", o)
	}
}

// The worker pushes both devices of a reminder, then cannot record it:
// Redis goes away for longer than the worker keeps trying (20 s), and the
// task fails. Its retry, with Redis back, pushes neither device again: the
// intents recorded before the pushes stand for them.
func TestUnrecordedPushIsNeverSentAgain(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, proxyWorker: true})
	fcm, apns := e.devices(t, "bob")
	e.sb.SetLatency(time.Second) // the pushes are in flight for a second
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	ctx := context.Background()
	var sent string
	poll.Until(t, 20*time.Second, "the reminder claimed", func() bool {
		keys, _ := e.rdb.Keys(ctx, e.ks.Prefix+"*:sent:*").Result()
		for _, k := range keys {
			if ok, _ := e.rdb.SIsMember(ctx, k, "!c").Result(); ok {
				sent = k
				return true
			}
		}
		return false
	})
	e.proxy.Cut()
	poll.Until(t, 10*time.Second, "both pushes delivered", func() bool { return len(e.sb.Deliveries()) == 2 })
	poll.Until(t, 40*time.Second, "the task failed and waits for a retry", func() bool {
		tasks, err := e.insp.ListRetryTasks(e.queue)
		return err == nil && len(tasks) == 1
	})
	e.proxy.Restore(t)
	poll.Until(t, 30*time.Second, "the reminder finished", func() bool { return e.metric(t, "reminders_sent", "") == 1 })
	e.idle(t)
	for _, tok := range []string{fcm, apns} {
		if n := len(e.sb.DeliveriesTo(tok)); n != 1 {
			t.Errorf("device %s got %d pushes, want 1", tok[:8], n)
		}
	}
	if members, _ := e.rdb.SMembers(ctx, sent).Result(); len(members) == 0 {
		t.Errorf("the reminder's record %s is gone", sent)
	}
}

// A task that cannot run because PostgreSQL is away fails as a whole: each
// failure is counted by cause, and one that failed its last retry, which
// asynq archives, is counted and logged as given up, never silently.
func TestTaskGivenUpIsCounted(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 2)
	db, _ := pgtest.NewMigrated(t)
	db.Close() // every registry query fails
	reg := prometheus.NewRegistry()
	queue := "q-" + prefix
	opt := asynq.RedisClientOpt{Addr: redistest.Addr()}
	client := asynq.NewClient(opt)
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { redistest.DeleteQueue(t, rdb, queue); _ = insp.Close(); _ = client.Close() })
	w, err := jobs.NewWorker(rdb, client, registry.New(db), nil, jobs.Config{Keyspace: ks, Queue: queue, MaxRetry: 1, Metrics: reg,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	// An open episode: the reminder gets as far as the preferences.
	r := jobs.Reminder{Shard: ks.Shard("c1"), User: "bob", Conversation: "c1", Episode: "1-0", Stage: 1, Due: now()}
	if err := rdb.HSet(context.Background(), ks.Episode(r.Shard, "bob", "c1"), "id", "1-0", "since", now()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(context.Background(), ks.Badge(r.Shard, "bob"), "c1", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enqueue(r.Task(), asynq.TaskID(r.TaskID()), asynq.Queue(queue), asynq.MaxRetry(1)); err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(opt, asynq.Config{Queues: map[string]int{queue: 1}, Concurrency: 2,
		DelayedTaskCheckInterval: 100 * time.Millisecond, TaskCheckInterval: 50 * time.Millisecond,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
		ErrorHandler:   asynq.ErrorHandlerFunc(w.HandleError), Logger: quietLogger{}, LogLevel: asynq.ErrorLevel})
	mux := asynq.NewServeMux()
	mux.Handle(jobs.TypeReminder, w)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	value := func(name, label string) float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if label == "" || len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	poll.Until(t, 20*time.Second, "the task archived", func() bool { return value("nudge_worker_tasks_archived_total", "") == 1 })
	if n := value("nudge_worker_task_failures_total", "postgres"); n != 2 {
		t.Errorf("failures caused by postgres: %v, want 2 (the try and its retry)", n)
	}
	if q, err := insp.GetQueueInfo(queue); err != nil || q.Archived != 1 {
		t.Errorf("queue %+v (%v): want the task archived", q, err)
	}
}

// A worker crashed holding a user's send lock: the lock lives out its TTL
// (15 s, no longer renewed), the user's reminder is put off meanwhile
// (lock_busy, not a try of its devices), and it is pushed once the lock is
// gone.
func TestCrashedWorkersSendLockFreesItsUser(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, digest: time.Second})
	fcm, apns := e.devices(t, "bob")
	ctx := context.Background()
	lock := e.ks.SendLock(e.ks.Shard("bob"), "bob")
	if err := e.rdb.Set(ctx, lock, "crashed-worker", 15*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	freed := time.Now().Add(15 * time.Second)
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 40*time.Second, "the reminder finished", func() bool { return e.metric(t, "reminders_sent", "") == 1 })
	e.idle(t)
	for _, tok := range []string{fcm, apns} {
		d := e.sb.DeliveriesTo(tok)
		if len(d) != 1 {
			t.Fatalf("device %s got %d pushes, want 1", tok[:8], len(d))
		}
		if d[0].Time.Before(freed.Add(-time.Second)) {
			t.Errorf("device %s pushed at %s, %s before the lock expired", tok[:8], d[0].Time, freed.Sub(d[0].Time))
		}
	}
	if n := e.metric(t, "reminders_deferred", jobs.ReasonLockBusy); n < 1 {
		t.Errorf("reminders_deferred{lock_busy} = %d, want at least 1", n)
	}
	e.wantMetric(t, "reminders_failed", "*", 0)
}

// A run whose pushes take longer than a send lock's TTL keeps its lock: it
// is renewed while the run holds it, and deleted when the run is done.
func TestSendLockRenewedWhilePushesTakeLong(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, digest: time.Second})
	e.devices(t, "bob")
	e.sb.SetLatency(18 * time.Second)
	ctx := context.Background()
	lock := e.ks.SendLock(e.ks.Shard("bob"), "bob")
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 10*time.Second, "the send lock taken", func() bool { return e.rdb.Exists(ctx, lock).Val() == 1 })
	taken := time.Now()
	time.Sleep(16 * time.Second) // past the lock's 15 s TTL
	if e.rdb.Exists(ctx, lock).Val() != 1 {
		t.Errorf("the send lock expired %s after it was taken, while its run still pushed", time.Since(taken).Round(time.Second))
	}
	poll.Until(t, 30*time.Second, "the reminder finished", func() bool { return e.metric(t, "reminders_sent", "") == 1 })
	// The run gives its locks back right after it counted the reminder:
	// well before the lock's TTL would end it.
	poll.Until(t, 3*time.Second, "the send lock deleted at the end of its run", func() bool { return e.rdb.Exists(ctx, lock).Val() == 0 })
}

// A task that runs again after it settled (asynq retries a task whose
// later step failed, or whose worker died before it reported) counts its
// deferral once, and its push once in the user's rate limit; a push whose
// rate-limit count was lost is counted when the task runs again.
func TestTaskRunAgainCountsOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, noWorker: true})
	fcm, apns := e.devices(t, "bob")
	ctx := context.Background()
	e.publish(t, &event.Event{V: 1, Type: event.TypePresence, ID: id(), TS: now(), User: "bob", Status: event.StatusOnline, Device: "phone"})
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	var task *asynq.Task
	poll.Until(t, 10*time.Second, "the reminder scheduled", func() bool {
		ts, err := e.insp.ListScheduledTasks(e.queue)
		if err != nil || len(ts) != 1 {
			return false
		}
		task = asynq.NewTask(ts[0].Type, ts[0].Payload)
		return true
	})
	rs, err := jobs.DecodeTask(task.Type(), task.Payload())
	if err != nil || len(rs) != 1 {
		t.Fatalf("the scheduled task: %v %v", rs, err)
	}
	time.Sleep(time.Until(rs[0].DueTime()))
	for range 2 { // bob is online: put off, twice
		if err := e.worker.ProcessTask(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.metric(t, "reminders_deferred", jobs.ReasonOnline); n != 1 {
		t.Errorf("reminders_deferred{online} = %d after the task ran twice, want 1", n)
	}

	// Bob went offline: the follow-up pushes, and runs again.
	e.publish(t, &event.Event{V: 1, Type: event.TypePresence, ID: id(), TS: now(), User: "bob", Status: event.StatusOffline, Device: "phone"})
	follow := rs[0]
	follow.Defers++
	follow.Due = time.Now().UnixMilli()
	poll.Until(t, 10*time.Second, "bob offline", func() bool {
		z, _ := e.rdb.ZRangeWithScores(ctx, e.ks.Presence(e.ks.Shard("bob"), "bob"), 0, -1).Result()
		return len(z) == 0
	})
	if err := e.worker.ProcessTask(ctx, follow.Task()); err != nil {
		t.Fatal(err)
	}
	rate := func() int64 {
		keys, _ := e.rdb.Keys(ctx, e.ks.Prefix+":*sends:bob:*").Result()
		var n int64
		for _, k := range keys {
			n += e.rdb.SCard(ctx, k).Val()
		}
		return n
	}
	if n := rate(); n != 1 {
		t.Fatalf("bob's rate limit counts %d sends, want 1", n)
	}
	// The count is lost (the task's worker died before it counted), and
	// the task runs again: counted, once, and nothing pushed again.
	keys, _ := e.rdb.Keys(ctx, e.ks.Prefix+":*sends:bob:*").Result()
	e.rdb.Del(ctx, keys...)
	for range 2 {
		if err := e.worker.ProcessTask(ctx, follow.Task()); err != nil {
			t.Fatal(err)
		}
	}
	if n := rate(); n != 1 {
		t.Errorf("bob's rate limit counts %d sends after the task ran again, want 1", n)
	}
	for _, tok := range []string{fcm, apns} {
		if n := len(e.sb.DeliveriesTo(tok)); n != 1 {
			t.Errorf("device %s got %d pushes, want 1", tok[:8], n)
		}
	}
	e.wantMetric(t, "reminders_sent", "", 1)
}
