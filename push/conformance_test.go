package push_test

import (
	"testing"

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
