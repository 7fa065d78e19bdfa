package ingest_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/poll"
)

// A consumer that lost a shard (its lease expired while Redis restarted,
// say) may still read an entry after the new owner has checked the pending
// entries and gone on to new ones. The new owner must apply that entry
// before the later ones, not leave it pending: here the old owner reads a
// message and the new owner gets the read that follows it; applied in that
// order the episode closes, applied the other way round it stays open.
func TestTakeoverAppliesEntriesInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.start(t, b.cfg)
	b.publish(t, msg("warm", "w1", "x", "y"))
	poll.Until(t, 5*time.Second, "the warm-up event", func() bool { return b.metric(t, "events_applied") == 1 })
	time.Sleep(300 * time.Millisecond) // the consumer waits for new entries (or checks the pending ones)

	// Atomically: the message, read by the consumer that lost the shard,
	// then the read. The new owner, waiting in XREADGROUP, gets the read.
	const conv = "c-takeover"
	stream := b.ks.Stream(b.ks.Shard(conv))
	m, r := msg(conv, "m1", "alice", "bob"), read(conv, "bob", "m1")
	mj, _ := json.Marshal(m)
	rj, _ := json.Marshal(r)
	var stale *redis.XStreamSliceCmd
	if _, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"event", mj}})
		stale = p.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "nudge-ingest", Consumer: "old-owner",
			Streams: []string{stream, ">"}, Count: 1, Block: -1})
		p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"event", rj}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := stale.Val(); len(got) != 1 || len(got[0].Messages) != 1 {
		t.Fatalf("the old owner read %v, want the message", got)
	}

	poll.Until(t, 15*time.Second, "both events applied", func() bool {
		return b.metric(t, "events_applied") == 3 && b.pendingTotal(t, "nudge-ingest") == 0
	})
	if n, ep := b.unread(t, "bob", conv); n != 0 || ep != "" {
		t.Errorf("bob's unread in %s: %d (episode %q), want none: the read was applied before the message it reads", conv, n, ep)
	}
	if got := b.metric(t, "episodes_closed"); got != 1 {
		t.Errorf("episodes_closed = %d, want 1", got)
	}
}
