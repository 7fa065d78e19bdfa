package apps_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/apps"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
)

func repoFile(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// The full example of docs/apps.md is a valid apps file.
func TestDocsExampleParses(t *testing.T) {
	t.Parallel()
	doc := repoFile(t, "docs/apps.md")
	m := regexp.MustCompile("(?s)```yaml\n(apps:.*?)```").FindStringSubmatch(doc)
	if m == nil {
		t.Fatal("no apps file example in docs/apps.md")
	}
	f, err := apps.Parse([]byte(m[1]), "/etc/nudge")
	if err != nil {
		t.Fatalf("the example of docs/apps.md: %v", err)
	}
	if got := f.Names(); len(got) != 2 || f.Apps["chat"].APNs.KeyFile != "/etc/nudge/chat-apns.p8" || f.Apps["vault"].Localize != "device" {
		t.Errorf("example read as %v %+v", got, f.Apps)
	}
}

// The dev overlay's apps file pushes through a sandbox started as the dev
// overlay starts it (a fixed APNs key id and team id), FCM and APNs alike.
func TestDevOverlayAppsFileWorks(t *testing.T) {
	t.Parallel()
	sb, err := sandbox.Start(t.Context(), sandbox.Config{Apps: []sandbox.AppConfig{{Name: sandbox.DefaultAppName,
		ProjectID: "nudge-sandbox", APNsTopics: []string{"com.nudgehq.app"}, APNsKeyID: "DEVKEY0001", APNsTeamID: "DEVTEAM001"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	dir := t.TempDir()
	if err := sb.WriteCredentials(dir); err != nil {
		t.Fatal(err)
	}
	c := sb.Credentials()
	dev := repoFile(t, "deploy/k8s/overlays/dev/apps.dev.yaml")
	dev = strings.NewReplacer("/sandbox/", dir+"/", "http://127.0.0.1:8085/v1", c.FCMEndpoint, "https://127.0.0.1:8086", c.APNsHost).Replace(dev)
	f, err := apps.Parse([]byte(dev), dir)
	if err != nil {
		t.Fatal(err)
	}
	set, err := apps.Build(t.Context(), f, apps.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	a := set.App("default")
	for _, platform := range []string{push.PlatformFCM, push.PlatformAPNs} {
		tok := sandbox.NewDeviceToken(platform)
		res, err := a.Sender(platform).Send(t.Context(), push.Message{Title: "t", Body: "b", Badge: -1}, []string{tok})
		if err != nil || res[0].Outcome != push.Delivered {
			t.Errorf("%s: %+v (%v)", platform, res, err)
		}
	}
}
