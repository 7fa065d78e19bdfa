package jobs

import (
	"testing"

	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

// A pushed reminder's sent set has a TTL however the record finds it: the
// claim's, when its intents are all there; its own, when the set was lost
// between the claim and the record and the record makes it again.
func TestRecordLeavesTheSentSetWithATTL(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := redistest.New(t)
	w, err := NewWorker(rdb, nil, nil, nil, Config{Keyspace: keys.New(prefix, 2)})
	if err != nil {
		t.Fatal(err)
	}
	dev := registry.Device{Platform: push.PlatformFCM, Token: "tok"}
	for _, c := range []struct {
		name string
		lost bool
	}{{"intents kept", false}, {"set lost after the claim", true}} {
		r := Reminder{Shard: 1, App: "chat", User: "u1", Conversation: c.name, Episode: "1-0", Stage: 1}
		s := &sending{r: r, devices: []registry.Device{dev}, targets: []target{{platform: dev.Platform, key: "fcm"}}}
		if err := w.claim(ctx, []*sending{s}); err != nil {
			t.Fatal(err)
		}
		key := w.sentKey(r)
		if c.lost {
			rdb.Del(ctx, key)
		}
		s.results = []deviceResult{{dev.Platform, push.Result{Token: dev.Token, Outcome: push.Delivered}}}
		if err := w.record(ctx, []*sending{s}); err != nil {
			t.Fatal(err)
		}
		if !rdb.SIsMember(ctx, key, tokenDigest(dev.Platform, dev.Token)).Val() {
			t.Errorf("%s: the push is not recorded: %v", c.name, rdb.SMembers(ctx, key).Val())
		}
		if ttl := rdb.TTL(ctx, key).Val(); ttl <= 0 || ttl > w.cfg.SentTTL {
			t.Errorf("%s: sent set TTL %v, want up to %v", c.name, ttl, w.cfg.SentTTL)
		}
	}
}
