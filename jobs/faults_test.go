package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/nudgehq/nudge/push/sandbox"
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
	waitFor(t, 20*time.Second, "the reminder finished", func() bool { return e.metric(t, "reminders_sent", "") == 1 })
	e.idle(t)
	time.Sleep(3 * time.Second) // a retry would come within this
	e.idle(t)
	for _, tok := range []string{fcm, apns} {
		if n := len(e.sb.DeliveriesTo(tok)); n != 1 {
			t.Errorf("device %s got %d pushes, want 1", tok[:8], n)
		}
	}
	if n := e.metric(t, "push_unknown", "answer_lost"); n != 2 {
		t.Errorf("push_unknown = %d, want 2", n)
	}
	if n := e.metric(t, "push_sent", ""); n != 0 {
		t.Errorf("push_sent = %d, want 0", n)
	}
	if o := e.outcomes(t, "bob", "c1", 1); len(o) != 1 || o[0].Metric != "reminders_sent" {
		t.Errorf("outcomes %+v, want one reminders_sent", o)
	}
}

// The worker pushes both devices of a reminder, then cannot record it:
// Redis goes away for longer than the worker keeps trying (20 s), and the
// task fails. Its retry, with Redis back, pushes neither device again: the
// intents recorded before the pushes stand for them.
func TestUnrecordedPushIsNeverSentAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the worker's 20 s of recording")
	}
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, proxyWorker: true})
	fcm, apns := e.devices(t, "bob")
	e.sb.SetLatency(time.Second) // the pushes are in flight for a second
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	ctx := context.Background()
	var sent string
	waitFor(t, 20*time.Second, "the reminder claimed", func() bool {
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
	waitFor(t, 10*time.Second, "both pushes delivered", func() bool { return len(e.sb.Deliveries()) == 2 })
	waitFor(t, 40*time.Second, "the task failed and waits for a retry", func() bool {
		tasks, err := e.insp.ListRetryTasks(e.queue)
		return err == nil && len(tasks) == 1
	})
	e.proxy.Restore(t)
	waitFor(t, 30*time.Second, "the reminder finished", func() bool { return e.metric(t, "reminders_sent", "") == 1 })
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
