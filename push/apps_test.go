package push_test

import (
	"slices"
	"testing"

	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
)

// senders returns the real FCM and APNs clients of one sandbox app.
func appSenders(t *testing.T, sb *sandbox.Server, app string) (fcm, apns push.Sender) {
	t.Helper()
	c, ok := sb.AppCredentials(app)
	if !ok {
		t.Fatalf("no sandbox app %s", app)
	}
	return mustFCM(t, fcmConfig(c)), mustAPNs(t, apnsConfig(c))
}

// The sandbox serves several apps, each with its own credentials: a push is
// recorded with the app whose credentials sent it, one app's service
// account cannot send for another's project, and one app's APNs key cannot
// push to another's bundle id.
func TestSandboxAppsHaveTheirOwnCredentials(t *testing.T) {
	t.Parallel()
	sb, err := sandbox.Start(t.Context(), sandbox.Config{Apps: []sandbox.AppConfig{
		{Name: "chat", APNsTopics: []string{"com.example.chat", "com.example.chat.beta"}}, {Name: "shop"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	chatFCM, chatAPNs := appSenders(t, sb, "chat")
	shopFCM, _ := appSenders(t, sb, "shop")
	msg := push.Message{Title: "t", Body: "b", Badge: -1}
	for _, tc := range []struct {
		sender push.Sender
		msg    push.Message
		app    string
	}{
		{chatFCM, msg, "chat"}, {shopFCM, msg, "shop"}, {chatAPNs, msg, "chat"},
		{chatAPNs, push.Message{Title: "t", Body: "b", Badge: -1, Topic: "com.example.chat.beta"}, "chat"},
	} {
		tok := sandbox.NewDeviceToken(tc.sender.Platform())
		res, err := tc.sender.Send(t.Context(), tc.msg, []string{tok})
		if err != nil || res[0].Outcome != push.Delivered {
			t.Fatalf("%s send: %+v (%v)", tc.app, res, err)
		}
		ds := sb.DeliveriesTo(tok)
		if len(ds) != 1 || ds[0].App != tc.app {
			t.Errorf("%s push recorded as %+v", tc.app, ds)
		}
		if tc.msg.Topic != "" && ds[0].Topic != tc.msg.Topic {
			t.Errorf("topic %q, want %q", ds[0].Topic, tc.msg.Topic)
		}
	}
	// chat's key may not push to shop's bundle id.
	tok := sandbox.NewDeviceToken(push.PlatformAPNs)
	res, err := chatAPNs.Send(t.Context(), push.Message{Title: "t", Body: "b", Badge: -1, Topic: "com.nudgehq.shop"}, []string{tok})
	if err != nil || res[0].Outcome != push.Failed || res[0].Reason != push.ReasonTopicDisallowed {
		t.Errorf("chat's key pushing shop's topic: %+v (%v), want failed topic_disallowed", res, err)
	}
	// chat's service account may not send for shop's project.
	shop, _ := sb.AppCredentials("shop")
	chat, _ := sb.AppCredentials("chat")
	wrong, err := push.NewFCM(t.Context(), push.FCMConfig{ProjectID: shop.ProjectID, CredentialsJSON: chat.ServiceAccountJSON, Endpoint: chat.FCMEndpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	res, err = wrong.Send(t.Context(), msg, []string{sandbox.NewDeviceToken(push.PlatformFCM)})
	if err == nil && res[0].Outcome == push.Delivered {
		t.Errorf("chat's service account sent for shop's project: %+v", res)
	}
	if len(sb.Deliveries()) != 4 {
		t.Errorf("%d deliveries, want the 4 sent with the right credentials", len(sb.Deliveries()))
	}
}

// Localization keys, their arguments and mutable-content reach both
// platforms (and iOS devices through FCM).
func TestLocKeysAndMutableContent(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	fcm, apns := appSenders(t, sb, sandbox.DefaultAppName)
	msg := push.Message{Title: "2 unread messages", Body: "Alice: hi", Badge: -1, MutableContent: true,
		TitleLocKey: "nudge_unread_messages", TitleLocArgs: []string{"2"}, BodyLocKey: "nudge_body_preview", BodyLocArgs: []string{"Alice", "hi"}}
	for _, s := range []push.Sender{fcm, apns} {
		tok := sandbox.NewDeviceToken(s.Platform())
		if _, err := s.Send(t.Context(), msg, []string{tok}); err != nil {
			t.Fatal(err)
		}
		ds := sb.DeliveriesTo(tok)
		if len(ds) != 1 {
			t.Fatalf("%s: %d deliveries", s.Platform(), len(ds))
		}
		d := ds[0]
		if d.TitleLocKey != msg.TitleLocKey || !slices.Equal(d.TitleLocArgs, msg.TitleLocArgs) || d.BodyLocKey != msg.BodyLocKey ||
			!slices.Equal(d.BodyLocArgs, msg.BodyLocArgs) || d.Title != msg.Title || d.Body != msg.Body || !d.MutableContent {
			t.Errorf("%s delivery %+v", s.Platform(), d)
		}
	}
	// Keys alone, without text, are a valid message.
	if err := (push.Message{TitleLocKey: "k"}).Validate(); err != nil {
		t.Error(err)
	}
}
