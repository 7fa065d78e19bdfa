package producer_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// A producer in another language publishes through the guard: an event
// within the contract's size lands as Publish would put it (one field,
// event), a larger one is refused with NUDGETOOLARGE and never stored.
func TestGuard(t *testing.T) {
	t.Parallel()
	rdb, _ := redistest.Private(t) // FUNCTION LOAD is server-wide
	ctx := context.Background()
	if err := producer.InstallGuard(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if err := producer.InstallGuard(ctx, rdb); err != nil {
		t.Fatalf("installed twice: %v", err)
	}
	ks := keys.New("g", 4)
	ev := `{"v":1,"type":"conversation.read","id":"e1","ts":1767225600000,"conversation":"c1","user":"bob"}`
	stream := ks.Stream(ks.Shard("c1"))
	id, err := rdb.FCall(ctx, "nudge_publish", []string{stream}, ev, 1000).Text()
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := rdb.XRange(ctx, stream, id, id).Result()
	if err != nil || len(msgs) != 1 || msgs[0].Values["event"] != ev || len(msgs[0].Values) != 1 {
		t.Fatalf("the entry: %v %v", msgs, err)
	}
	if _, err := event.DecodeString(msgs[0].Values["event"].(string)); err != nil {
		t.Errorf("the stored event does not decode: %v", err)
	}
	big := `{"v":1,"preview":"` + strings.Repeat("a", event.MaxEventBytes) + `"}`
	for _, tc := range []struct {
		args []any
		want string
	}{
		{[]any{big}, "NUDGETOOLARGE"},
		{[]any{}, "NUDGEARGS"},
		{[]any{ev, "-5"}, "NUDGEARGS"},
	} {
		if err := rdb.FCall(ctx, "nudge_publish", []string{stream}, tc.args...).Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("nudge_publish with %d args: %v, want %s", len(tc.args), err, tc.want)
		}
	}
	if n := rdb.XLen(ctx, stream).Val(); n != 1 {
		t.Errorf("the stream holds %d entries, want the one accepted", n)
	}
}
