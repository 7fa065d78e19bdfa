package ingest_test

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
)

// A shard holding many oversized entries (Redis takes up to 512 MB each)
// never has them pulled whole into ingest's memory: a batch of 64 entries
// of 2 MB each (128 MB) is dead-lettered as too_large while ingest
// allocates a fraction of that, and the events after them are applied.
//
// Not parallel: it measures the process's allocations.
func TestOversizedEntriesAreNotReadWhole(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	big := `{"v":1,"type":"message.sent","id":"x","preview":"` + strings.Repeat("a", 2<<20) + `"}`
	const n = 64
	stream := b.ks.Stream(0)
	pipe := redistest.Bulk(t).Pipeline() // 128 MB: longer timeouts
	for range n {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"event", big}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := b.cfg
	cfg.BatchSize = n
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.start(t, cfg)
	poll.Until(t, 30*time.Second, "the oversized entries dead-lettered", func() bool {
		return b.rdb.XLen(ctx, b.ks.DeadLetter(0)).Val() == n
	})
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("ingest allocated %.1f MB for %d entries of %.1f MB", float64(alloc)/(1<<20), n, float64(len(big))/(1<<20))
	if alloc > 40<<20 {
		t.Errorf("ingest allocated %.1f MB while dead-lettering %d MB of oversized entries: they were read whole", float64(alloc)/(1<<20), n*len(big)>>20)
	}
	msgs, err := b.rdb.XRange(ctx, b.ks.DeadLetter(0), "-", "+").Result()
	if err != nil || len(msgs) != n {
		t.Fatalf("dead letters: %d, %v", len(msgs), err)
	}
	m := msgs[0].Values
	if m["reason"] != "too_large" || !strings.Contains(m["detail"].(string), "2097") || len(m["payload"].(string)) != 64<<10 {
		t.Errorf("dead letter: reason %v, detail %v, payload of %d bytes; want too_large, the size, the first 64 KiB",
			m["reason"], m["detail"], len(m["payload"].(string)))
	}
	// The shard goes on.
	conv := "c"
	for i := 0; b.ks.Shard(conv) != 0; i++ {
		conv = "c" + strconv.Itoa(i)
	}
	b.publish(t, msg(conv, "m1", "alice", "bob"))
	poll.Until(t, 10*time.Second, "an event after them applied", func() bool { return b.metric(t, "messages_sent") == 1 })
}
