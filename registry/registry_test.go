package registry_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/registry"
)

func setup(t *testing.T) *registry.Store {
	t.Helper()
	db, _ := pgtest.NewMigrated(t)
	return registry.New(db)
}

const ts = 1767225600000

func dev(typ, user, token string, at int64) *event.Event {
	return &event.Event{V: 1, Type: typ, ID: "d" + token + strconv.FormatInt(at, 10), TS: at, App: "chat", User: user, Platform: "fcm", Token: token}
}

func ptr[T any](v T) *T { return &v }

func TestDevices(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	apply := func(evs ...*event.Event) {
		t.Helper()
		if err := s.Apply(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	apply(dev(event.TypeDeviceRegistered, "bob", "t1", ts), dev(event.TypeDeviceRegistered, "bob", "t2", ts+1))
	apply(dev(event.TypeDeviceRegistered, "bob", "t1", ts)) // a replay changes nothing
	devs, err := s.Devices(ctx, "bob")
	if err != nil || len(devs) != 2 || devs[0].Token != "t2" {
		t.Fatalf("devices %+v (%v)", devs, err)
	}
	// A token moves to the user who registered it last.
	apply(dev(event.TypeDeviceRegistered, "carol", "t1", ts+2))
	if devs, _ := s.Devices(ctx, "bob"); len(devs) != 1 {
		t.Errorf("bob still has %+v", devs)
	}
	// A stale removal does not remove a newer registration.
	apply(dev(event.TypeDeviceRemoved, "carol", "t1", ts+1))
	if devs, _ := s.Devices(ctx, "carol"); len(devs) != 1 {
		t.Errorf("stale removal removed carol's device")
	}
	apply(dev(event.TypeDeviceRemoved, "carol", "t1", ts+3))
	if devs, _ := s.Devices(ctx, "carol"); len(devs) != 0 {
		t.Errorf("carol still has %+v", devs)
	}
	if err := s.RemoveToken(ctx, "fcm", "t2"); err != nil {
		t.Fatal(err)
	}
	if devs, _ := s.Devices(ctx, "bob"); len(devs) != 0 {
		t.Errorf("invalid token not removed")
	}
	// At most MaxDevicesPerUser, the newest.
	for i := 0; i < registry.MaxDevicesPerUser+5; i++ {
		apply(dev(event.TypeDeviceRegistered, "dave", "dt"+strconv.Itoa(i), ts+int64(i)))
	}
	devs, _ = s.Devices(ctx, "dave")
	if len(devs) != registry.MaxDevicesPerUser || devs[0].Token != "dt14" {
		t.Errorf("dave has %d devices, newest %q", len(devs), devs[0].Token)
	}
}

func TestPrefs(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	p, err := s.Prefs(ctx, "nobody")
	if err != nil || p.QuietStart != -1 || p.ReminderDelay != 0 || p.Mode("c") != event.ModeAll {
		t.Fatalf("defaults %+v (%v)", p, err)
	}
	prefs := func(at int64, f func(e *event.Event)) *event.Event {
		e := &event.Event{V: 1, Type: event.TypePrefs, ID: "p" + strconv.FormatInt(at, 10), TS: at, User: "bob"}
		f(e)
		return e
	}
	evs := []*event.Event{
		prefs(ts, func(e *event.Event) {
			e.TimeZone = ptr("Europe/Berlin")
			e.QuietHours = &event.QuietHours{Start: "22:00", End: "07:00"}
			e.ReminderDelayS = ptr(int64(90))
			e.Conversations = map[string]string{"c1": "muted", "c2": "mentions"}
		}),
		prefs(ts+1, func(e *event.Event) { e.Conversations = map[string]string{"c1": "all"} }), // others unchanged
		prefs(ts+2, func(e *event.Event) { e.ReminderDelayS = ptr(int64(30)) }),
	}
	if err := s.Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	p, err = s.Prefs(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if p.TimeZone != "Europe/Berlin" || p.QuietStart != 22*60 || p.QuietEnd != 7*60 || p.ReminderDelay != 30*time.Second {
		t.Errorf("prefs %+v", p)
	}
	if p.Mode("c1") != event.ModeAll || p.Mode("c2") != event.ModeMentions {
		t.Errorf("modes %v", p.Modes)
	}
	// Equal start and end clears quiet hours; 0 delay means the default.
	if err := s.Apply(ctx, []*event.Event{prefs(ts+3, func(e *event.Event) {
		e.QuietHours = &event.QuietHours{Start: "00:00", End: "00:00"}
		e.ReminderDelayS = ptr(int64(0))
	})}); err != nil {
		t.Fatal(err)
	}
	p, _ = s.Prefs(ctx, "bob")
	if p.QuietStart != -1 || p.ReminderDelay != 0 || p.TimeZone != "Europe/Berlin" {
		t.Errorf("after clearing: %+v", p)
	}
}

// A device keeps its bundle id, and a user's previews setting is kept,
// changed and cleared like the other preferences.
func TestTopicAndPreviews(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	d := dev(event.TypeDeviceRegistered, "bob", "t1", ts)
	d.Platform, d.Topic = "apns", "com.example.chat.beta"
	prefs := func(at int64, previews *string, tz *string) *event.Event {
		return &event.Event{V: 1, Type: event.TypePrefs, ID: "p" + strconv.FormatInt(at, 10), TS: at, App: "chat", User: "bob", Previews: previews, TimeZone: tz}
	}
	if err := s.Apply(ctx, []*event.Event{d, prefs(ts, ptr("hidden"), nil), prefs(ts+1, nil, ptr("Europe/Berlin"))}); err != nil {
		t.Fatal(err)
	}
	devs, err := s.Devices(ctx, "bob")
	if err != nil || len(devs) != 1 || devs[0].Topic != "com.example.chat.beta" {
		t.Fatalf("devices %+v (%v)", devs, err)
	}
	p, err := s.Prefs(ctx, "bob")
	if err != nil || p.Previews != "hidden" || p.TimeZone != "Europe/Berlin" {
		t.Fatalf("prefs %+v (%v): an unrelated update lost the previews setting", p, err)
	}
	if err := s.Apply(ctx, []*event.Event{prefs(ts+2, ptr(""), nil)}); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Prefs(ctx, "bob"); p.Previews != "" {
		t.Errorf("previews %q after clearing, want the app's (empty)", p.Previews)
	}
}

// Warm reads users' devices and preferences into the cache: within its
// TTL they are served from memory, even after the store changed; a cache
// not warmed reads the store.
func TestCacheWarm(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	if err := s.Apply(ctx, []*event.Event{dev(event.TypeDeviceRegistered, "bob", "t1", ts),
		{V: 1, Type: event.TypePrefs, ID: "p1", TS: ts, User: "bob", Conversations: map[string]string{"c1": "muted"}}}); err != nil {
		t.Fatal(err)
	}
	warmed, cold := registry.NewCache(s, time.Hour, 0), registry.NewCache(s, time.Hour, 0)
	if err := warmed.Warm(ctx, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	// The store changes after the warm-up: bob's device goes, c1 is all.
	if err := s.Apply(ctx, []*event.Event{dev(event.TypeDeviceRemoved, "bob", "t1", ts+1),
		{V: 1, Type: event.TypePrefs, ID: "p2", TS: ts + 1, User: "bob", Conversations: map[string]string{"c1": "all"}}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		c       *registry.Cache
		devices int
		mode    string
	}{
		{"warmed", warmed, 1, event.ModeMuted},
		{"cold", cold, 0, event.ModeAll},
	} {
		devs, err := tt.c.DevicesOf(ctx, []string{"bob"})
		if err != nil || len(devs["bob"]) != tt.devices {
			t.Errorf("%s: devices %+v (%v), want %d", tt.name, devs, err, tt.devices)
		}
		prefs, err := tt.c.PrefsOf(ctx, []string{"bob"})
		if err != nil || prefs["bob"].Mode("c1") != tt.mode {
			t.Errorf("%s: c1 is %q (%v), want %q", tt.name, prefs["bob"].Mode("c1"), err, tt.mode)
		}
	}
}
