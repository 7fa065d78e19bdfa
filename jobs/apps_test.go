package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/push/sandbox"
)

// Two apps with a user and a conversation of the same name: each app's
// device gets its own reminder, with the ids as the app knows them, and a
// read in one app cancels that app's reminder only.
func TestAppsRemindTheirOwnUsers(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{2 * time.Second}})
	in := func(app string, ev *event.Event) *event.Event { ev.App = app; return ev }
	chatTok, shopTok, readTok := sandbox.NewDeviceToken(event.PlatformFCM), sandbox.NewDeviceToken(event.PlatformFCM), sandbox.NewDeviceToken(event.PlatformFCM)
	e.publish(t, in("chat", device("bob", event.PlatformFCM, chatTok)), in("shop", device("bob", event.PlatformFCM, shopTok)),
		in("read", device("bob", event.PlatformFCM, readTok)))
	poll.Until(t, 10*time.Second, "devices stored", func() bool {
		var n int
		return e.db.QueryRow(context.Background(), `SELECT count(*) FROM devices`).Scan(&n) == nil && n == 3
	})
	e.publish(t, in("chat", msg("c1", "m1", "alice", "bob")), in("shop", msg("c1", "m1", "alice", "bob")),
		in("read", msg("c1", "m1", "alice", "bob")))
	e.publish(t, in("read", readAll("c1", "bob")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 2 }); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	got := map[string]int{}
	for _, d := range e.sb.Deliveries() {
		got[d.Token]++
		if d.Data["conversation_id"] != "c1" || d.CollapseKey != "c1" || d.Body != "alice: preview of m1" {
			t.Errorf("push %+v: want conversation c1 and sender alice as the app knows them", d)
		}
	}
	if got[chatTok] != 1 || got[shopTok] != 1 || got[readTok] != 0 || len(got) != 2 {
		t.Errorf("pushes per token %v: want one each to chat's and shop's, none to the app that read", got)
	}
	e.wantMetric(t, "reminders_cancelled", "", 1)
}

// A user with no device when a reminder falls due is not forgotten: the
// ladder goes on, and a device registered meanwhile gets the next stage.
func TestNoDeviceYetKeepsTheLadder(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second, 2 * time.Second}})
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 15*time.Second, "the first reminder finding no device", func() bool { return e.metric(t, "reminders_suppressed", "no_devices") == 1 })
	tok := sandbox.NewDeviceToken(event.PlatformFCM)
	e.publish(t, device("bob", event.PlatformFCM, tok))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 1 }); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	ds := e.sb.DeliveriesTo(tok)
	if len(ds) != 1 || ds[0].Data["stage"] != "2" {
		t.Errorf("deliveries %+v, want the second stage once", ds)
	}
	if n := e.metric(t, "reminders_scheduled", "*"); n != 2 {
		t.Errorf("reminders_scheduled %d, want 2 (the second stage scheduled by the first)", n)
	}
}
