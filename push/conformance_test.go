package push_test

import (
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/pushtest"
	"github.com/nudgehq/nudge/push/sandbox"
)

// Every sender passes the conformance suite against the sandbox, alone and
// as the worker runs it: wrapped in a push.Retrier (its waits cut short).
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		features pushtest.Features
		sender   func(*testing.T, *sandbox.Server) push.Sender
	}{
		{"FCM", pushtest.FCM, newFCM},
		{"APNs", pushtest.APNs, newAPNs},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pushtest.RunConformance(t, c.features, c.sender)
		})
		t.Run("Retrying"+c.name, func(t *testing.T) {
			t.Parallel()
			pushtest.RunConformance(t, c.features.Retrying(3), func(t *testing.T, sb *sandbox.Server) push.Sender {
				return retrying(t, c.sender(t, sb), 3)
			})
		})
	}
}

// deliversOne sends one push to a new device token of s's platform and
// fails t unless the sandbox accepted it.
func deliversOne(t *testing.T, s push.Sender) {
	t.Helper()
	res, err := s.Send(t.Context(), push.Message{Title: "hi"}, []string{sandbox.NewDeviceToken(s.Platform())})
	if err != nil || res[0].Outcome != push.Delivered {
		t.Fatalf("Send = %+v, %v", res, err)
	}
}

// A delivery's Message, sent again to the same device, arrives as the same
// delivery: benchmarks send a worker's pushes again with the raw client
// and compare like with like.
func TestDeliveryMessageSendsTheSameAgain(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	msg := push.Message{
		Title: "Ana", Body: "are you coming?", ConversationID: "conv-1", CollapseKey: "conv-1", ThreadID: "conv-1",
		Badge: 3, Data: map[string]string{"episode": "e1", "stage": "1"}, Sound: "default", TTL: 90 * time.Minute,
		TitleLocKey: "reminder_title", TitleLocArgs: []string{"Ana"}, BodyLocKey: "reminder_body", BodyLocArgs: []string{"3"},
		MutableContent: true,
	}
	for _, c := range []struct {
		name   string
		sender push.Sender
		msg    push.Message
	}{
		{"FCM", newFCM(t, sb), msg},
		{"APNs", newAPNs(t, sb), msg},
		{"APNs without badge or TTL", newAPNs(t, sb), push.Message{Title: "t", Badge: -1}},
	} {
		tok := sandbox.NewDeviceToken(c.sender.Platform())
		for range 2 {
			sent := sb.DeliveriesTo(tok)
			m := c.msg
			if len(sent) > 0 {
				m = sent[0].Message()
			}
			if res, err := c.sender.Send(t.Context(), m, []string{tok}); err != nil || res[0].Outcome != push.Delivered {
				t.Fatalf("%s: Send = %+v, %v", c.name, res, err)
			}
		}
		ds := sb.DeliveriesTo(tok)
		if len(ds) != 2 {
			t.Fatalf("%s: %d deliveries, want 2", c.name, len(ds))
		}
		for i := range ds {
			ds[i].MessageID, ds[i].Time = "", time.Time{}
			if c.sender.Platform() == push.PlatformAPNs && ds[i].TTL != "" {
				exp, _ := strconv.ParseInt(ds[i].TTL, 10, 64)
				if left := time.Until(time.Unix(exp, 0)); left < 89*time.Minute || left > 91*time.Minute {
					t.Errorf("%s: expiration %d is %s away, want about 90m", c.name, exp, left)
				}
				ds[i].TTL = "set"
			}
		}
		if !reflect.DeepEqual(ds[0], ds[1]) {
			t.Errorf("%s: sent again as\n%+v\nfirst sent as\n%+v", c.name, ds[1], ds[0])
		}
	}
}
