package ingest

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// member names the i-th member of a big group: short, so that 10,000 of
// them fit an event (event.MaxEventBytes).
func member(i int) string { return strconv.FormatInt(int64(i), 36) }

// bigMessage returns a message of conv from member 0 to n members, three
// of them mentioned.
func bigMessage(id, conv string, n int) *event.Event {
	rcpt := make([]string, n)
	for i := range rcpt {
		rcpt[i] = member(i)
	}
	return &event.Event{V: 1, Type: event.TypeMessage, ID: id, TS: 1767225600000, Conversation: conv,
		Message: "m-" + id, Sender: member(0), Recipients: rcpt, Mentions: rcpt[1:4], Preview: "all hands at 10"}
}

type chunkBundle struct {
	rdb *redis.Client
	ks  keys.Keyspace
	c   *Consumer
	pub *producer.Producer
}

func newChunkBundle(t *testing.T) *chunkBundle {
	t.Helper()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 2)
	c, err := New(rdb, Config{Keyspace: ks, Consumer: "one", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &chunkBundle{rdb: rdb, ks: ks, c: c, pub: producer.New(rdb, producer.Config{Keyspace: ks})}
}

// read takes the shard's new entries as consumer "one" and returns them
// decoded.
func (b *chunkBundle) read(t *testing.T, s int) []item {
	t.Helper()
	ctx := context.Background()
	if err := b.rdb.Set(ctx, b.ks.Lease(s), "one", 0).Err(); err != nil {
		t.Fatal(err)
	}
	msgs, err := b.c.read(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	return b.c.decode(s, msgs, nil)
}

func (b *chunkBundle) totals(t *testing.T, s int) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	out := map[string]int64{}
	mins, _ := b.rdb.ZRange(ctx, b.ks.CounterIndex(s), 0, -1).Result()
	for _, m := range mins {
		mm, _ := strconv.ParseInt(m, 10, 64)
		h, _ := b.rdb.HGetAll(ctx, b.ks.Counters(s, mm)).Result()
		for f, v := range h {
			d, _ := counters.ParseField(f)
			n, _ := strconv.ParseInt(v, 10, 64)
			out[d.Metric] += n
		}
	}
	return out
}

// checkApplied checks that the message of n recipients (member 0 sends)
// was applied once: one episode and badge field per recipient, counted once.
func (b *chunkBundle) checkApplied(t *testing.T, s int, conv string, n int) {
	t.Helper()
	ctx := context.Background()
	pipe := b.rdb.Pipeline()
	counts, eps := make([]*redis.StringCmd, n), make([]*redis.StringCmd, n)
	for i := 1; i < n; i++ {
		counts[i] = pipe.HGet(ctx, b.ks.Badge(s, member(i)), conv)
		eps[i] = pipe.HGet(ctx, b.ks.Episode(s, member(i), conv), "id")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		if counts[i].Val() != "1" || eps[i].Val() == "" {
			t.Fatalf("member %s: unread %q, episode %q; want 1 and an episode", member(i), counts[i].Val(), eps[i].Val())
		}
	}
	tot := b.totals(t, s)
	want := map[string]int64{"messages_sent": 1, "recipients": int64(n - 1), "episodes_opened": int64(n - 1), "events_applied": 1, "mentions": 3}
	for m, v := range want {
		if tot[m] != v {
			t.Errorf("%s = %d, want %d (totals %v)", m, tot[m], v, tot)
		}
	}
	if p, err := b.rdb.XPending(ctx, b.ks.Stream(s), b.c.cfg.Group).Result(); err != nil || p.Count != 0 {
		t.Errorf("pending %+v (%v), want none", p, err)
	}
	if k, _ := redistest.Keys(ctx, b.rdb, b.ks.Chunk(s, "")); len(k) != 0 {
		t.Errorf("chunk progress keys left: %v", k)
	}
}

// A message to 10,000 recipients is applied in chunks, no script of which
// holds Redis for long (SLOWLOG), exactly once.
func TestLargeMessageAppliedInShortChunks(t *testing.T) {
	t.Parallel()
	b := newChunkBundle(t)
	ctx := context.Background()
	conv := "town-hall"
	s := b.ks.Shard(conv)
	if _, err := b.pub.Publish(ctx, bigMessage("big-1", conv, event.MaxRecipients)); err != nil {
		t.Fatal(err)
	}
	items := b.read(t, s)
	if len(items) != 1 || items[0].ev == nil {
		t.Fatalf("read %+v", items)
	}
	calls := b.c.calls(s, items)
	if len(calls) < event.MaxRecipients/chunkRecipients {
		t.Errorf("%d calls for %d recipients, want chunks of at most %d", len(calls), event.MaxRecipients, chunkRecipients)
	}
	start := time.Now()
	if _, err := b.c.apply(ctx, s, items); err != nil {
		t.Fatal(err)
	}
	t.Logf("applied 10,000 recipients in %d calls, %s", len(calls), time.Since(start))
	b.checkApplied(t, s, conv, event.MaxRecipients)
	// The script of the old single-call apply took 130 ms for this message.
	logs, err := b.rdb.SlowLogGet(ctx, 128).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		if l.Time.Before(start) || !strings.Contains(strings.Join(l.Args, " "), b.ks.Stream(s)) {
			continue
		}
		if l.Duration > 50*time.Millisecond {
			t.Errorf("one apply script ran %s", l.Duration)
		}
	}
}

// A large message whose apply stops after some of its chunks (a crash, a
// lost lease) is finished by the next attempt, each recipient once; a
// re-published copy is a duplicate.
func TestLargeMessageResumesAfterPartialApply(t *testing.T) {
	t.Parallel()
	b := newChunkBundle(t)
	ctx := context.Background()
	conv := "all-staff"
	s := b.ks.Shard(conv)
	const n = 3*chunkRecipients + 17
	if _, err := b.pub.Publish(ctx, bigMessage("big-2", conv, n)); err != nil {
		t.Fatal(err)
	}
	items := b.read(t, s)
	calls := b.c.calls(s, items)
	if len(calls) != 4 {
		t.Fatalf("%d calls, want 4 chunks", len(calls))
	}
	for _, cl := range calls[:2] {
		if _, err := b.c.run(ctx, s, cl); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := b.rdb.XPending(ctx, b.ks.Stream(s), b.c.cfg.Group).Result(); p.Count != 1 {
		t.Fatalf("pending %+v after 2 of 4 chunks, want the message", p)
	}
	// The next attempt applies the whole batch again.
	res, err := b.c.apply(ctx, s, items)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 0 || res.AlreadyAcked != 0 {
		t.Errorf("resumed apply %+v: the message was applied by its first chunk", res)
	}
	b.checkApplied(t, s, conv, n)
	// Applying it once more finds it acknowledged.
	if res, err := b.c.apply(ctx, s, items); err != nil || res.AlreadyAcked != 1 {
		t.Errorf("third apply %+v (%v), want already acknowledged", res, err)
	}
	// The same event re-published is a duplicate, acknowledged at its
	// first chunk.
	if _, err := b.pub.Publish(ctx, bigMessage("big-2", conv, n)); err != nil {
		t.Fatal(err)
	}
	dup := b.read(t, s)
	if res, err := b.c.apply(ctx, s, dup); err != nil || res.Duplicates != 1 {
		t.Errorf("re-published %+v (%v), want a duplicate", res, err)
	}
	b.checkApplied(t, s, conv, n)
	if tot := b.totals(t, s); tot["duplicates"] != 1 {
		t.Errorf("duplicates = %d, want 1", tot["duplicates"])
	}
}
