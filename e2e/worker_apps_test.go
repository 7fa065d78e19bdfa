package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/metricstest"
	"github.com/nudgehq/nudge/push/sandbox"
)

// Apps and languages through the binaries: the worker reads an apps file;
// each device gets the reminder in its own language and plural form, pushed
// with its own app's credentials; an app that localizes on the device gets
// keys and arguments, an app or a user that hides previews gets no message
// text; a device of an app with no credentials is counted, not dropped; and
// an app added to the file is pushed after SIGHUP, without a restart.
func TestAppsAndLanguagesThroughTheBinaries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, "apps")
	db := p.db
	sb, dir := harness.Sandbox(t, sandbox.Config{Apps: []sandbox.AppConfig{
		{Name: "chat", APNsTopics: []string{"com.example.chat", "com.example.chat.beta"}}, {Name: "secret"}, {Name: "ghost"}}})
	appsFile := filepath.Join(dir, sandbox.AppsFile)
	written, err := os.ReadFile(appsFile)
	if err != nil {
		t.Fatal(err)
	}
	// The operator's file: chat and secret (which localizes on the device
	// and hides previews); ghost not yet.
	full := strings.Replace(string(written), "  secret:\n", "  secret:\n    localize: device\n    previews: hidden\n    mutable_content: true\n", 1)
	ghost := full[strings.Index(full, "  ghost:\n"):]
	if err := os.WriteFile(appsFile, []byte(strings.Replace(full, ghost, "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}

	workerMetrics := freeport.Addr(t)
	p.start(t, "../cmd/ingest", "-consumer", "apps", "-claim-idle", "5s", "-metrics-addr", freeport.Addr(t))
	worker := p.start(t, "../cmd/worker", "-delayed-check-interval", "200ms", "-metrics-addr", workerMetrics, "-apps-file", appsFile,
		"-apps-check-interval", "1h") // reloaded by SIGHUP below, not by the clock
	pub := p.pub
	n := 0
	ev := func(app string, e event.Event) *event.Event {
		n++
		e.V, e.ID, e.TS, e.App = 1, "apps-"+strconv.Itoa(n), time.Now().UnixMilli(), app
		return &e
	}
	type device struct {
		app, user, platform, locale, topic string
		token                              string
	}
	devices := []*device{
		{app: "chat", user: "bob", platform: event.PlatformFCM, locale: "de-DE"},
		{app: "chat", user: "bob", platform: event.PlatformAPNs, locale: "ja-JP", topic: "com.example.chat.beta"},
		{app: "chat", user: "bob", platform: event.PlatformFCM, locale: "pl-PL"},
		{app: "chat", user: "bob", platform: event.PlatformAPNs, locale: "xx-YY"},
		{app: "chat", user: "frank", platform: event.PlatformFCM, locale: "en-GB"},
		{app: "secret", user: "bob", platform: event.PlatformFCM, locale: "de-DE"},
		{app: "secret", user: "bob", platform: event.PlatformAPNs},
		{app: "ghost", user: "gus", platform: event.PlatformFCM},
	}
	var evs []*event.Event
	for _, d := range devices {
		d.token = sandbox.NewDeviceToken(d.platform)
		evs = append(evs, ev(d.app, event.Event{Type: event.TypeDeviceRegistered, User: d.user, Platform: d.platform, Token: d.token,
			Locale: d.locale, Topic: d.topic}))
	}
	sender := event.PreviewsSender
	evs = append(evs, ev("chat", event.Event{Type: event.TypePrefs, User: "frank", Previews: &sender}))
	if _, err := pub.PublishBatch(ctx, evs); err != nil {
		t.Fatal(err)
	}
	waitRows := func(what, query string, want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var got int
			_ = db.QueryRow(ctx, query).Scan(&got)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d rows, want %d", what, got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitRows("devices", "SELECT count(*) FROM devices", len(devices))
	waitRows("prefs", "SELECT count(*) FROM user_prefs WHERE previews = 'sender'", 1)

	// Five messages to bob in chat's group, one in secret's conversation of
	// the same name, one to frank, one to gus.
	evs = nil
	for i := range 5 {
		evs = append(evs, ev("chat", event.Event{Type: event.TypeMessage, Conversation: "c1", Message: "m" + strconv.Itoa(i), Sender: "alice",
			Recipients: []string{"bob", "frank"}, Preview: "lunch at " + strconv.Itoa(12+i) + "?", ConversationTitle: "Team chat"}))
	}
	evs = append(evs,
		ev("secret", event.Event{Type: event.TypeMessage, Conversation: "c1", Message: "s1", Sender: "eve", Recipients: []string{"bob"}, Preview: "top secret"}),
		ev("ghost", event.Event{Type: event.TypeMessage, Conversation: "g1", Message: "g1", Sender: "hal", Recipients: []string{"gus"}, Preview: "boo"}))
	if _, err := pub.PublishBatch(ctx, evs); err != nil {
		t.Fatal(err)
	}
	want := len(devices) - 1 // gus's device has no credentials
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sb.WaitFor(wctx, func(d []sandbox.Delivery) bool { return len(d) >= want }); err != nil {
		t.Fatal(err)
	}
	metricstest.WaitFor(t, workerMetrics, `nudge_push_total{outcome="failed",platform="fcm",reason="unknown_app"}`, 1)
	time.Sleep(500 * time.Millisecond) // nothing more arrives

	only := func(d *device) sandbox.Delivery {
		t.Helper()
		ds := sb.DeliveriesTo(d.token)
		if len(ds) != 1 {
			t.Fatalf("%s %s %s (%s) got %d pushes, want 1", d.app, d.user, d.platform, d.locale, len(ds))
		}
		if ds[0].App != d.app {
			t.Errorf("%s's device pushed with %s's credentials", d.app, ds[0].App)
		}
		return ds[0]
	}
	for i, w := range []struct{ title, body string }{
		{"5 ungelesene Nachrichten", "alice in Team chat: lunch at 16?"},
		{"未読メッセージ5件", "alice（Team chat）: lunch at 16?"},
		{"5 nieprzeczytanych wiadomości", "alice w Team chat: lunch at 16?"},
		{"5 unread messages", "alice in Team chat: lunch at 16?"},
		{"5 unread messages", "New message from alice in Team chat"}, // frank shows senders only
	} {
		d := only(devices[i])
		if d.Title != w.title || d.Body != w.body {
			t.Errorf("%s device: %q / %q, want %q / %q", devices[i].locale, d.Title, d.Body, w.title, w.body)
		}
		if d.TitleLocKey != "" || d.BodyLocKey != "" || d.Data["conversation_id"] != "c1" || d.Data["message_id"] != "m4" {
			t.Errorf("%s device: %+v", devices[i].locale, d)
		}
	}
	if d := only(devices[1]); d.Topic != "com.example.chat.beta" {
		t.Errorf("the beta app's device pushed to topic %q", d.Topic)
	}
	if d := only(devices[3]); d.Topic != "com.example.chat" {
		t.Errorf("a device naming no topic pushed to %q, want the app's first", d.Topic)
	}
	for _, d := range []sandbox.Delivery{only(devices[5]), only(devices[6])} {
		if strings.Contains(d.Title+d.Body+strings.Join(d.BodyLocArgs, " "), "secret") || strings.Contains(d.Title+d.Body, "eve") {
			t.Errorf("secret's push shows the message: %+v", d)
		}
		if d.TitleLocKey != "nudge_new_message" || d.BodyLocKey != "nudge_body_hidden" || len(d.BodyLocArgs) != 0 {
			t.Errorf("secret's %s push keys %q %v / %q %v", d.Platform, d.TitleLocKey, d.TitleLocArgs, d.BodyLocKey, d.BodyLocArgs)
		}
		if d.Platform == event.PlatformAPNs && !d.MutableContent {
			t.Error("secret's APNs push is not mutable-content")
		}
	}
	if d := only(devices[5]); d.Title != "Neue Nachricht" || d.Body != "Du hast neue Nachrichten" {
		t.Errorf("secret's German device: %q / %q", d.Title, d.Body)
	}
	if ds := sb.DeliveriesTo(devices[7].token); len(ds) != 0 {
		t.Errorf("a device of an app without credentials was pushed: %+v", ds)
	}
	var tokens int
	_ = db.QueryRow(ctx, "SELECT count(*) FROM devices WHERE token = $1", devices[7].token).Scan(&tokens)
	if tokens != 1 {
		t.Error("the token of a device of an unknown app was removed")
	}

	// ghost joins the apps file: after SIGHUP its device is pushed, with
	// its own credentials, without a restart.
	if err := os.WriteFile(appsFile, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := worker.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	metricstest.WaitFor(t, workerMetrics, `nudge_worker_apps_reloads_total{result="loaded"}`, 1)
	if _, err := pub.PublishBatch(ctx, []*event.Event{ev("ghost", event.Event{Type: event.TypeMessage, Conversation: "g2", Message: "g2",
		Sender: "hal", Recipients: []string{"gus"}, Preview: "boo again"})}); err != nil {
		t.Fatal(err)
	}
	if err := sb.WaitFor(wctx, func(ds []sandbox.Delivery) bool {
		return slices.ContainsFunc(ds, func(d sandbox.Delivery) bool { return d.Token == devices[7].token })
	}); err != nil {
		t.Fatal(err)
	}
	if d := sb.DeliveriesTo(devices[7].token)[0]; d.App != "ghost" || d.Body != "hal: boo again" {
		t.Errorf("ghost's push after the reload: %+v", d)
	}
}
