package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/push/sandbox"
)

func opened(user, episode string, stage int, platform string) *event.Event {
	return &event.Event{V: 1, Type: event.TypeOpened, ID: id(), TS: now(), User: user, Episode: episode, Stage: stage, Platform: platform}
}

// A pushed reminder is counted by stage and platform; the app reporting
// that it was opened counts once however often it reports; a read within
// the conversion window converts the reminder's stage, once, with its time
// from push to read; a read after the window converts nothing.
func TestOpensAndConversions(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, conversion: 3 * time.Second})
	tok := sandbox.NewDeviceToken(event.PlatformFCM)
	e.publish(t, device("bob", event.PlatformFCM, tok))
	poll.Until(t, 10*time.Second, "the device stored", func() bool { d, _ := e.reg.Devices(context.Background(), "bob"); return len(d) == 1 })

	e.publish(t, msg("c1", "m1", "alice", "bob"), msg("c2", "m2", "alice", "bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 1 }); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	ds := e.sb.DeliveriesTo(tok)
	if len(ds) != 2 {
		t.Fatalf("%d pushes, want one for c1 and one for c2", len(ds))
	}
	ep, conv := ds[0].Data["episode"], ds[0].Data["conversation_id"]
	other := ds[1].Data["conversation_id"]
	poll.Until(t, 10*time.Second, "the pushes counted by stage", func() bool { return e.metric(t, "reminders_pushed", "1") == 2 })

	// Opened three times (the app retried, and reported twice): counted once.
	e.publish(t, opened("bob", ep, 1, "fcm"), opened("bob", ep, 1, "fcm"))
	e.publish(t, opened("bob", ep, 1, "fcm"))
	// Read at once: converted, within 30 s.
	e.publish(t, readAll(conv, "bob"))
	poll.Until(t, 10*time.Second, "the read converting stage 1", func() bool { return e.metric(t, "reminders_converted", "1") == 1 })
	poll.Until(t, 10*time.Second, "every open applied", func() bool { return e.metric(t, "opened_events", "*") == 3 })
	if n := e.metric(t, "reminders_opened", "1"); n != 1 {
		t.Errorf("reminders_opened %d, want 1 (three reports of one open)", n)
	}
	if n := e.metric(t, "reminder_read_seconds", "1:30"); n != 1 {
		t.Errorf("reminder_read_seconds{1:30} %d, want the read counted within 30 s", n)
	}
	// The other conversation, read after the window: no conversion.
	time.Sleep(3500 * time.Millisecond)
	e.publish(t, readAll(other, "bob"))
	poll.Until(t, 10*time.Second, "the late read applied", func() bool { return e.metric(t, "episodes_closed", "*") == 2 })
	e.wantMetric(t, "reminders_converted", "*", 1)
}

// A read after the conversion window does not convert.
func TestLateReadDoesNotConvert(t *testing.T) {
	t.Parallel()
	e := setup(t, options{stages: []time.Duration{time.Second}, conversion: time.Second})
	tok := sandbox.NewDeviceToken(event.PlatformAPNs)
	e.publish(t, device("bob", event.PlatformAPNs, tok))
	poll.Until(t, 10*time.Second, "the device stored", func() bool { d, _ := e.reg.Devices(context.Background(), "bob"); return len(d) == 1 })
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 15*time.Second, "the push counted by stage", func() bool { return e.metric(t, "reminders_pushed", "1") == 1 })
	time.Sleep(1500 * time.Millisecond)
	e.publish(t, readAll("c1", "bob"))
	poll.Until(t, 10*time.Second, "the read applied", func() bool { return e.metric(t, "episodes_closed", "*") == 1 })
	if n := e.metric(t, "reminders_converted", "*"); n != 0 {
		t.Errorf("a read 1.5 s after the push converted with a 1 s window: %d", n)
	}
}
