package apps_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nudgehq/nudge/apps"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
)

// sandboxApps starts a push sandbox with two apps and writes its
// credentials and apps file to a directory.
func sandboxApps(t *testing.T) (*sandbox.Server, string) {
	t.Helper()
	sb, err := sandbox.Start(t.Context(), sandbox.Config{Apps: []sandbox.AppConfig{{Name: "chat"}, {Name: "shop"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	dir := t.TempDir()
	if err := sb.WriteCredentials(dir); err != nil {
		t.Fatal(err)
	}
	return sb, filepath.Join(dir, sandbox.AppsFile)
}

// The apps file the sandbox writes loads, and each app pushes with its own
// credentials.
func TestAppsFilePushesEachAppWithItsOwnCredentials(t *testing.T) {
	t.Parallel()
	sb, path := sandboxApps(t)
	f, err := apps.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	set, err := apps.Build(t.Context(), f, apps.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for _, name := range []string{"chat", "shop"} {
		a := set.App(name)
		if a == nil {
			t.Fatalf("no app %s", name)
		}
		for _, platform := range []string{push.PlatformFCM, push.PlatformAPNs} {
			tok := sandbox.NewDeviceToken(platform)
			res, err := a.Sender(platform).Send(t.Context(), push.Message{Title: "t", Body: "b", Badge: -1}, []string{tok})
			if err != nil || res[0].Outcome != push.Delivered {
				t.Fatalf("%s %s: %+v (%v)", name, platform, res, err)
			}
			if ds := sb.DeliveriesTo(tok); len(ds) != 1 || ds[0].App != name {
				t.Errorf("%s %s push sent as %+v", name, platform, ds)
			}
		}
	}
	if set.App("other") != nil {
		t.Error("an app not in the file has a sender")
	}
}

// Without a file the single-app settings serve every app; with one, they
// serve the default app only.
func TestFallback(t *testing.T) {
	t.Parallel()
	_, path := sandboxApps(t)
	fb := &apps.App{Name: "flags"}
	set, err := apps.Build(t.Context(), nil, apps.Options{Fallback: fb})
	if err != nil || set.App("anything") != fb {
		t.Fatalf("no file: %v, %v", set, err)
	}
	f, _ := apps.Load(path)
	set, err = apps.Build(t.Context(), f, apps.Options{Fallback: fb, DefaultApp: "legacy"})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if set.App("legacy") != fb || set.App("anything") != nil || set.App("chat") == nil || set.App("chat") == fb {
		t.Error("with a file the fallback serves more than the default app")
	}
}

// A misspelt field, a missing key, a template that does not render, a bad
// setting: each is refused with a message naming it.
func TestBadFilesAreRefusedClearly(t *testing.T) {
	t.Parallel()
	for want, body := range map[string]string{
		`field projectid not found`:      "apps:\n  chat:\n    fcm:\n      credentials_file: x.json\n      projectid: p\n",
		`no fcm and no apns`:             "apps:\n  chat:\n    locale: de\n",
		`apns: topics`:                   "apps:\n  chat:\n    apns:\n      key_file: k.p8\n      key_id: K\n      team_id: T\n",
		`previews "all"`:                 "apps:\n  chat:\n    previews: all\n    fcm:\n      credentials_file: x.json\n",
		`app "bad app"`:                  "apps:\n  bad app:\n    fcm:\n      credentials_file: x.json\n",
		`no apps`:                        "apps: {}\n",
		`host "http://x"`:                "apps:\n  chat:\n    apns:\n      key_file: k.p8\n      key_id: K\n      team_id: T\n      topics: [a.b]\n      host: http://x\n",
		`plural form "several"`:          "apps:\n  chat:\n    fcm: {credentials_file: x.json}\n    templates:\n      de:\n        unread_messages: {several: x}\n",
		`topic "com.example/app" is not`: "apps:\n  chat:\n    apns:\n      key_file: k.p8\n      key_id: K\n      team_id: T\n      topics: [com.example/app]\n",
	} {
		_, err := apps.Parse([]byte(body), "/etc/nudge")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one saying %q", body, err, want)
		}
	}
	_, path := sandboxApps(t)
	raw, _ := os.ReadFile(path)
	bad := strings.Replace(string(raw), "  shop:\n", "  shop:\n    templates:\n      de:\n        body_from: \"{{.Nobody}}\"\n", 1)
	f, err := apps.Parse([]byte(bad), filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apps.Build(t.Context(), f, apps.Options{}); err == nil || !strings.Contains(err.Error(), "app shop, locale de, string body_from") {
		t.Errorf("a template that does not render: %v", err)
	}
	f, _ = apps.Parse([]byte(strings.Replace(string(raw), "apns-key.p8", "missing.p8", 1)), filepath.Dir(path))
	if _, err := apps.Build(t.Context(), f, apps.Options{}); err == nil || !strings.Contains(err.Error(), "missing.p8") {
		t.Errorf("a missing key file: %v", err)
	}
}

// Live reloads on SIGHUP and when a file changes; a broken file is
// refused and the apps in use stay.
func TestLiveReloads(t *testing.T) {
	t.Parallel()
	_, path := sandboxApps(t)
	l, err := apps.NewLive(t.Context(), path, apps.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	hup := make(chan os.Signal, 1)
	go l.Run(ctx, 50*time.Millisecond, hup)
	first := l.Current()
	raw, _ := os.ReadFile(path)
	write := func(body string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	// A broken file: refused, the apps in use stay.
	write("apps:\n  chat: [not, an, app]\n")
	hup <- syscall.SIGHUP
	time.Sleep(300 * time.Millisecond)
	if l.Current() != first {
		t.Fatal("a broken apps file replaced the apps in use")
	}
	// A good file with a third locale setting: loaded on change alone.
	write(strings.Replace(string(raw), "  shop:\n", "  shop:\n    locale: de\n", 1))
	poll.Until(t, 5*time.Second, "the changed file loaded", func() bool { return l.Current() != first })
	if st := l.Current().App("shop").Style; st.DefaultLocale != "de" {
		t.Errorf("shop's locale %q after reload, want de", st.DefaultLocale)
	}
	if l.Current().App("chat") == nil {
		t.Error("chat lost in the reload")
	}
}

// The worker's single-app flags, as the sandbox gives them, make an app
// that pushes to both providers; no provider flag makes none; a CA file
// that holds no certificate is refused, naming it.
func TestFlags(t *testing.T) {
	t.Parallel()
	sb, path := sandboxApps(t)
	parse := func(args ...string) *apps.Flags {
		var s apps.Flags
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		s.RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	a, err := parse(sb.WorkerArgs(filepath.Dir(path))...).Build(t.Context(), "chat", apps.Options{})
	if err != nil || a == nil {
		t.Fatalf("Build: %v, %v", a, err)
	}
	if a.Name != "chat" {
		t.Errorf("name %q", a.Name)
	}
	for _, platform := range []string{push.PlatformFCM, push.PlatformAPNs} {
		tok := sandbox.NewDeviceToken(platform)
		res, err := a.Sender(platform).Send(t.Context(), push.Message{Title: "t", Badge: -1}, []string{tok})
		if err != nil || res[0].Outcome != push.Delivered || len(sb.DeliveriesTo(tok)) != 1 {
			t.Errorf("%s: %+v (%v)", platform, res, err)
		}
	}
	if topic, ok := a.Topic("com.example.other"); !ok || topic != "com.example.other" {
		t.Errorf("a device's own topic: %q %v, want it kept", topic, ok)
	}
	if a, err := parse().Build(t.Context(), "chat", apps.Options{}); a != nil || err != nil {
		t.Errorf("no provider flag: %v, %v; want no app", a, err)
	}
	args := append(sb.WorkerArgs(filepath.Dir(path)), "-apns-ca-file", path)
	if _, err := parse(args...).Build(t.Context(), "chat", apps.Options{}); err == nil || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "-apns-") {
		t.Errorf("a CA file without a certificate: %v", err)
	}
}
