package producer_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

func TestPublishRoutesByConversationInOrder(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 8)
	p := producer.New(rdb, producer.Config{Keyspace: ks})
	ctx := context.Background()

	var evs []*event.Event
	for i := 0; i < 50; i++ {
		evs = append(evs, &event.Event{V: 1, Type: event.TypeMessage, ID: "e" + strconv.Itoa(i), TS: 1767225600000,
			Conversation: "conv-" + strconv.Itoa(i%5), Message: "m" + strconv.Itoa(i), Sender: "a", Recipients: []string{"b"}})
	}
	ids, err := p.PublishBatch(ctx, evs)
	if err != nil || len(ids) != 50 {
		t.Fatalf("PublishBatch: %v, %d ids", err, len(ids))
	}
	if _, err := p.Publish(ctx, &event.Event{V: 1, Type: event.TypePresence, ID: "p1", TS: 1767225600000, User: "bob", Status: "online"}); err != nil {
		t.Fatal(err)
	}
	// Every conversation's events are in one stream, in publish order.
	for c := 0; c < 5; c++ {
		conv := "conv-" + strconv.Itoa(c)
		msgs, err := rdb.XRange(ctx, ks.Stream(ks.Shard(conv)), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		last := -1
		for _, m := range msgs {
			e, err := event.Decode([]byte(m.Values["event"].(string)))
			if err != nil {
				t.Fatalf("stored event does not decode: %v", err)
			}
			if e.Conversation != conv {
				continue
			}
			n, _ := strconv.Atoi(e.Message[1:])
			if n <= last {
				t.Errorf("%s out of order: %s after m%d", conv, e.Message, last)
			}
			last = n
		}
		if last < 0 {
			t.Errorf("no events of %s in its shard", conv)
		}
	}
	if n := rdb.XLen(ctx, ks.Stream(ks.Shard("bob"))).Val(); n == 0 {
		t.Error("presence not in the user's shard")
	}
}

func TestPublishValidates(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 2)
	p := producer.New(rdb, producer.Config{Keyspace: ks})
	ctx := context.Background()
	bad := &event.Event{V: 1, Type: event.TypePresence, ID: "x", TS: 1767225600000, User: "bob", Status: "asleep"}
	good := &event.Event{V: 1, Type: event.TypePresence, ID: "y", TS: 1767225600000, User: "bob", Status: "online"}
	if _, err := p.Publish(ctx, bad); !errors.Is(err, producer.ErrInvalid) {
		t.Errorf("Publish(bad) = %v, want ErrInvalid", err)
	}
	if _, err := p.PublishBatch(ctx, []*event.Event{good, bad}); !errors.Is(err, producer.ErrInvalid) {
		t.Errorf("PublishBatch = %v, want ErrInvalid", err)
	}
	for s := 0; s < 2; s++ {
		if n := rdb.XLen(ctx, ks.Stream(s)).Val(); n != 0 {
			t.Errorf("a batch with an invalid event published %d entries", n)
		}
	}
	// The published JSON is the contract's: it decodes to the same event.
	if _, err := p.Publish(ctx, good); err != nil {
		t.Fatal(err)
	}
	msgs, _ := rdb.XRange(ctx, ks.Stream(ks.Shard("bob")), "-", "+").Result()
	var back event.Event
	if err := json.Unmarshal([]byte(msgs[0].Values["event"].(string)), &back); err != nil || back.ID != "y" || back.App != event.DefaultApp {
		t.Errorf("stored %v (%v)", msgs[0].Values, err)
	}
}

// The MaxLen backstop keeps a stream bounded while nothing consumes it.
func TestMaxLenBackstop(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 1)
	p := producer.New(rdb, producer.Config{Keyspace: ks, MaxLen: 100})
	var evs []*event.Event
	for i := 0; i < 2000; i++ {
		evs = append(evs, &event.Event{V: 1, Type: event.TypePresence, ID: "h" + strconv.Itoa(i), TS: 1767225600000, User: "u", Status: "heartbeat"})
	}
	if _, err := p.PublishBatch(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	// MAXLEN ~ trims whole macro nodes (100 entries by default): allow that slack.
	if n := rdb.XLen(context.Background(), ks.Stream(0)).Val(); n > 300 {
		t.Errorf("stream holds %d entries, MaxLen 100", n)
	}
}
