package ingest

import (
	"io"
	"log/slog"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

// The reminder relay deletes the outbox entries it handed over and records
// their counts in one step, and only if every entry is still there: when
// another relay of the shard took one of them, the step does nothing, so
// nothing is counted twice.
func TestAckOutboxOnlyWhenEveryEntryIsThere(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 2)
	box, ctx := ks.Outbox(0), t.Context()
	c, err := New(rdb, Config{Keyspace: ks, Consumer: "relay", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	dims := counters.Dims{Metric: counters.RemindersQueued, App: "a"}
	counted := func() int64 {
		t.Helper()
		n, err := rdb.HGet(ctx, ks.Counters(0, keys.Minute(c.cfg.Now())), counters.Field(dims)).Int64()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return n
	}
	// read adds n entries to the outbox and reads the oldest n, as the
	// relay does.
	read := func(n int) []redis.XMessage {
		t.Helper()
		for range n {
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: box, Values: []any{"r", "C|u|c|1-0|a"}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		msgs, err := rdb.XRangeN(ctx, box, "-", "+", int64(n)).Result()
		if err != nil || len(msgs) != n {
			t.Fatalf("read %d entries (%v), want %d", len(msgs), err, n)
		}
		return msgs
	}

	msgs := read(3)
	if ok, err := c.ackOutbox(ctx, 0, box, msgs, Counts{dims: 3}); err != nil || !ok {
		t.Fatalf("ack of 3 entries that are there = %v, %v; want true", ok, err)
	}
	if n := rdb.Exists(ctx, box).Val(); n != 0 {
		t.Errorf("the emptied outbox still exists")
	}
	if n := counted(); n != 3 {
		t.Errorf("counted %d, want 3", n)
	}

	// One of the entries gone, first, in the middle or last: nothing is
	// deleted or counted.
	for _, gone := range []int{0, 1, 2} {
		msgs := read(3)
		if err := rdb.XDel(ctx, box, msgs[gone].ID).Err(); err != nil {
			t.Fatal(err)
		}
		if ok, err := c.ackOutbox(ctx, 0, box, msgs, Counts{dims: 3}); err != nil || ok {
			t.Errorf("ack with entry %d gone = %v, %v; want false", gone, ok, err)
		}
		if n := rdb.XLen(ctx, box).Val(); n != 2 {
			t.Errorf("entry %d gone: the outbox holds %d entries, want the other 2", gone, n)
		}
		if n := counted(); n != 3 {
			t.Errorf("entry %d gone: counted %d, want still 3", gone, n)
		}
		if err := rdb.Del(ctx, box).Err(); err != nil {
			t.Fatal(err)
		}
	}
}
