package ingest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

// With Redis refusing writes (memory full, noeviction), the heartbeat's
// ZADD is refused but the leases' renewal (PEXPIRE, which Redis takes) goes
// on: ingest keeps its shards through the outage instead of losing them
// all one ClaimIdle in.
func TestLeasesHeldWhileRedisMemoryIsFull(t *testing.T) {
	t.Parallel()
	rdb, _ := redistest.Private(t)
	b := setup(t)
	b.rdb = rdb
	b.ks = keys.New(b.ks.Prefix, b.ks.Shards)
	cfg := b.cfg
	cfg.ClaimIdle = time.Second
	c := b.start(t, cfg)
	poll.Until(t, 10*time.Second, "every shard held", func() bool { return len(c.Owned()) == b.ks.Shards })
	ctx := context.Background()
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "probe", "x", 0).Err(); err == nil {
		t.Fatal("Redis still takes writes with maxmemory 1")
	}
	time.Sleep(3 * cfg.ClaimIdle)
	for s := range b.ks.Shards {
		if v, _ := rdb.Get(ctx, b.ks.Lease(s)).Result(); v != cfg.Consumer {
			t.Errorf("lease of shard %d: %q, want still held by %s", s, v, cfg.Consumer)
		}
	}
	if n := len(c.Owned()); n != b.ks.Shards {
		t.Errorf("holds %d shards during the outage, want %d", n, b.ks.Shards)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
}
