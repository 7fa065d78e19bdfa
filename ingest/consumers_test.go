package ingest_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/poll"
)

// Consumer names change with every pod: twenty consumers come and go, one
// after the other, each reading every shard. The one left removes the gone
// ones from the group (nothing pending, idle 10 × ClaimIdle), so the
// group's consumer list stays bounded however many rollouts there were;
// nothing published meanwhile is lost.
func TestGoneConsumersLeaveTheGroup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.ClaimIdle = time.Second
	ctx := context.Background()
	for i := range 20 {
		cfg.Consumer = "pod-" + strconv.Itoa(i)
		c, err := ingest.New(b.rdb, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		poll.Until(t, 10*time.Second, cfg.Consumer+" holding every shard", func() bool { return len(c.Owned()) == b.ks.Shards })
		b.publish(t, msg("c"+strconv.Itoa(i), "m"+strconv.Itoa(i), "alice", "bob"))
		// A shard's group lists a consumer once it has read from it: wait
		// until this pod applied its message (on a loaded machine it could
		// be stopped first, and the next pod read the message instead).
		poll.Until(t, 10*time.Second, cfg.Consumer+" applying its message", func() bool { return b.metric(t, "messages_sent") == int64(i+1) })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// The consumers listed in the shards' groups, but for those named.
	others := func(but string) []string {
		var names []string
		for s := range b.ks.Shards {
			xs, _ := b.rdb.XInfoConsumers(ctx, b.ks.Stream(s), ingest.DefaultGroup).Result()
			for _, x := range xs {
				if x.Name != but {
					names = append(names, strconv.Itoa(s)+":"+x.Name)
				}
			}
		}
		return names
	}
	consumers := func() int { return len(others("")) }
	if n := consumers(); n < 20 {
		t.Fatalf("%d consumers listed over the shards after twenty pods, want at least 20", n)
	}
	cfg.Consumer = "pod-last"
	b.start(t, cfg)
	poll.Until(t, 30*time.Second, "the gone consumers removed", func() bool { return len(others("pod-last")) == 0 })
	poll.Until(t, 10*time.Second, "every message applied", func() bool { return b.metric(t, "messages_sent") == 20 })
}
