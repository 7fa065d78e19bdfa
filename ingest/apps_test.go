package ingest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/registry"
)

// Two apps of one deployment that share a user, a conversation and an
// event id never touch each other's unread state, dedupe or registry rows;
// the default app keeps its ids unscoped, as before apps were isolated.
func TestAppsShareNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	db, _ := pgtest.NewMigrated(t)
	store := registry.New(db)
	cfg := b.cfg
	cfg.Registry = store
	b.start(t, cfg)

	in := func(app string, e *event.Event) *event.Event { e.App = app; return e }
	m1 := in("chat", msg("c1", "m1", "alice", "bob"))
	m1.ID = "same-id"
	m2 := in("other", msg("c1", "m1", "alice", "bob"))
	m2.ID = "same-id" // another app's event id: not a duplicate
	m3 := in(event.DefaultApp, msg("c1", "m1", "alice", "bob"))
	m3.ID = "same-id"
	muted := map[string]string{"c1": event.ModeMuted}
	b.publish(t, m1, m2, m3,
		in("other", read("c1", "bob", "")), // closes other's episode only
		in("chat", &event.Event{V: 1, Type: event.TypeDeviceRegistered, ID: "d1", TS: testTS, User: "bob", Platform: event.PlatformFCM, Token: "tok-chat"}),
		in("other", &event.Event{V: 1, Type: event.TypeDeviceRegistered, ID: "d1", TS: testTS, User: "bob", Platform: event.PlatformFCM, Token: "tok-other"}),
		in("other", &event.Event{V: 1, Type: event.TypePrefs, ID: "p1", TS: testTS, User: "bob", Conversations: muted}))
	poll.Until(t, 10*time.Second, "every event applied", func() bool { return b.metric(t, "events_applied") == 7 })
	if n := b.metric(t, "duplicates"); n != 0 {
		t.Errorf("%d duplicates: an event id of one app made another's a duplicate", n)
	}
	sc := func(app, id string) string { return keys.Scope(app, event.DefaultApp, id) }
	for _, tc := range []struct {
		app  string
		want int64
	}{{"chat", 1}, {"other", 0}, {event.DefaultApp, 1}} {
		if n, _ := b.unread(t, sc(tc.app, "bob"), sc(tc.app, "c1")); n != tc.want {
			t.Errorf("app %s: bob has %d unread in c1, want %d", tc.app, n, tc.want)
		}
		if n := b.badge(t, sc(tc.app, "bob")); n != tc.want {
			t.Errorf("app %s: bob's badge is %d, want %d", tc.app, n, tc.want)
		}
	}
	if n, _ := b.unread(t, "bob", "c1"); n != 1 {
		t.Errorf("the default app's state is not under the bare ids")
	}

	poll.Until(t, 10*time.Second, "the registry written", func() bool {
		var n int
		return db.QueryRow(ctx, `SELECT count(*) FROM devices`).Scan(&n) == nil && n == 2
	})
	poll.Until(t, 10*time.Second, "the prefs written", func() bool {
		var n int
		return db.QueryRow(ctx, `SELECT count(*) FROM conversation_prefs`).Scan(&n) == nil && n == 1
	})
	devs, err := store.DevicesOf(ctx, []string{"chat/bob", "other/bob", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if d := devs["chat/bob"]; len(d) != 1 || d[0].Token != "tok-chat" || d[0].App != "chat" {
		t.Errorf("chat's bob has devices %+v, want tok-chat only", d)
	}
	if d := devs["other/bob"]; len(d) != 1 || d[0].Token != "tok-other" || d[0].App != "other" {
		t.Errorf("other's bob has devices %+v, want tok-other only", d)
	}
	if d := devs["bob"]; len(d) != 0 {
		t.Errorf("the default app's bob has devices %+v, want none", d)
	}
	prefs, err := store.PrefsOf(ctx, []string{"chat/bob", "other/bob"})
	if err != nil {
		t.Fatal(err)
	}
	if m := prefs["other/bob"].Mode("other/c1"); m != event.ModeMuted {
		t.Errorf("other's bob has c1 %q, want muted", m)
	}
	if m := prefs["chat/bob"].Mode("chat/c1"); m != event.ModeAll {
		t.Errorf("chat's bob has c1 %q: another app's mute reached it", m)
	}
}
